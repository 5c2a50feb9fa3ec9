//! The benchmark run: each component timed `repeats` times on fixed inputs, with its FLOP count
//! and the peak RSS while it ran.

use candle_core::{DType, Tensor};
use serde::Serialize;

use super::device_memory::device_memory;
use super::flops;
use super::measure::{current_rss_bytes, median, time_runs, Timed};
use crate::error::{Error, Result};
use crate::pipelines::{StableDiffusion, Txt2ImgRequest};
use crate::rng::TorchGenerator;
use crate::samplers::SamplerKind;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Image sides in pixels; the UNet and the VAE decoder are measured at each.
    pub sizes: Vec<usize>,
    /// Steps of the whole generation (Euler, guidance 7.5, at the first size).
    pub steps: usize,
    /// Leave the whole generation out.
    pub skip_full: bool,
    /// Runs per component; the median is reported.
    pub repeats: usize,
    /// Runs of the whole generation (it is long; default 1).
    pub full_repeats: usize,
    /// Run the whole generation once with [`StableDiffusion::txt2img_low_memory`] (the text
    /// encoder is freed after encoding and the UNet before the decode, so this comes last and
    /// runs once).
    pub low_memory: bool,
    /// Untimed runs of each component before the timed ones; None: one. On a GPU the first
    /// call of each kernel loads it; on the CPU the first call grows the heap (and PyTorch's
    /// oneDNN builds its kernels), so an unwarmed first run is not what a sampling loop sees.
    /// The whole generation is not warmed up: it runs the components' kernels, warm by then.
    pub warmup: Option<usize>,
    /// Which components to time (all by default); the whole generation is [`Self::skip_full`].
    pub components: Vec<BenchComponent>,
    /// CUDA, f32: let matrix products use TF32 (candle's `set_gemm_reduced_precision_f32`, a
    /// process-wide switch that [`run_bench`] sets). Off by default, as PyTorch's matmuls.
    pub tf32: bool,
}

impl BenchOptions {
    /// The warm-up count: [`Self::warmup`], or its default (one run).
    pub fn warmup_runs(&self) -> usize {
        self.warmup.unwrap_or(1)
    }

    fn times(&self, component: BenchComponent) -> bool {
        self.components.contains(&component)
    }
}

/// A component `pigment bench` can time on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchComponent {
    TextEncoder,
    Unet,
    VaeDecode,
}

impl BenchComponent {
    pub const ALL: [BenchComponent; 3] = [Self::TextEncoder, Self::Unet, Self::VaeDecode];

    /// The row name, shared with tools/bench/diffusers_bench.py.
    pub fn name(self) -> &'static str {
        match self {
            Self::TextEncoder => "text_encoder",
            Self::Unet => "unet",
            Self::VaeDecode => "vae_decode",
        }
    }
}

impl std::str::FromStr for BenchComponent {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == name)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown component `{name}`: use text_encoder, unet or vae_decode \
                     (the whole generation is on unless --skip-full)"
                ))
            })
    }
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            sizes: vec![512, 256],
            steps: 20,
            skip_full: false,
            repeats: 3,
            full_repeats: 1,
            low_memory: false,
            warmup: None,
            components: BenchComponent::ALL.to_vec(),
            tf32: false,
        }
    }
}

/// One measured component. Field names are shared with tools/bench/diffusers_bench.py.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    /// `text_encoder`, `unet`, `vae_decode` or `generation`.
    pub component: String,
    /// Image side in pixels (0 for the text encoder).
    pub size: usize,
    pub batch: usize,
    /// Seconds of each run.
    pub runs_s: Vec<f64>,
    pub median_s: f64,
    /// Convolution, matmul and attention FLOPs of one run (bench/flops.rs).
    pub flops: f64,
    pub gflops_per_s: f64,
    /// Peak RSS of the process while this component ran (weights included), in bytes.
    pub peak_rss_bytes: Option<u64>,
    /// CUDA only: peak device memory in use (total − free, sampled every millisecond; context
    /// and weights included) while this component ran, in bytes. See bench/device_memory.rs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_device_bytes: Option<u64>,
}

/// A whole benchmark. Field names are shared with tools/bench/diffusers_bench.py.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub engine: String,
    pub model: String,
    pub dtype: String,
    pub device: String,
    pub threads: usize,
    pub repeats: usize,
    /// The VAE's tiling mode: `off`, `on` or `auto`.
    pub vae_tiling: String,
    /// Seconds to build or load the model.
    pub load_s: f64,
    /// RSS after loading, before any forward pass.
    pub loaded_rss_bytes: Option<u64>,
    /// Untimed runs of each component before the timed ones.
    pub warmup: usize,
    /// CUDA only: device memory in use after loading (context included), in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loaded_device_bytes: Option<u64>,
    /// CUDA only: the device's total memory, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_total_bytes: Option<u64>,
    /// CUDA only: whether f32 matrix products may use TF32 (candle's
    /// `set_gemm_reduced_precision_f32`; off unless `--tf32`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tf32: Option<bool>,
    /// How the text encoder's and UNet's weights are held when not as `dtype` (`f16`, `q8`:
    /// packed, widened in each forward); set by the caller that built the model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights: Option<String>,
    pub rows: Vec<BenchRow>,
}

fn row(component: &str, size: usize, batch: usize, timed: Timed, flops: f64) -> BenchRow {
    let Timed {
        runs,
        peak_rss,
        peak_device,
    } = timed;
    let median_s = median(&runs);
    BenchRow {
        component: component.into(),
        size,
        batch,
        gflops_per_s: if median_s > 0.0 {
            flops / median_s / 1e9
        } else {
            0.0
        },
        runs_s: runs,
        median_s,
        flops,
        peak_rss_bytes: peak_rss,
        peak_device_bytes: peak_device,
    }
}

