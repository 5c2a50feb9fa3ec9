//! The training losses' gradients against PyTorch: every parameter's gradient of the UNet's
//! denoising loss (min-SNR-5 weighted) and of the VAE's L1 + KL loss, on small diffusers models
//! with every block kind the built-in model trains (resnets, group norms, self- and
//! cross-attention, GEGLU feed-forward, down- and up-samplers, timestep embedding, the VAE's
//! mid-block attention). Forward parity alone would not catch a wrong backward: training still
//! lowers the loss with one, only slower.
//! Fixtures: tools/reference/make_training_grad_fixtures.py -> tests/fixtures/train/grad/.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use pigment::schedule::SchedulerConfig;
use pigment::train::diffusion::DiffusionObjective;
use pigment::train::vae::{Reconstruction, VaeObjective};
use pigment::train::{init_vars_from_file, seeded_var_builder};
use pigment::unet::{UNet2DConditionConfig, UNet2DConditionModel};
use pigment::vae::{AutoencoderKL, AutoencoderKLConfig};

use common::gradients::check_gradients;

const DEV: Device = Device::Cpu;

/// The loss itself: |pigment - torch| <= 1e-4 relative.
const LOSS_TOLERANCE: f32 = 1e-4;

fn fixture_dir() -> std::path::PathBuf {
    common::fixtures().join("train/grad")
}

fn load(name: &str) -> (HashMap<String, Tensor>, String) {
    let dir = fixture_dir();
    let tensors = candle_core::safetensors::load(dir.join(format!("{name}.safetensors")), &DEV)
        .unwrap_or_else(|e| panic!("{name} fixture: {e}"));
    let config = std::fs::read_to_string(dir.join(name).join("config.json")).expect("config");
    (tensors, config)
}

/// The fixture's weights (its diffusers folder) into `vars`, through the training stack's own
/// loader, which refuses a missing or misshapen weight; torch's model must have no parameter
/// more either (one gradient per parameter in the fixture).
fn set_weights(vars: &VarMap, name: &str, tensors: &HashMap<String, Tensor>) {
    let path = fixture_dir()
        .join(name)
        .join("diffusion_pytorch_model.safetensors");
    init_vars_from_file(vars, &path).unwrap();
    let in_fixture = tensors.keys().filter(|k| k.starts_with("grad.")).count();
    assert_eq!(
        in_fixture,
        vars.data().lock().unwrap().len(),
        "the model and the fixture have different parameter sets"
    );
}

fn scalar(t: &Tensor) -> f32 {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0]
}

/// Check the loss against the fixture's, backpropagate it and check every gradient.
fn check_loss_and_gradients(
    name: &str,
    vars: &VarMap,
    loss: &Tensor,
    tensors: &HashMap<String, Tensor>,
) {
    let expected_loss = scalar(&tensors["loss"]);
    let got_loss = scalar(loss);
    assert!(
        (got_loss - expected_loss).abs() <= LOSS_TOLERANCE * expected_loss.abs(),
        "{name} loss {got_loss} vs torch {expected_loss}"
    );
    let grads = loss.backward().unwrap();
    check_gradients(name, vars, &grads, tensors, "grad.");
}

#[test]
fn unet_denoising_loss_gradients_match_torch() {
    let (tensors, config) = load("unet");
    let config: UNet2DConditionConfig = serde_json::from_str(&config).unwrap();
    let vars = VarMap::new();
    let unet =
        UNet2DConditionModel::new(seeded_var_builder(&vars, 0, DType::F32, &DEV), &config).unwrap();
    set_weights(&vars, "unet", &tensors);
    let timesteps: Vec<usize> = tensors["timesteps"]
        .to_vec1::<i64>()
        .unwrap()
        .iter()
        .map(|&t| t as usize)
        .collect();
    let objective = DiffusionObjective::new(&SchedulerConfig::default(), 0.0)
        .unwrap()
        .with_snr_gamma(5.0)
        .unwrap();
    let loss = objective
        .loss_at(
            &unet,
            &tensors["latents"],
            &tensors["context"],
            &tensors["noise"],
            &timesteps,
        )
        .unwrap();
    check_loss_and_gradients("unet", &vars, &loss, &tensors);
}

#[test]
fn vae_reconstruction_and_kl_gradients_match_torch() {
    let (tensors, config) = load("vae");
    let config: AutoencoderKLConfig = serde_json::from_str(&config).unwrap();
    let vars = VarMap::new();
    let vae = AutoencoderKL::new(seeded_var_builder(&vars, 0, DType::F32, &DEV), &config).unwrap();
    set_weights(&vars, "vae", &tensors);
    let objective = VaeObjective::new(Reconstruction::L1, 1e-6).unwrap();
    let loss = objective
        .loss_with_noise(&vae, &tensors["images"], &tensors["noise"])
        .unwrap();
    check_loss_and_gradients("vae", &vars, &loss.total, &tensors);
}
