//! Every sampler against diffusers' own scheduler loop (fixtures from
//! tools/reference/make_sampler_fixtures.py): the same config, seed and stand-in model must give
//! the same timesteps, init_noise_sigma and latents.
//!
//! Tolerances: timesteps and init_noise_sigma exactly (they are float32 values computed with
//! the same roundings as torch/numpy); latents within 1e-5 max abs difference (they are of
//! order 1; what remains is torch's vectorised exp/log differing from the C library's in the
//! last bit, in DPM-Solver's coefficients); add_noise within 1e-6.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use pigment::rng::TorchGenerator;
use pigment::samplers::{build_sampler, SamplerKind, SamplerOptions};
use pigment::schedule::SchedulerConfig;
use serde_json::Value;

const LATENT_TOLERANCE: f32 = 1e-5;
const ADD_NOISE_TOLERANCE: f32 = 1e-6;

struct Fixtures {
    meta: Value,
    tensors: HashMap<String, Tensor>,
}

fn fixtures() -> Fixtures {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/samplers");
    let meta = std::fs::read_to_string(dir.join("cases.json")).expect("cases.json");
    let tensors = candle_core::safetensors::load(dir.join("samplers.safetensors"), &Device::Cpu)
        .expect("samplers.safetensors");
    Fixtures {
        meta: serde_json::from_str(&meta).expect("cases.json is JSON"),
        tensors,
    }
}

impl Fixtures {
    fn tensor(&self, key: &str) -> &Tensor {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("fixture tensor {key}"))
    }

    fn f64s(&self, key: &str) -> Vec<f64> {
        self.tensor(key).to_vec1::<f64>().unwrap()
    }

    /// The case's scheduler config: the fixture's base config with the case's overrides.
    fn config(&self, case: &Value) -> SchedulerConfig {
        let mut config = self.meta["base_config"].as_object().unwrap().clone();
        for (k, v) in case["config"].as_object().unwrap() {
            config.insert(k.clone(), v.clone());
        }
        serde_json::from_value(Value::Object(config)).unwrap()
    }
}

fn options(case: &Value) -> SamplerOptions {
    SamplerOptions {
        steps: case["steps"].as_u64().unwrap() as usize,
        karras: case["karras"].as_bool().unwrap(),
        eta: case["eta"].as_f64().unwrap_or(0.0),
        ..SamplerOptions::default()
    }
}

fn shape(case: &Value) -> Vec<usize> {
    case["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect()
}

/// The fixture script's stand-in for a UNet: u / (1 + 0.01 u^2), u = x + 0.0001 t, in the
/// same float32 operations as torch evaluates it.
fn fake_model(x: &Tensor, t: f64) -> Tensor {
    let shift = 0.0001f32 * t as f32;
    let u = x.affine(1.0, shift as f64).unwrap();
    let den = (u.affine(0.01, 0.0).unwrap() * &u)
        .unwrap()
        .affine(1.0, 1.0)
        .unwrap();
    (u / den).unwrap()
}

/// Largest |a - b|, NaN if either holds a NaN where the other does not match it.
fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let values = |t: &Tensor| {
        t.to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    values(a)
        .iter()
        .zip(values(b))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, |m, d| {
            if d.is_nan() || m.is_nan() {
                f32::NAN
            } else {
                m.max(d)
            }
        })
}

fn describe(case: &Value) -> String {
    format!(
        "{} {} steps={} karras={} eta={} config={}",
        case["id"].as_str().unwrap(),
        case["sampler"].as_str().unwrap(),
        case["steps"],
        case["karras"],
        case["eta"],
        case["config"]
    )
}

#[test]
fn generator_matches_torch_for_the_fixture_noise() {
    // If this fails, the sampler comparisons below fail for the generator's sake, not theirs.
    let fx = fixtures();
    let case = &fx.meta["loop_cases"][0];
    let mut rng = TorchGenerator::new(case["seed"].as_u64().unwrap());
    let noise = rng.randn_tensor(&shape(case), &Device::Cpu).unwrap();
    assert_eq!(max_abs_diff(&noise, fx.tensor("check.noise")), 0.0);
}

#[test]
fn sampler_loops_match_diffusers() {
    let fx = fixtures();
    let cases = fx.meta["loop_cases"].as_array().unwrap();
    let mut failures = Vec::new();
    let mut worst = (0.0f32, String::new());
    for case in cases {
        let id = case["id"].as_str().unwrap();
        let kind: SamplerKind = case["sampler"].as_str().unwrap().parse().unwrap();
        let mut sampler = build_sampler(kind, &fx.config(case), &options(case))
            .unwrap_or_else(|e| panic!("{}: {e}", describe(case)));

        let expected_t = fx.f64s(&format!("{id}.timesteps"));
        if sampler.timesteps() != expected_t.as_slice() {
            failures.push(format!(
                "{}: timesteps {:?} != diffusers {:?}",
                describe(case),
                sampler.timesteps(),
                expected_t
            ));
            continue;
        }
        let expected_sigma = fx.f64s(&format!("{id}.init_noise_sigma"))[0];
        if sampler.init_noise_sigma() != expected_sigma {
            failures.push(format!(
                "{}: init_noise_sigma {} != diffusers {expected_sigma}",
                describe(case),
                sampler.init_noise_sigma()
            ));
        }

        let mut rng = TorchGenerator::new(case["seed"].as_u64().unwrap());
        let noise = rng.randn_tensor(&shape(case), &Device::Cpu).unwrap();
        let mut latents = noise.affine(sampler.init_noise_sigma(), 0.0).unwrap();
        let timesteps = sampler.timesteps().to_vec();
        for (i, &t) in timesteps.iter().enumerate() {
            let input = sampler.scale_model_input(&latents, i).unwrap();
            let output = fake_model(&input, t);
            latents = sampler.step(&output, i, &latents, &mut rng).unwrap();
            if i == 0 {
                let d = max_abs_diff(&latents, fx.tensor(&format!("{id}.step1")));
                if d.is_nan() || d > LATENT_TOLERANCE {
                    failures.push(format!(
                        "{}: after step 1 max |diff| = {d:e}",
                        describe(case)
                    ));
                }
            }
        }
        let d = max_abs_diff(&latents, fx.tensor(&format!("{id}.final")));
        println!("{:<70} final max |diff| = {d:e}", describe(case));
        if d > worst.0 || d.is_nan() {
            worst = (d, describe(case));
        }
        if d.is_nan() || d > LATENT_TOLERANCE {
            failures.push(format!("{}: final max |diff| = {d:e}", describe(case)));
        }
    }
    println!(
        "{} cases; largest final difference {:e} ({})",
        cases.len(),
        worst.0,
        worst.1
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn add_noise_matches_diffusers() {
    let fx = fixtures();
    let original = fx.tensor("add_noise.original");
    let noise = fx.tensor("add_noise.noise");
    let mut failures = Vec::new();
    for case in fx.meta["add_noise_cases"].as_array().unwrap() {
        let id = case["id"].as_str().unwrap();
        let kind: SamplerKind = case["sampler"].as_str().unwrap().parse().unwrap();
        let sampler = build_sampler(kind, &fx.config(case), &options(case)).unwrap();
        let k = case["step_index"].as_u64().unwrap() as usize;
        let noisy = sampler.add_noise(original, noise, k).unwrap();
        let d = max_abs_diff(&noisy, fx.tensor(&format!("{id}.noisy")));
        if d.is_nan() || d > ADD_NOISE_TOLERANCE {
            failures.push(format!("{}: max |diff| = {d:e}", describe(case)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
