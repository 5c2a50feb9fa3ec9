//! TorchGenerator against values PyTorch itself produced
//! (tests/fixtures/rng/torch_randn.json, written by tools/reference/make_rng_fixtures.py).
//!
//! Tolerance: none. Every value must have the same bit pattern as torch's, because a seed is
//! only reproducible if the noise is identical; each case also replays a sequence of calls on
//! one generator, so the state carried between calls is checked too.

use pigment::rng::{NormalKernel, TorchGenerator};
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/rng/torch_randn.json"
    );
    let text = std::fs::read_to_string(path)
        .expect("fixture missing: run tools/reference/make_rng_fixtures.py");
    serde_json::from_str(&text).expect("fixture is not valid JSON")
}

/// Replays every case of one kernel section; returns how many values were compared.
fn check_section(section: &Value, kernel: NormalKernel) -> usize {
    let mut compared = 0;
    for case in section["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let seed = case["seed"].as_u64().unwrap();
        let mut gen = TorchGenerator::new(seed).with_normal_kernel(kernel);
        for (i, call) in case["calls"].as_array().unwrap().iter().enumerate() {
            let op = call["op"].as_str().unwrap();
            let shape: Vec<usize> = call["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let want: Vec<u64> = call["bits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_u64().unwrap())
                .collect();
            let got: Vec<u64> = match op {
                "randn" => gen
                    .randn(&shape)
                    .iter()
                    .map(|v| v.to_bits() as u64)
                    .collect(),
                "rand" => gen
                    .rand(&shape)
                    .iter()
                    .map(|v| v.to_bits() as u64)
                    .collect(),
                "randn_f64" => gen.randn_f64(&shape).iter().map(|v| v.to_bits()).collect(),
                "rand_f64" => gen.rand_f64(&shape).iter().map(|v| v.to_bits()).collect(),
                other => panic!("unknown op {other} in fixture"),
            };
            assert_eq!(
                got.len(),
                want.len(),
                "{name}, call {i} ({op} {shape:?}): length"
            );
            for (j, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    g, w,
                    "{name}, call {i} ({op} {shape:?}), element {j}: bits {g:#x}, torch {w:#x}"
                );
            }
            compared += got.len();
        }
    }
    compared
}

#[test]
fn matches_torch_avx_kernels_bit_for_bit() {
    let doc = fixture();
    let section = &doc["avx"];
    let capability = section["cpu_capability"].as_str().unwrap();
    assert!(
        capability == "AVX2" || capability == "AVX512",
        "fixture's avx section came from {capability}"
    );
    let compared = check_section(section, NormalKernel::Avx);
    assert!(compared > 5000, "only {compared} values compared");
}

#[test]
fn matches_torch_default_kernel_bit_for_bit() {
    let doc = fixture();
    let section = &doc["scalar"];
    assert_eq!(section["cpu_capability"].as_str().unwrap(), "DEFAULT");
    let compared = check_section(section, NormalKernel::Scalar);
    assert!(compared > 1000, "only {compared} values compared");
}

#[test]
fn the_kernels_differ_only_in_the_last_bits() {
    let avx = TorchGenerator::new(0).randn(&[4096]);
    let scalar = TorchGenerator::new(0)
        .with_normal_kernel(NormalKernel::Scalar)
        .randn(&[4096]);
    let differing = avx.iter().zip(&scalar).filter(|(a, b)| a != b).count();
    let max_diff = avx
        .iter()
        .zip(&scalar)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(differing > 0, "the two kernels should not agree everywhere");
    assert!(max_diff < 1e-5, "kernels differ by {max_diff}");
}

#[test]
fn randn_tensor_has_the_shape_and_the_values_of_randn() {
    let device = candle_core::Device::Cpu;
    let t = TorchGenerator::new(5)
        .randn_tensor(&[1, 4, 8, 8], &device)
        .unwrap();
    assert_eq!(t.dims(), &[1, 4, 8, 8]);
    let values = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(values, TorchGenerator::new(5).randn(&[1, 4, 8, 8]));
}
