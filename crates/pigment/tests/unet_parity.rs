//! UNet2DConditionModel parity with diffusers 0.42 on tiny random-weight UNets.
//! Fixtures: tools/reference/make_unet_vae_fixtures.py -> tests/fixtures/unet_vae/.
//! Tolerance: max |pigment - diffusers| <= 1e-4 in f32 (both sides compute in f32 from the
//! same f16-rounded weights; the remaining gap is summation order). f16/bf16 compute is checked
//! against the f32 reference with explicitly looser tolerances.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use pigment::unet::{
    AttentionHook, AttentionSite, UNet2DConditionConfig, UNet2DConditionModel, UNetExtras,
};
use pigment::Error;

const F32_TOLERANCE: f32 = 1e-4;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// (folder with config.json, weights file) of a tiny UNet.
fn unet_files(name: &str) -> (PathBuf, PathBuf) {
    match name {
        "tiny-sd1" => {
            let d = fixtures().join("models/tiny-sd1/unet");
            (d.clone(), d.join("diffusion_pytorch_model.safetensors"))
        }
        "tiny-sd2" => {
            let d = fixtures().join("models/tiny-sd2/unet");
            (
                d.clone(),
                d.join("diffusion_pytorch_model.fp16.safetensors"),
            )
        }
        "tiny-x" => {
            let d = fixtures().join("unet_vae/tiny-x");
            (d.clone(), d.join("diffusion_pytorch_model.safetensors"))
        }
        other => panic!("no fixture UNet {other}"),
    }
}