/// Runs the benchmark on `model`; `progress` hears the name of each step before it runs.
pub fn run_bench(
    model: &mut StableDiffusion,
    options: &BenchOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<BenchReport> {
    let factor = model.vae_scale_factor();
    let unet_cfg = model.unet_config().clone();
    // A deferred model (--low-memory) loads each component for its own rows and frees it
    // after, so that no row's peak memory holds another component.
    let deferred = !model.is_loaded();
    let down = 1usize << unet_cfg.block_out_channels.len().saturating_sub(1);
    if options.sizes.is_empty() {
        return Err(Error::invalid(
            "--sizes is empty: give at least one image side, e.g. 512",
        ));
    }
    for &size in &options.sizes {
        if size == 0 || size % (factor * down) != 0 {
            return Err(Error::invalid(format!(
                "--sizes {size}: each size must be a positive multiple of {} (VAE factor {factor} x UNet down-sampling {down})",
                factor * down
            )));
        }
    }
    let device = &model.device.clone();
    let repeats = options.repeats.max(1);
    let warmup = options.warmup_runs();
    if device.is_cuda() {
        candle_core::cuda::set_gemm_reduced_precision_f32(options.tf32);
    }
    device.synchronize()?;
    let loaded_rss_bytes = current_rss_bytes();
    let device_memory_now = device_memory(device);
    let mut rows = Vec::new();

    // Text encoder: one prompt of the model's full context length, as encode_prompt runs it.
    let seq = model.text_config.max_position_embeddings;
    let text_flops = flops::text_encoder(&model.text_config, 1, seq);
    if options.times(BenchComponent::TextEncoder) {
        progress("text encoder");
        let ids = model
            .tokenizer
            .encode_padded("a photograph of an astronaut riding a horse", seq)?;
        let ids = Tensor::from_vec(ids, (1, seq), device)?;
        model.ensure_text_encoder()?;
        let timed = time_runs(repeats, warmup, device, || model.text_encoder.forward(&ids))?;
        if deferred {
            model.release_text_encoder()?;
        }
        rows.push(row("text_encoder", 0, 1, timed, text_flops));
    }

    let mut rng = TorchGenerator::new(0);
    let hidden = model.text_config.hidden_size;
    let context = rng
        .randn_tensor(&[2, seq, hidden], device)?
        .to_dtype(model.dtype)?;
    let latent_channels = model.vae.config().latent_channels;
    for &size in &options.sizes {
        let side = size / factor;
        if options.times(BenchComponent::Unet) {
            progress(&format!("UNet at {size}x{size}, batch 2"));
            let sample = rng
                .randn_tensor(&[2, unet_cfg.in_channels, side, side], device)?
                .to_dtype(model.dtype)?;
            model.ensure_unet()?;
            let timed = time_runs(repeats, warmup, device, || {
                model.unet.forward(&sample, 500.0, &context)
            })?;
            if deferred {
                model.release_unet()?;
            }
            let f = flops::unet(&unet_cfg, 2, side, side, seq)?;
            rows.push(row("unet", size, 2, timed, f));
        }
        if options.times(BenchComponent::VaeDecode) {
            progress(&format!("VAE decode at {size}x{size}"));
            let latents = rng
                .randn_tensor(&[1, latent_channels, side, side], device)?
                .to_dtype(model.dtype)?;
            model.ensure_vae()?;
            let timed = time_runs(repeats, warmup, device, || model.vae.decode(&latents))?;
            model.release_vae_if_deferred();
            let f = flops::vae_decode(model.vae.config(), 1, side, side);
            rows.push(row("vae_decode", size, 1, timed, f));
        }
    }

    if !options.skip_full && options.steps > 0 {
        let size = options.sizes[0];
        progress(&format!(
            "whole generation at {size}x{size}, {} steps",
            options.steps
        ));
        let request = Txt2ImgRequest {
            prompt: "a photograph of an astronaut riding a horse".into(),
            steps: options.steps,
            cfg_scale: 7.5,
            sampler: SamplerKind::Euler,
            width: size,
            height: size,
            ..Txt2ImgRequest::default()
        };
        let timed = if options.low_memory {
            time_runs(1, 0, device, || {
                model.txt2img_low_memory(&request, &mut |_, _| {})
            })?
        } else {
            time_runs(options.full_repeats.max(1), 0, device, || {
                model.txt2img(&request, &mut |_, _| {})
            })?
        };
        let side = size / factor;
        let f = 2.0 * text_flops
            + options.steps as f64 * flops::unet(&unet_cfg, 2, side, side, seq)?
            + flops::vae_decode(model.vae.config(), 1, side, side);
        let name = if options.low_memory {
            "generation_low_memory"
        } else {
            "generation"
        };
        rows.push(row(name, size, 1, timed, f));
    }

    Ok(BenchReport {
        engine: "pigment".into(),
        model: model.name.clone(),
        dtype: dtype_name(model.dtype).into(),
        device: format!("{:?}", model.device.location()),
        threads: candle_core::utils::get_num_threads(),
        repeats,
        vae_tiling: format!("{:?}", model.vae.tiling()).to_lowercase(),
        load_s: model.load_time.as_secs_f64(),
        loaded_rss_bytes,
        warmup,
        loaded_device_bytes: device_memory_now.map(|(used, _)| used),
        device_total_bytes: device_memory_now.map(|(_, total)| total),
        tf32: (model.device.is_cuda() && model.dtype == DType::F32)
            .then(candle_core::cuda::gemm_reduced_precision_f32),
        weights: None,
        rows,
    })
}

fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::F32 => "f32",
        _ => "other",
    }
}
