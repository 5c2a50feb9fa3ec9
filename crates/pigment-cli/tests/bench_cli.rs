//! `pigment bench` on the tiny architecture and on the tiny-sd1 fixture folder: the JSON report
//! has every field tools/bench/side_by_side.py reads, and every figure is positive. Nothing
//! here is timed against a limit.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn pigment(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pigment"))
        .args(args)
        .output()
        .expect("run pigment")
}

fn report(args: &[&str]) -> Value {
    let out = pigment(args);
    assert!(
        out.status.success(),
        "pigment {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json prints one JSON document on stdout")
}

fn positive(v: &Value, field: &str) -> f64 {
    let x = v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} missing in {v}"));
    assert!(x > 0.0, "{field} = {x} in {v}");
    x
}

fn check_rows(r: &Value, expected: &[(&str, u64, u64)]) {
    for field in ["engine", "model", "dtype", "device"] {
        assert!(r[field].is_string(), "{field} missing in {r}");
    }
    assert!(r["threads"].as_u64().unwrap() >= 1);
    let rows = r["rows"].as_array().expect("rows");
    let got: Vec<(String, u64, u64)> = rows
        .iter()
        .map(|row| {
            (
                row["component"].as_str().unwrap().to_string(),
                row["size"].as_u64().unwrap(),
                row["batch"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, u64, u64)> = expected
        .iter()
        .map(|&(c, s, b)| (c.to_string(), s, b))
        .collect();
    assert_eq!(got, want);
    for row in rows {
        let median = positive(row, "median_s");
        let flops = positive(row, "flops");
        let rate = positive(row, "gflops_per_s");
        assert!((flops / median / 1e9 - rate).abs() <= 1e-6 * rate);
        let runs = row["runs_s"].as_array().unwrap();
        assert!(!runs.is_empty() && runs.iter().all(|t| t.as_f64().unwrap() > 0.0));
        if cfg!(target_os = "linux") {
            positive(row, "peak_rss_bytes");
        }
    }
}

#[test]
fn tiny_arch_json_has_every_component_with_positive_figures() {
    let r = report(&[
        "bench",
        "--arch",
        "tiny",
        "--sizes",
        "64,32",
        "--steps",
        "2",
        "--repeats",
        "2",
        "--json",
    ]);
    assert_eq!(r["engine"], "pigment");
    assert_eq!(r["dtype"], "f32");
    assert_eq!(r["repeats"], 2);
    assert_eq!(r["vae_tiling"], "off");
    check_rows(
        &r,
        &[
            ("text_encoder", 0, 1),
            ("unet", 64, 2),
            ("vae_decode", 64, 1),
            ("unet", 32, 2),
            ("vae_decode", 32, 1),
            ("generation", 64, 1),
        ],
    );
    // Two UNet runs per row.
    assert_eq!(r["rows"][1]["runs_s"].as_array().unwrap().len(), 2);
    // The UNet at 64 px does about 4x the work of 32 px: convolutions and projections scale
    // with the token count, self-attention faster; the time MLP and the cross-attention K/V
    // of the 77 context tokens do not grow, and in this tiny model they weigh enough to bring
    // the ratio down to about 3.1.
    let (f64px, f32px) = (
        r["rows"][1]["flops"].as_f64().unwrap(),
        r["rows"][3]["flops"].as_f64().unwrap(),
    );
    assert!(
        f64px > 3.0 * f32px && f64px < 5.0 * f32px,
        "{f64px} vs {f32px}"
    );
}

#[test]
fn real_checkpoint_in_f16_without_the_full_generation() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models/tiny-sd1");
    let r = report(&[
        "bench",
        "--model",
        model.to_str().unwrap(),
        "--sizes",
        "32",
        "--skip-full",
        "--repeats",
        "1",
        "--dtype",
        "f16",
        "--vae-tiling",
        "on",
        "--json",
    ]);
    assert_eq!(r["dtype"], "f16");
    assert_eq!(r["vae_tiling"], "on");
    assert_eq!(r["model"], "tiny-sd1");
    check_rows(
        &r,
        &[
            ("text_encoder", 0, 1),
            ("unet", 32, 2),
            ("vae_decode", 32, 1),
        ],
    );
}

#[test]
fn chosen_components_with_f16_weights_and_a_low_memory_generation() {
    let r = report(&[
        "bench",
        "--arch",
        "tiny",
        "--sizes",
        "64",
        "--components",
        "vae_decode",
        "--weights",
        "f16",
        "--low-memory",
        "--steps",
        "2",
        "--repeats",
        "1",
        "--json",
    ]);
    assert_eq!(r["weights"], "f16");
    assert_eq!(r["warmup"], 1);
    check_rows(
        &r,
        &[("vae_decode", 64, 1), ("generation_low_memory", 64, 1)],
    );
    // Without --weights the report names no packing.
    let full = report(&[
        "bench",
        "--arch",
        "tiny",
        "--sizes",
        "64",
        "--components",
        "unet",
        "--skip-full",
        "--repeats",
        "1",
        "--json",
    ]);
    assert!(full.get("weights").is_none());
    check_rows(&full, &[("unet", 64, 2)]);
}

#[test]
fn bad_sizes_and_arch_are_refused_with_the_fix() {
    let out = pigment(&["bench", "--arch", "tiny", "--sizes", "60"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--sizes 60") && err.contains("multiple of 32"),
        "{err}"
    );
    let out = pigment(&["bench", "--arch", "sd3"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("use sd15, sd21 or tiny"));
    let out = pigment(&["bench", "--arch", "tiny", "--components", "vae"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown component `vae`") && err.contains("vae_decode"),
        "{err}"
    );
}