fn config(name: &str) -> UNet2DConditionConfig {
    let (dir, _) = unet_files(name);
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn load_unet(name: &str, dtype: DType) -> UNet2DConditionModel {
    let (_, weights) = unet_files(name);
    let vb =
        unsafe { VarBuilder::from_mmaped_safetensors(&[weights], dtype, &Device::Cpu) }.unwrap();
    UNet2DConditionModel::new(vb, &config(name)).unwrap()
}

fn reference(name: &str) -> HashMap<String, Tensor> {
    let path = fixtures().join(format!("unet_vae/unet_{name}.safetensors"));
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

fn down_residuals(r: &HashMap<String, Tensor>) -> Vec<Tensor> {
    (0..)
        .map_while(|i| r.get(&format!("down_residual_{i}")).cloned())
        .collect()
}

/// Plain forward at both fixture timesteps, then with ControlNet residuals.
fn check_parity(name: &str) {
    let unet = load_unet(name, DType::F32);
    let r = reference(name);
    let cond = r.get("timestep_cond");
    let extras = UNetExtras {
        timestep_cond: cond,
        ..Default::default()
    };
    for (key, t) in [("t981", 981.0), ("t500_25", 500.25)] {
        let out = unet
            .forward_with(&r["sample"], t, &r["encoder_hidden_states"], &extras)
            .unwrap();
        let d = max_abs_diff(&out, &r[&format!("out_{key}")]);
        println!("{name} {key}: max abs diff {d:e}");
        assert!(d <= F32_TOLERANCE, "{name} {key}: max abs diff {d}");
    }
    let down = down_residuals(&r);
    let extras = UNetExtras {
        down_block_residuals: Some(&down),
        mid_block_residual: Some(&r["mid_residual"]),
        timestep_cond: cond,
        ..Default::default()
    };
    let out = unet
        .forward_with(&r["sample"], 981.0, &r["encoder_hidden_states"], &extras)
        .unwrap();
    let d = max_abs_diff(&out, &r["out_control_t981"]);
    println!("{name} controlnet: max abs diff {d:e}");
    assert!(
        d <= F32_TOLERANCE,
        "{name} controlnet residuals: max abs diff {d}"
    );
}

#[test]
fn tiny_sd1_matches_diffusers() {
    check_parity("tiny-sd1");
}

/// Linear projections, per-block head counts, upcast_attention.
#[test]
fn tiny_sd2_matches_diffusers() {
    check_parity("tiny-sd2");
}

/// 9 input channels, per-block layers, 2 transformer layers, only_cross_attention, LCM's
/// timestep_cond, time_embedding_dim, scale_shift resnets, 7x9 latents (upsample_size path).
#[test]
fn tiny_x_layout_matches_diffusers() {
    check_parity("tiny-x");
}

/// The fixture's processor (make_unet_vae_fixtures.py HookedProcessor) done with the hook:
/// cross-attention key context * 0.5, value context + 0.25, probabilities of batch b / head h
/// multiplied by 1 + h + 0.5 b.
struct FixtureHook;

impl AttentionHook for FixtureHook {
    fn key_value_context(
        &self,
        site: &AttentionSite<'_>,
        context: &Tensor,
    ) -> pigment::Result<Option<(Tensor, Tensor)>> {
        if !site.is_cross_attention {
            return Ok(None);
        }
        Ok(Some(((context * 0.5)?, (context + 0.25)?)))
    }

    fn attention_probs(
        &self,
        site: &AttentionSite<'_>,
        probs: &Tensor,
    ) -> pigment::Result<Option<Tensor>> {
        if !site.is_cross_attention {
            return Ok(None);
        }
        let (b, h, _, _) = probs.dims4()?;
        let factors: Vec<f32> = (0..b)
            .flat_map(|bi| (0..h).map(move |hi| 1.0 + hi as f32 + 0.5 * bi as f32))
            .collect();
        let f = Tensor::from_vec(factors, (b, h, 1, 1), probs.device())?.to_dtype(probs.dtype())?;
        Ok(Some(probs.broadcast_mul(&f)?))
    }
}

#[test]
fn attention_hook_matches_a_diffusers_attention_processor() {
    let unet = load_unet("tiny-sd1", DType::F32);
    let r = reference("tiny-sd1");
    let extras = UNetExtras {
        attention_hook: Some(&FixtureHook),
        ..Default::default()
    };
    let out = unet
        .forward_with(&r["sample"], 981.0, &r["encoder_hidden_states"], &extras)
        .unwrap();
    let d = max_abs_diff(&out, &r["out_hooked_t981"]);
    println!("tiny-sd1 hooked: max abs diff {d:e}");
    assert!(d <= F32_TOLERANCE, "hooked forward: max abs diff {d}");
}

/// (path, is_cross_attention, heads, spatial) of one hook call.
type Site = (String, bool, usize, (usize, usize));

/// Records every site the hook is called at.
#[derive(Default)]
struct Recorder {
    sites: RefCell<Vec<Site>>,
}

impl AttentionHook for Recorder {
    fn attention_probs(
        &self,
        site: &AttentionSite<'_>,
        probs: &Tensor,
    ) -> pigment::Result<Option<Tensor>> {
        let (_, heads, queries, _) = probs.dims4()?;
        assert_eq!(heads, site.heads);
        assert_eq!(queries, site.spatial.0 * site.spatial.1);
        self.sites.borrow_mut().push((
            site.path.to_string(),
            site.is_cross_attention,
            site.heads,
            site.spatial,
        ));
        Ok(None)
    }
}

/// Hook paths are the diffusers module paths (weight-key prefixes), every attention is seen once
/// per forward, and attn1 is cross-attention exactly where only_cross_attention says so.
#[test]
fn attention_hook_sees_every_attention_by_its_diffusers_path() {
    for name in ["tiny-sd1", "tiny-x"] {
        let unet = load_unet(name, DType::F32);
        let r = reference(name);
        let recorder = Recorder::default();
        let extras = UNetExtras {
            attention_hook: Some(&recorder),
            timestep_cond: r.get("timestep_cond"),
            ..Default::default()
        };
        let plain = unet
            .forward_with(
                &r["sample"],
                981.0,
                &r["encoder_hidden_states"],
                &UNetExtras {
                    timestep_cond: r.get("timestep_cond"),
                    ..Default::default()
                },
            )
            .unwrap();
        let hooked = unet
            .forward_with(&r["sample"], 981.0, &r["encoder_hidden_states"], &extras)
            .unwrap();
        // A hook takes the unfused attention path (it needs the probabilities); the plain
        // forward runs the fused CPU kernel, which differs only by f32 summation order.
        let diff = max_abs_diff(&hooked, &plain);
        assert!(
            diff < 1e-5,
            "{name}: a no-op hook changed the output by {diff}"
        );

        let (_, weights) = unet_files(name);
        let keys: Vec<String> = candle_core::safetensors::load(&weights, &Device::Cpu)
            .unwrap()
            .into_keys()
            .collect();
        let expected: Vec<&String> = keys
            .iter()
            .filter(|k| k.ends_with(".to_q.weight"))
            .collect();
        let sites = recorder.sites.borrow();
        assert_eq!(
            sites.len(),
            expected.len(),
            "{name}: one call per attention module"
        );
        for (path, is_cross, _, _) in sites.iter() {
            assert!(
                keys.contains(&format!("{path}.to_k.weight")),
                "{name}: no weights at {path}"
            );
            let only_cross = name == "tiny-x"
                && (path.starts_with("down_blocks.0.") || path.starts_with("up_blocks.1."));
            let want_cross = path.ends_with("attn2") || only_cross;
            assert_eq!(*is_cross, want_cross, "{name}: {path}");
        }
        if name == "tiny-sd1" {
            let first = &sites[0];
            assert_eq!(
                first.0,
                "down_blocks.0.attentions.0.transformer_blocks.0.attn1"
            );
            assert_eq!((first.2, first.3), (4, (8, 8)));
        }
    }
}

fn expect_config_error(cfg: &UNet2DConditionConfig, needle: &str) {
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    match UNet2DConditionModel::new(vb, cfg) {
        Err(Error::Config(msg)) => {
            assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}")
        }
        Err(other) => panic!("expected Error::Config, got {other}"),
        Ok(_) => panic!("config with {needle} was accepted"),
    }
}

#[test]
fn unsupported_config_values_are_config_errors() {
    let mut cfg = config("tiny-sd1");
    cfg.down_block_types[0] = "SimpleCrossAttnDownBlock2D".into();
    expect_config_error(&cfg, "down_block_types[0]");

    let mut cfg = config("tiny-sd1");
    cfg.up_block_types[2] = "AttnUpBlock2D".into();
    expect_config_error(&cfg, "AttnUpBlock2D");

    let mut cfg = config("tiny-sd1");
    cfg.mid_block_type = Some("UNetMidBlock2DSimpleCrossAttn".into());
    expect_config_error(&cfg, "mid_block_type");

    let mut cfg = config("tiny-sd1");
    cfg.class_embed_type = Some("timestep".into());
    expect_config_error(&cfg, "class_embed_type");

    let mut cfg = config("tiny-sd1");
    cfg.act_fn = "gelu".into();
    expect_config_error(&cfg, "act_fn");

    let text = std::fs::read_to_string(unet_files("tiny-sd1").0.join("config.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["addition_embed_type"] = "text_time".into();
    let cfg: UNet2DConditionConfig = serde_json::from_value(json).unwrap();
    expect_config_error(&cfg, "addition_embed_type");
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let unet = load_unet("tiny-sd1", DType::F32);
    let r = reference("tiny-sd1");
    let ehs = &r["encoder_hidden_states"];
    let nine = Tensor::zeros((2, 9, 8, 8), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        unet.forward(&nine, 1.0, ehs),
        Err(Error::InvalidArgument(_))
    ));
    let wide = Tensor::zeros((2, 77, 48), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        unet.forward(&r["sample"], 1.0, &wide),
        Err(Error::InvalidArgument(_))
    ));
    let down = down_residuals(&r);
    let extras = UNetExtras {
        down_block_residuals: Some(&down[1..]),
        mid_block_residual: Some(&r["mid_residual"]),
        ..Default::default()
    };
    assert!(matches!(
        unet.forward_with(&r["sample"], 1.0, ehs, &extras),
        Err(Error::InvalidArgument(_))
    ));
    let cond = Tensor::zeros((2, 6), DType::F32, &Device::Cpu).unwrap();
    let extras = UNetExtras {
        timestep_cond: Some(&cond),
        ..Default::default()
    };
    assert!(matches!(
        unet.forward_with(&r["sample"], 1.0, ehs, &extras),
        Err(Error::InvalidArgument(_))
    ));
}

/// f16 compute runs end to end and stays near the f32 reference. The tolerance is loose on
/// purpose: f16 carries ~3 significant digits, so 2e-2 on outputs of magnitude ~1; tiny-sd2 also
/// exercises upcast_attention. (bf16 is not checked here: candle's CPU backend has no bf16
/// matmul; it runs on CUDA/Metal.)
#[test]
fn f16_compute_is_close_to_f32() {
    for (dtype, tolerance) in [(DType::F16, 2e-2f32)] {
        for name in ["tiny-sd1", "tiny-sd2"] {
            let unet = load_unet(name, dtype);
            let r = reference(name);
            let out = unet
                .forward(&r["sample"], 981.0, &r["encoder_hidden_states"])
                .unwrap();
            assert_eq!(out.dtype(), dtype);
            let d = max_abs_diff(&out, &r["out_t981"]);
            println!("{name} {dtype:?}: max abs diff to f32 reference {d:e}");
            assert!(d <= tolerance, "{name} {dtype:?}: max abs diff {d}");
        }
    }
}
