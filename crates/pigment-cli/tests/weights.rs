//! `pigment generate --weights f32|f16|q8`: q8 runs and lands near the f32 image on the same
//! seed; an unknown format is refused before the model loads.

mod common;
use common::*;

#[test]
fn q8_weights_generate_close_to_f32_and_bad_formats_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--steps", "4", "--sampler", "euler"];
    let full = dir.path().join("f32.png");
    let run = generate_on_tiny_sd1(&full, &flags);
    assert!(run.status.success(), "{}", stderr(&run));
    let q8 = dir.path().join("q8.png");
    let run = generate_on_tiny_sd1(&q8, &[&flags[..], &["--weights", "q8"]].concat());
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("weights held as q8"),
        "{}",
        stderr(&run)
    );
    let a = image::open(&full).unwrap().to_rgb8();
    let b = image::open(&q8).unwrap().to_rgb8();
    // Same bar as the library's test is stated in PSNR; here: no pixel off by more than 16
    // levels (measured 4 when written) and not bit-identical (the weights were packed).
    let worst = max_diff(a.as_raw(), b.as_raw());
    eprintln!("q8 vs f32: max pixel difference {worst}");
    assert!(worst <= 16, "q8 differs from f32 by up to {worst} levels");
    assert!(
        worst > 0,
        "q8 gave f32's exact image: were the weights packed?"
    );

    let bad = dir.path().join("bad.png");
    let run = generate_on_tiny_sd1(&bad, &[&flags[..], &["--weights", "q4"]].concat());
    assert_clean_error(&run, &bad, "--weights q4: unknown weight format");
}
