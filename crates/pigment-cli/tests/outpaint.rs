//! `pigment generate --init-image FILE --outpaint ...` on tiny-sd1 (an ordinary 4-channel
//! model: latent blending every step): the canvas grows by the padding, the old image is kept
//! (exactly without --mask-blur; beyond the feathered seam with it), the new area is painted,
//! and bad padding specs get a clear error (exit code 1, no panic, no output file).

mod common;
use common::*;

use std::path::Path;
use std::process::Output;

fn init_png() -> String {
    fixtures().join("inpaint/init.png").display().to_string()
}

fn outpaint(out: &Path, extra: &[&str]) -> Output {
    let init = init_png();
    generate_on_tiny_sd1(
        out,
        &[
            &["--steps", "4", "--sampler", "euler", "--init-image", &init][..],
            extra,
        ]
        .concat(),
    )
}

/// Largest difference between `got`'s pixels at (x + dx, y + dy) and `init`'s at (x, y), over
/// init's pixels whose distance from the padded sides (left, right, bottom) is at least `margin`.
fn kept_diff(got: &image::RgbImage, init: &image::RgbImage, dx: u32, margin: u32) -> u8 {
    let (w, h) = init.dimensions();
    let mut worst = 0;
    for y in 0..h.saturating_sub(margin) {
        for x in margin..w.saturating_sub(margin) {
            let a = got.get_pixel(x + dx, y).0;
            let b = init.get_pixel(x, y).0;
            for c in 0..3 {
                worst = worst.max(a[c].abs_diff(b[c]));
            }
        }
    }
    worst
}

#[test]
fn outpaint_grows_the_canvas_and_keeps_the_old_image() {
    let dir = tempfile::tempdir().unwrap();
    let init = image::open(init_png()).unwrap().to_rgb8();
    assert_eq!(init.dimensions(), (64, 64));

    let out = dir.path().join("wide.png");
    let run = outpaint(&out, &["--outpaint", "left=16,right=8,top=0,bottom=8"]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("outpainting 64x64 to 88x72"),
        "{}",
        stderr(&run)
    );
    let got = image::open(&out).unwrap().to_rgb8();
    assert_eq!(got.dimensions(), (88, 72));
    // No blur: the old image is pasted back untouched (bar: 2 levels, "a few"; it is exact).
    let worst = kept_diff(&got, &init, 16, 0);
    assert!(worst <= 2, "kept area changed by up to {worst} levels");
    // The new area was painted, not left as the edge-replicated fill.
    let fill_like = (0..72)
        .filter(|&y| got.get_pixel(0, y) == init.get_pixel(0, y.min(63)))
        .count();
    assert!(fill_like < 72, "the left border is still the edge fill");
    let params = pigment::image::read_png_parameters(&out).unwrap().unwrap();
    for field in [
        "Outpaint: \"left=16,right=8,top=0,bottom=8\"",
        "Denoising strength: 1",
        "Size: 88x72",
    ] {
        assert!(params.contains(field), "`{field}` missing from {params}");
    }

    // --mask-blur 2 feathers the seam into the old image: pixels at the seam change, pixels
    // further in than the grown mask (4 px) plus the blur's radius (5 px) do not.
    let feathered = dir.path().join("feathered.png");
    let run = outpaint(
        &feathered,
        &["--outpaint", "left=16,right=8,bottom=8", "--mask-blur", "2"],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let got = image::open(&feathered).unwrap().to_rgb8();
    assert_eq!(got.dimensions(), (88, 72));
    let worst = kept_diff(&got, &init, 16, 10);
    assert!(
        worst <= 2,
        "inner kept area changed by up to {worst} levels"
    );
    let seam = kept_diff(&got, &init, 16, 0);
    assert!(seam > 2, "--mask-blur 2 did not feather the seam");
}

#[test]
fn bad_outpaint_specs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.png");
    for (spec, needle) in [
        ("left=-8", "not a whole number"),
        ("middle=8", "unknown side `middle`"),
        (
            "right=12",
            "not a multiple of 8: add 4 more pixels to left or right",
        ),
        ("left=0", "adds nothing"),
    ] {
        let run = outpaint(&out, &["--outpaint", spec]);
        assert_clean_error(&run, &out, needle);
    }
    // Without an init image there is nothing to extend.
    let run = generate_on_tiny_sd1(&out, &["--outpaint", "left=8"]);
    assert_clean_error(&run, &out, "pass --init-image");
    // It builds its own mask and size.
    let mask = fixtures().join("inpaint/mask.png").display().to_string();
    let run = outpaint(&out, &["--outpaint", "left=8", "--mask", &mask]);
    assert_clean_error(&run, &out, "drop --mask");
    let run = outpaint(&out, &["--outpaint", "left=8", "--width", "72"]);
    assert_clean_error(&run, &out, "drop --width/--height");
}
