//! AutoencoderKL parity with diffusers 0.42 on the tiny random-weight VAE of tiny-sd1.
//! Fixture: tools/reference/make_unet_vae_fixtures.py -> tests/fixtures/unet_vae/vae_tiny-sd1.
//! Tolerance: max |pigment - diffusers| <= 1e-4 in f32 (same f16-rounded weights on both
//! sides); f16 compute is checked against the f32 reference with an explicit 2e-2.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use pigment::rng::TorchGenerator;
use pigment::vae::{AutoencoderKL, AutoencoderKLConfig};
use pigment::Error;

const F32_TOLERANCE: f32 = 1e-4;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn config() -> AutoencoderKLConfig {
    let text = std::fs::read_to_string(fixtures().join("models/tiny-sd1/vae/config.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn load_vae(dtype: DType) -> AutoencoderKL {
    let weights = fixtures().join("models/tiny-sd1/vae/diffusion_pytorch_model.safetensors");
    let vb =
        unsafe { VarBuilder::from_mmaped_safetensors(&[weights], dtype, &Device::Cpu) }.unwrap();
    AutoencoderKL::new(vb, &config()).unwrap()
}

fn reference() -> HashMap<String, Tensor> {
    let path = fixtures().join("unet_vae/vae_tiny-sd1.safetensors");
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let a = a.to_dtype(DType::F32).unwrap();
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

#[test]
fn encode_matches_diffusers_latent_dist() {
    let vae = load_vae(DType::F32);
    let r = reference();
    let dist = vae.encode(&r["image"]).unwrap();
    let dm = max_abs_diff(&dist.mean, &r["mean"]);
    let dl = max_abs_diff(&dist.logvar, &r["logvar"]);
    println!("encode: mean {dm:e}, logvar {dl:e}");
    assert!(
        dm <= F32_TOLERANCE && dl <= F32_TOLERANCE,
        "mean {dm}, logvar {dl}"
    );
    assert_eq!(max_abs_diff(&dist.mode(), &r["mean"]), dm);
}

/// diffusers `latent_dist.sample(generator=torch.Generator().manual_seed(0))`.
#[test]
fn sample_matches_diffusers_with_the_same_seed() {
    let vae = load_vae(DType::F32);
    let r = reference();
    let dist = vae.encode(&r["image"]).unwrap();
    let mut rng = TorchGenerator::new(0);
    let sample = dist.sample(&mut rng).unwrap();
    let d = max_abs_diff(&sample, &r["sample_seed0"]);
    println!("sample: {d:e}");
    assert!(d <= F32_TOLERANCE, "sample: max abs diff {d}");
}

#[test]
fn decode_matches_diffusers() {
    let vae = load_vae(DType::F32);
    let r = reference();
    let out = vae.decode(&r["latents"]).unwrap();
    assert_eq!(out.dims(), &[1, 3, 64, 64]);
    let d = max_abs_diff(&out, &r["decoded"]);
    println!("decode: {d:e}");
    assert!(d <= F32_TOLERANCE, "decode: max abs diff {d}");
}

/// f16 keeps ~3 significant digits: 2e-2 on outputs of magnitude ~1.
#[test]
fn f16_decode_is_close_to_f32() {
    let vae = load_vae(DType::F16);
    let r = reference();
    let out = vae.decode(&r["latents"]).unwrap();
    assert_eq!(out.dtype(), DType::F16);
    let d = max_abs_diff(&out, &r["decoded"]);
    println!("decode f16: {d:e}");
    assert!(d <= 2e-2, "f16 decode: max abs diff {d}");
}

#[test]
fn unsupported_config_and_bad_inputs_are_errors() {
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    let mut cfg = config();
    cfg.down_block_types[1] = "AttnDownEncoderBlock2D".into();
    match AutoencoderKL::new(vb, &cfg) {
        Err(Error::Config(msg)) => assert!(msg.contains("down_block_types[1]"), "{msg}"),
        Err(e) => panic!("expected Error::Config, got {e}"),
        Ok(_) => panic!("unsupported block type accepted"),
    }
    let vae = load_vae(DType::F32);
    let gray = Tensor::zeros((1, 1, 64, 64), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(vae.encode(&gray), Err(Error::InvalidArgument(_))));
    let flat = Tensor::zeros((4, 8, 8), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(vae.decode(&flat), Err(Error::InvalidArgument(_))));
}
