//! Parity of pigment::control::canny with OpenCV's cv2.Canny, and checks of the scribble and
//! control-image helpers. Fixtures: tools/reference/make_canny_fixtures.py (OpenCV 5.0.0):
//! each case is an input PNG (RGB, fed to cv2.Canny as is, as ControlNet does, or gray),
//! thresholds, OpenCV's edge map, and ControlNet's fake-scribble post-process of that map.

use std::path::{Path, PathBuf};

use image::{DynamicImage, GrayImage};
use pigment::control::{
    canny, control_image_from_edges, scribble_from_edges, scribble_from_edges_with,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/canny")
}

fn load(name: &str) -> DynamicImage {
    let path = fixtures().join(name);
    image::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn cases() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(fixtures().join("cases.json")).expect("cases.json");
    let meta: serde_json::Value = serde_json::from_str(&text).expect("cases.json parses");
    meta["cases"].as_array().expect("cases array").clone()
}

/// (exact pixel agreement in %, IoU of edge pixels in %, differing pixels).
fn agreement(ours: &GrayImage, theirs: &GrayImage) -> (f64, f64, usize) {
    assert_eq!(ours.dimensions(), theirs.dimensions());
    let (mut same, mut and, mut or) = (0usize, 0usize, 0usize);
    for (a, b) in ours.as_raw().iter().zip(theirs.as_raw()) {
        let (a, b) = (*a > 0, *b > 0);
        same += usize::from(a == b);
        and += usize::from(a && b);
        or += usize::from(a || b);
    }
    let total = ours.as_raw().len();
    let iou = if or == 0 {
        100.0
    } else {
        100.0 * and as f64 / or as f64
    };
    (100.0 * same as f64 / total as f64, iou, total - same)
}

fn run_canny(input: &DynamicImage, low: f32, high: f32) -> GrayImage {
    match input {
        DynamicImage::ImageLuma8(gray) => canny(gray, low, high),
        other => canny(&other.to_rgb8(), low, high),
    }
    .expect("canny runs")
}

#[test]
fn canny_matches_opencv_on_every_fixture() {
    // Tolerance: none. OpenCV's Canny is integer arithmetic end to end (Sobel in int16,
    // L1 magnitude, Q15 direction tests), so a faithful port agrees on every pixel.
    let mut failures = Vec::new();
    for case in cases() {
        let name = case["name"].as_str().unwrap();
        let input = load(case["input"].as_str().unwrap());
        let low = case["low"].as_f64().unwrap() as f32;
        let high = case["high"].as_f64().unwrap() as f32;
        let expected = load(case["canny"].as_str().unwrap()).to_luma8();
        let ours = run_canny(&input, low, high);
        let (exact, iou, diff) = agreement(&ours, &expected);
        let edges = expected.as_raw().iter().filter(|&&v| v > 0).count();
        println!(
            "{name:>20} low {low:>5} high {high:>5}: exact {exact:.3}%  IoU {iou:.3}%  \
             ({diff} px differ, {edges} OpenCV edge px)"
        );
        if diff != 0 {
            failures.push(name.to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "cases differing from OpenCV: {failures:?}"
    );
}

#[test]
fn scribble_matches_float_reference_of_controlnet_fake_scribble() {
    // Tolerance: at most 0.1% of pixels may differ from the float32 reference (OpenCV's
    // GaussianBlur on float input, 19 taps, sigma 3, then round and > 4): only a blurred level
    // within float rounding of 4.5 could go either way.
    for case in cases() {
        let name = case["name"].as_str().unwrap();
        let edges = load(case["canny"].as_str().unwrap()).to_luma8();
        let expected = load(case["scribble"].as_str().unwrap()).to_luma8();
        let literal = load(case["scribble_u8"].as_str().unwrap()).to_luma8();
        let ours = scribble_from_edges(&edges);
        let (exact, iou, diff) = agreement(&ours, &expected);
        let (exact_u8, iou_u8, _) = agreement(&ours, &literal);
        println!(
            "{name:>20} scribble vs float ref: exact {exact:.3}% IoU {iou:.3}% ({diff} px); \
             vs ControlNet's uint8 call: exact {exact_u8:.3}% IoU {iou_u8:.3}%"
        );
        assert!(
            exact >= 99.9,
            "{name}: scribble exact agreement {exact:.3}% < 99.9%"
        );
        // Every edge pixel lies inside a stroke.
        for (e, s) in edges.as_raw().iter().zip(ours.as_raw()) {
            assert!(
                *e == 0 || *s == 255,
                "{name}: an edge pixel fell outside the strokes"
            );
        }
    }
}

#[test]
fn control_image_repeats_edges_in_three_channels() {
    let edges = load("shapes_canny.png").to_luma8();
    let rgb = control_image_from_edges(&edges);
    assert_eq!(rgb.dimensions(), edges.dimensions());
    for (p, e) in rgb.pixels().zip(edges.pixels()) {
        assert_eq!(p.0, [e.0[0]; 3]);
    }
}

#[test]
fn degenerate_inputs_give_errors_not_panics() {
    let empty = GrayImage::new(0, 5);
    let err = canny(&empty, 100.0, 200.0).unwrap_err().to_string();
    assert!(err.contains("empty"), "{err}");

    let one = image::RgbImage::from_pixel(1, 1, image::Rgb([9, 9, 9]));
    let edges = canny(&one, 100.0, 200.0).expect("1x1 is valid");
    assert_eq!(edges.as_raw(), &vec![0u8]);

    // 1x2 step: OpenCV gives [255, 0] (ties go to the left pixel).
    let step = GrayImage::from_raw(2, 1, vec![0, 255]).unwrap();
    assert_eq!(canny(&step, 10.0, 20.0).unwrap().as_raw(), &vec![255u8, 0]);

    for (low, high) in [(f32::NAN, 200.0), (100.0, f32::NAN), (0.0, f32::INFINITY)] {
        let err = canny(&one, low, high).unwrap_err().to_string();
        assert!(err.contains("threshold"), "{err}");
    }
    assert!(scribble_from_edges_with(&edges, f32::NAN, 4).is_err());
    assert!(scribble_from_edges_with(&empty, 3.0, 4).is_err());
}

#[test]
fn swapped_thresholds_equal_ordered_ones() {
    let input = load("shapes.png").to_rgb8();
    let a = canny(&input, 200.0, 60.0).unwrap();
    let b = canny(&input, 60.0, 200.0).unwrap();
    assert_eq!(a, b);
}
