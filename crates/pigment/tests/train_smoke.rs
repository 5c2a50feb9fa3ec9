//! The training stack end to end on tiny models: AdamW and gradient clipping against torch,
//! loss going down for the UNet (DDPM loss through a frozen VAE and text encoder), the VAE and
//! CLIP, and a resumed run continuing bit for bit.
//! AdamW fixtures: tools/reference/make_optimizer_fixtures.py -> tests/fixtures/train/.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use pigment::builtin::Dataset;
use pigment::image::image_to_tensor;
use pigment::schedule::SchedulerConfig;
use pigment::text::{ClipTextConfig, ClipTextModel, ClipTokenizer};
use pigment::train::clip::{clip_loss, MAX_LOGIT_SCALE};
use pigment::train::diffusion::{encode_latents, DiffusionObjective};
use pigment::train::vae::{Reconstruction, VaeObjective};
use pigment::train::{
    clip_grad_norm, grow_vars_from_file, init_vars_from_file, named_vars, read_log,
    seeded_var_builder, AdamW, AdamWConfig, LrSchedule, Params, StepContext, StepRecord, TrainRng,
    Trainer, TrainerConfig,
};
use pigment::unet::{PerBlock, UNet2DConditionConfig, UNet2DConditionModel};
use pigment::vae::{AutoencoderKL, AutoencoderKLConfig};
use pigment::vision::{normalize, ClipConfig, ClipModel, ClipVisionConfig};

const DEV: Device = Device::Cpu;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/train")
}

// ---------------------------------------------------------------- AdamW against torch

/// Tolerance: max |pigment - torch| <= 1e-6 on parameters of magnitude ~1 after five steps
/// (both in f32 with the same operation order; the remaining gap is scalar rounding).
const ADAMW_TOLERANCE: f32 = 1e-6;

fn check_adamw_scenario(name: &str) {
    let tensors = candle_core::safetensors::load(fixtures().join("adamw.safetensors"), &DEV)
        .expect("AdamW fixture");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("adamw.json")).unwrap())
            .unwrap();
    let sc = &meta["scenarios"][name];
    let names = ["a.weight", "b.bias", "c.weight"];
    let params: Params = names
        .iter()
        .map(|n| {
            let v = Var::from_tensor(&tensors[&format!("init.{n}")]).unwrap();
            (n.to_string(), v)
        })
        .collect();
    let mut opt = AdamW::new(
        params.clone(),
        AdamWConfig {
            lr: 0.0,
            beta1: sc["beta1"].as_f64().unwrap(),
            beta2: sc["beta2"].as_f64().unwrap(),
            eps: sc["eps"].as_f64().unwrap(),
            weight_decay: sc["weight_decay"].as_f64().unwrap(),
        },
    )
    .unwrap();
    let lrs: Vec<f64> = serde_json::from_value(meta["lrs"].clone()).unwrap();
    for (step, lr) in lrs.iter().enumerate() {
        opt.set_lr(*lr);
        let mut grads: Vec<Option<Tensor>> = names
            .iter()
            .map(|n| tensors.get(&format!("grad.{step}.{n}")).cloned())
            .collect();
        if let Some(max) = sc["max_norm"].as_f64() {
            let norm = clip_grad_norm(&mut grads, max).unwrap();
            let torch_norm = sc["norms"][step].as_f64().unwrap();
            assert!(
                (norm - torch_norm).abs() <= 1e-6 * torch_norm,
                "{name} step {step}: grad norm {norm} vs torch {torch_norm}"
            );
        }
        opt.step(&grads).unwrap();
        for (n, var) in &params {
            let expected = &tensors[&format!("{name}.after.{step}.{n}")];
            let diff = (var.as_tensor() - expected)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                diff <= ADAMW_TOLERANCE,
                "{name} step {step} {n}: max diff {diff} to torch.optim.AdamW"
            );
        }
    }
}

#[test]
fn adamw_matches_torch() {
    check_adamw_scenario("plain");
}

#[test]
fn adamw_with_clipping_matches_torch() {
    check_adamw_scenario("clipped");
}

// ---------------------------------------------------------------- tiny models and data

const SIZE: u32 = 16;
const TOKENS: usize = 24;
const ITEMS: usize = 8;

/// `ITEMS` builtin images ([1, 3, 16, 16] in [-1, 1]) with their captions.
fn data() -> (Vec<Tensor>, Vec<String>) {
    let ds = Dataset::train(11).with_size(SIZE).unwrap();
    (0..ITEMS as u64)
        .map(|i| {
            let (img, caption, _) = ds.sample(i);
            (image_to_tensor(&img, &DEV).unwrap(), caption)
        })
        .unzip()
}

fn batch_of(images: &[Tensor], indices: &[usize]) -> Tensor {
    let picked: Vec<&Tensor> = indices.iter().map(|&i| &images[i]).collect();
    Tensor::cat(&picked, 0).unwrap()
}

fn tiny_vae_config() -> AutoencoderKLConfig {
    AutoencoderKLConfig {
        down_block_types: vec!["DownEncoderBlock2D".into(); 2],
        up_block_types: vec!["UpDecoderBlock2D".into(); 2],
        block_out_channels: vec![16, 16],
        norm_num_groups: 8,
        sample_size: SIZE as usize,
        ..Default::default()
    }
}

fn tiny_text_config() -> ClipTextConfig {
    ClipTextConfig {
        hidden_size: 16,
        intermediate_size: 32,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        max_position_embeddings: TOKENS,
        ..Default::default()
    }
}

fn tiny_unet_config() -> UNet2DConditionConfig {
    UNet2DConditionConfig {
        sample_size: 8,
        down_block_types: vec!["CrossAttnDownBlock2D".into(), "DownBlock2D".into()],
        up_block_types: vec!["UpBlock2D".into(), "CrossAttnUpBlock2D".into()],
        block_out_channels: vec![16, 32],
        layers_per_block: PerBlock::One(1),
        norm_num_groups: 8,
        cross_attention_dim: PerBlock::One(16),
        attention_head_dim: PerBlock::One(2),
        ..Default::default()
    }
}

fn token_ids(tokenizer: &ClipTokenizer, captions: &[String]) -> Tensor {
    let rows: Vec<Vec<u32>> = captions
        .iter()
        .map(|c| tokenizer.encode_padded(c, TOKENS).unwrap())
        .collect();
    Tensor::new(rows, &DEV).unwrap()
}

fn losses(records: &[StepRecord]) -> Vec<f64> {
    records.iter().map(|r| r.loss).collect()
}

/// Asserts the mean of the last five losses is below `ratio` times the mean of the first five.
fn assert_learns(what: &str, losses: &[f64], ratio: f64) {
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    let first = mean(&losses[..5]);
    let last = mean(&losses[losses.len() - 5..]);
    println!("{what}: first-5 mean {first:.4}, last-5 mean {last:.4} ({losses:.3?})");
    assert!(
        last < ratio * first,
        "{what} did not learn: first-5 mean {first}, last-5 mean {last}"
    );
}

// ---------------------------------------------------------------- UNet: DDPM loss + resume

/// A UNet trained on latents of a frozen VAE with captions from a frozen text encoder.
struct DiffusionRun {
    unet_vars: VarMap,
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    text: ClipTextModel,
    tokenizer: ClipTokenizer,
    objective: DiffusionObjective,
    images: Vec<Tensor>,
    captions: Vec<String>,
}

impl DiffusionRun {
    /// `unet_seed` initialises the UNet; the frozen models are always the same.
    fn new(unet_seed: u64) -> Self {
        let frozen = VarMap::new();
        let vae = AutoencoderKL::new(
            seeded_var_builder(&frozen, 1, DType::F32, &DEV).pp("vae"),
            &tiny_vae_config(),
        )
        .unwrap();
        let text = ClipTextModel::new(
            seeded_var_builder(&frozen, 2, DType::F32, &DEV).pp("text"),
            &tiny_text_config(),
        )
        .unwrap();
        let unet_vars = VarMap::new();
        let unet = UNet2DConditionModel::new(
            seeded_var_builder(&unet_vars, unet_seed, DType::F32, &DEV),
            &tiny_unet_config(),
        )
        .unwrap();
        let (images, captions) = data();
        Self {
            unet_vars,
            unet,
            vae,
            text,
            tokenizer: ClipTokenizer::embedded().unwrap(),
            objective: DiffusionObjective::new(&SchedulerConfig::default(), 0.1).unwrap(),
            images,
            captions,
        }
    }

    fn loss(&self, ctx: &mut StepContext<'_>) -> pigment::Result<Tensor> {
        let batch = self.prepare(ctx)?;
        self.loss_on(batch, ctx.rng)
    }

    /// The micro-batch's images and captions ([`Trainer::run_split`]'s first part).
    fn prepare(&self, ctx: &mut StepContext<'_>) -> pigment::Result<(Tensor, Vec<String>)> {
        let captions = ctx.indices.iter().map(|&i| self.captions[i].clone());
        Ok((batch_of(&self.images, &ctx.indices), captions.collect()))
    }

    /// The DDPM loss of a prepared micro-batch ([`Trainer::run_split`]'s second part).
    fn loss_on(
        &self,
        (images, captions): (Tensor, Vec<String>),
        rng: &mut TrainRng,
    ) -> pigment::Result<Tensor> {
        let latents = encode_latents(&self.vae, &images, rng)?;
        let captions = self.objective.drop_captions(&captions, rng);
        let context = self
            .text
            .forward(&token_ids(&self.tokenizer, &captions))?
            .detach();
        self.objective.loss(&self.unet, &latents, &context, rng)
    }

    fn trainer(&self, dir: &Path, total_steps: u64) -> Trainer {
        self.trainer_in_parts(dir, total_steps, 1)
    }

    /// Each step's `ITEMS` items as `parts` micro-batches.
    fn trainer_in_parts(&self, dir: &Path, total_steps: u64, parts: usize) -> Trainer {
        let config = TrainerConfig {
            seed: 5,
            optimizer: AdamWConfig {
                weight_decay: 1e-2,
                ..Default::default()
            },
            schedule: LrSchedule::WarmupCosine {
                peak_lr: 5e-3,
                warmup_steps: total_steps.min(3),
                total_steps,
                min_lr: 3e-4,
            },
            ema_decay: Some(0.99),
            checkpoint_dir: Some(dir.join("checkpoints")),
            checkpoint_every: 10,
            keep_checkpoints: 2,
            log_path: Some(dir.join("loss.jsonl")),
            grad_accumulation: parts,
            ..TrainerConfig::new(total_steps, ITEMS / parts, ITEMS)
        };
        Trainer::new(named_vars(&self.unet_vars).unwrap(), config).unwrap()
    }
}

fn weights(params: &Params) -> HashMap<String, Vec<f32>> {
    params
        .iter()
        .map(|(n, v)| {
            let flat = v.as_tensor().flatten_all().unwrap().to_vec1::<f32>();
            (n.clone(), flat.unwrap())
        })
        .collect()
}

#[test]
fn unet_learns_and_a_resumed_run_continues_bit_for_bit() {
    const TOTAL: u64 = 30;
    let dir = tempfile::tempdir().unwrap();

    // The uninterrupted run.
    let run = DiffusionRun::new(100);
    let mut trainer = run.trainer(dir.path(), TOTAL);
    let mut seen = 0u64;
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let c = counter.clone();
    trainer.set_progress(Box::new(move |r| {
        c.store(r.step, std::sync::atomic::Ordering::Relaxed)
    }));
    let records = trainer.run(u64::MAX, |ctx| run.loss(ctx)).unwrap();
    seen += records.len() as u64;
    assert_eq!(seen, TOTAL);
    assert_eq!(counter.load(std::sync::atomic::Ordering::Relaxed), TOTAL);
    assert!(trainer.is_done());
    assert_learns("UNet DDPM loss", &losses(&records), 0.85);
    let final_weights = weights(trainer.params());
    let final_ema = trainer.ema().unwrap().tensors();

    // Checkpoints at 10, 20, 30; only the newest two kept.
    let ckpts = dir.path().join("checkpoints");
    let mut names: Vec<String> = std::fs::read_dir(&ckpts)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["checkpoint-00000020", "checkpoint-00000030"]);

    // A fresh process: differently initialised UNet, resumed from step 20.
    let resumed_run = DiffusionRun::new(999);
    let mut resumed = resumed_run.trainer(dir.path(), TOTAL);
    resumed.resume(&ckpts.join("checkpoint-00000020")).unwrap();
    assert_eq!(resumed.step_count(), 20);
    let rest = resumed.run(u64::MAX, |ctx| resumed_run.loss(ctx)).unwrap();
    let expected: Vec<u64> = losses(&records[20..]).iter().map(|l| l.to_bits()).collect();
    let got: Vec<u64> = losses(&rest).iter().map(|l| l.to_bits()).collect();
    assert_eq!(
        got, expected,
        "resumed losses differ from the uninterrupted run"
    );
    assert_eq!(weights(resumed.params()), final_weights);
    let resumed_ema = resumed.ema().unwrap().tensors();
    for (name, t) in &final_ema {
        let a = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = resumed_ema[name]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(a, b, "EMA of {name} differs after resume");
    }

    // The log holds each step once, the resumed steps replacing what followed step 20.
    let log = read_log(&dir.path().join("loss.jsonl")).unwrap();
    let steps: Vec<u64> = log.iter().map(|r| r.step).collect();
    assert_eq!(steps, (1..=TOTAL).collect::<Vec<_>>());
    assert!(log
        .iter()
        .all(|r| r.lr > 0.0 && r.grad_norm > 0.0 && r.samples_per_sec > 0.0));

    // The run is complete: another step is refused, and resume_latest finds step 30.
    assert!(resumed
        .run(1, |ctx| resumed_run.loss(ctx))
        .unwrap()
        .is_empty());
    let mut again = resumed_run.trainer(dir.path(), TOTAL);
    assert_eq!(again.resume_latest().unwrap(), Some(30));
}

/// Micro-batches computed in parallel (`run_split`): the same losses and weights, bit for bit,
/// on one thread and on two; the loss still goes down; and with one micro-batch, `run_split`
/// is exactly `run` with the two parts called in a row.
#[test]
fn parallel_micro_batches_do_not_depend_on_the_thread_count() {
    const STEPS: u64 = 12;
    let split_run = |threads: usize, parts: usize| {
        let dir = tempfile::tempdir().unwrap();
        let run = DiffusionRun::new(100);
        let mut trainer = run.trainer_in_parts(dir.path(), STEPS, parts);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let records = pool
            .install(|| {
                trainer.run_split(
                    u64::MAX,
                    |ctx| run.prepare(ctx),
                    |b, rng| run.loss_on(b, rng),
                )
            })
            .unwrap();
        (losses(&records), weights(trainer.params()))
    };
    let (one_thread, w1) = split_run(1, 2);
    let (two_threads, w2) = split_run(2, 2);
    assert_eq!(
        one_thread.iter().map(|l| l.to_bits()).collect::<Vec<_>>(),
        two_threads.iter().map(|l| l.to_bits()).collect::<Vec<_>>(),
        "losses differ between 1 and 2 threads"
    );
    assert_eq!(w1, w2, "weights differ between 1 and 2 threads");
    assert_learns("UNet DDPM loss in 2 micro-batches", &one_thread, 0.85);

    // One micro-batch: run_split is run.
    let (split, w_split) = split_run(2, 1);
    let dir = tempfile::tempdir().unwrap();
    let run = DiffusionRun::new(100);
    let mut trainer = run.trainer(dir.path(), STEPS);
    let whole = losses(&trainer.run(u64::MAX, |ctx| run.loss(ctx)).unwrap());
    assert_eq!(
        split, whole,
        "run_split with one micro-batch differs from run"
    );
    assert_eq!(w_split, weights(trainer.params()));
}

#[test]
fn resume_refuses_a_checkpoint_of_other_weights() {
    let dir = tempfile::tempdir().unwrap();
    let run = DiffusionRun::new(1);
    let mut trainer = run.trainer(dir.path(), 1);
    trainer.run(1, |ctx| run.loss(ctx)).unwrap();

    let other = VarMap::new();
    let vb = seeded_var_builder(&other, 0, DType::F32, &DEV);
    candle_nn::linear(2, 2, vb.pp("head")).unwrap();
    let mut wrong =
        Trainer::new(named_vars(&other).unwrap(), TrainerConfig::new(1, 4, ITEMS)).unwrap();
    let err = wrong
        .resume(&dir.path().join("checkpoints/checkpoint-00000001"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("other parameters"), "{err}");
}

#[test]
fn fine_tuning_starts_from_the_given_weights_and_refuses_another_models() {
    let dir = tempfile::tempdir().unwrap();
    // A trained run's weights, saved in f16 as the built-in model ships them.
    let run = DiffusionRun::new(3);
    let mut trainer = run.trainer(dir.path(), 5);
    trainer.run(u64::MAX, |ctx| run.loss(ctx)).unwrap();
    let trained = weights(trainer.params());
    let f16 = weights_as_tensors(trainer.params(), DType::F16);
    let file = dir.path().join("unet.safetensors");
    candle_core::safetensors::save(&f16, &file).unwrap();

    // A fresh model of another seed starts from those weights (to f16 precision) ...
    let fine = DiffusionRun::new(4);
    let before = weights(&named_vars(&fine.unet_vars).unwrap());
    init_vars_from_file(&fine.unet_vars, &file).unwrap();
    let after = weights(&named_vars(&fine.unet_vars).unwrap());
    let mut moved = 0;
    for (name, values) in &after {
        let want = &trained[name];
        let err = values
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1e-3))
            .fold(0f32, f32::max);
        // f16 keeps 11 significant bits: relative error <= 2^-11 (|w| >= 1e-3).
        assert!(err <= 4.9e-4, "{name}: relative error {err}");
        moved += usize::from(values != &before[name]);
    }
    assert!(moved > after.len() / 2, "only {moved} weights changed");
    // ... and its loss on the same batch is the trained run's, not a fresh model's.
    let probe = |r: &DiffusionRun| {
        std::fs::create_dir_all(dir.path().join("probe")).unwrap();
        let mut t = r.trainer(&dir.path().join("probe"), 1);
        let loss = t.run(1, |ctx| r.loss(ctx)).unwrap()[0].loss;
        std::fs::remove_dir_all(dir.path().join("probe")).unwrap();
        loss
    };
    let fresh = probe(&DiffusionRun::new(4));
    let (tuned, original) = (probe(&fine), probe(&run));
    assert!(
        (tuned - original).abs() < 0.05 * original && (tuned - fresh).abs() > 0.05 * fresh,
        "fine-tuned start {tuned}, trained {original}, fresh {fresh}"
    );

    // Another model's file changes nothing and names the mismatch.
    let other = VarMap::new();
    candle_nn::linear(
        2,
        2,
        seeded_var_builder(&other, 0, DType::F32, &DEV).pp("head"),
    )
    .unwrap();
    let keep = weights(&named_vars(&other).unwrap());
    let err = init_vars_from_file(&other, &file).unwrap_err().to_string();
    assert!(err.contains("head.") && err.contains("missing"), "{err}");
    assert_eq!(weights(&named_vars(&other).unwrap()), keep);
    let err = init_vars_from_file(&other, &dir.path().join("none.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no such file"), "{err}");
}

/// The tiny UNet with a cross-attention transformer added at its second level too (the kind
/// of change `--grow` is for), with only cross-attention there (no self-attention).
fn grown_unet_config() -> UNet2DConditionConfig {
    UNet2DConditionConfig {
        down_block_types: vec!["CrossAttnDownBlock2D".into(), "CrossAttnDownBlock2D".into()],
        up_block_types: vec!["CrossAttnUpBlock2D".into(), "CrossAttnUpBlock2D".into()],
        only_cross_attention: PerBlock::Each(vec![false, true]),
        ..tiny_unet_config()
    }
}

#[test]
fn a_grown_unet_starts_as_the_old_one_and_its_new_attention_learns() {
    let dir = tempfile::tempdir().unwrap();
    let run = DiffusionRun::new(3);
    let mut trainer = run.trainer(dir.path(), 5);
    trainer.run(u64::MAX, |ctx| run.loss(ctx)).unwrap();
    let file = dir.path().join("unet.safetensors");
    candle_core::safetensors::save(&weights_as_tensors(trainer.params(), DType::F32), &file)
        .unwrap();

    let vars = VarMap::new();
    let grown = UNet2DConditionModel::new(
        seeded_var_builder(&vars, 9, DType::F32, &DEV),
        &grown_unet_config(),
    )
    .unwrap();
    let report = grow_vars_from_file(&vars, &file).unwrap();
    assert_eq!(report.loaded, trainer.params().len());
    assert!(!report.new.is_empty());
    assert!(
        report.new.iter().all(|n| n.contains(".attentions.")),
        "only the new attention blocks are new: {:?}",
        report.new
    );

    // Same input, same output: each new block's zeroed proj_out makes it an identity.
    let sample = Tensor::randn(0f32, 1.0, (2, 4, 8, 8), &DEV).unwrap();
    let context = Tensor::randn(0f32, 1.0, (2, 5, 16), &DEV).unwrap();
    let old = run.unet.forward(&sample, 500.0, &context).unwrap();
    let new = grown.forward(&sample, 500.0, &context).unwrap();
    let diff = (old - &new).unwrap().abs().unwrap().max_all().unwrap();
    assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);

    // The loss reaches the new blocks: their output projections get a gradient (the rest of
    // each new block does once those move off zero).
    let grads = new.sqr().unwrap().mean_all().unwrap().backward().unwrap();
    let data = vars.data().lock().unwrap();
    for name in report.new.iter().filter(|n| n.ends_with("proj_out.weight")) {
        let g = grads.get(data[name].as_tensor()).expect("gradient");
        let norm = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(norm > 0.0, "{name} has no gradient");
    }
    drop(data);

    // Growing the other way (a file with weights the model lacks) is refused and changes
    // nothing; so is a weight of another shape.
    let grown_file = dir.path().join("grown.safetensors");
    let grown_weights = weights_as_tensors(&named_vars(&vars).unwrap(), DType::F32);
    candle_core::safetensors::save(&grown_weights, &grown_file).unwrap();
    let small = DiffusionRun::new(5);
    let keep = weights(&named_vars(&small.unet_vars).unwrap());
    let err = grow_vars_from_file(&small.unet_vars, &grown_file)
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not in the model"), "{err}");
    assert_eq!(weights(&named_vars(&small.unet_vars).unwrap()), keep);
    let mut reshaped = weights_as_tensors(trainer.params(), DType::F32);
    reshaped.insert(
        "conv_in.bias".into(),
        Tensor::zeros(3, DType::F32, &DEV).unwrap(),
    );
    candle_core::safetensors::save(&reshaped, &file).unwrap();
    let err = grow_vars_from_file(&small.unet_vars, &file)
        .unwrap_err()
        .to_string();
    assert!(err.contains("conv_in.bias is [3] in the file"), "{err}");
}

/// The parameters as named tensors of `dtype`, as a weights file holds them.
fn weights_as_tensors(params: &Params, dtype: DType) -> HashMap<String, Tensor> {
    params
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().to_dtype(dtype).unwrap()))
        .collect()
}

// ---------------------------------------------------------------- VAE

#[test]
fn vae_learns_to_reconstruct() {
    let vars = VarMap::new();
    let vae = AutoencoderKL::new(
        seeded_var_builder(&vars, 3, DType::F32, &DEV),
        &tiny_vae_config(),
    )
    .unwrap();
    let (images, _) = data();
    let objective = VaeObjective::new(Reconstruction::L1, 1e-3).unwrap();
    let config = TrainerConfig {
        optimizer: AdamWConfig {
            weight_decay: 0.0,
            ..Default::default()
        },
        schedule: LrSchedule::constant(3e-3),
        ..TrainerConfig::new(30, 4, ITEMS)
    };
    let mut trainer = Trainer::new(named_vars(&vars).unwrap(), config).unwrap();
    let records = trainer
        .run(u64::MAX, |ctx| {
            let x = batch_of(&images, &ctx.indices);
            Ok(objective.loss(&vae, &x, ctx.rng)?.total)
        })
        .unwrap();
    assert_learns("VAE L1 + KL loss", &losses(&records), 0.6);
}

// ---------------------------------------------------------------- CLIP

#[test]
fn clip_learns_to_match_captions_to_images() {
    let vars = VarMap::new();
    let config = ClipConfig {
        text_config: tiny_text_config(),
        vision_config: ClipVisionConfig {
            hidden_size: 16,
            intermediate_size: 32,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            image_size: SIZE as usize,
            patch_size: 4,
            ..Default::default()
        },
        projection_dim: 16,
        ..Default::default()
    };
    let model = ClipModel::new(seeded_var_builder(&vars, 4, DType::F32, &DEV), &config).unwrap();
    let (images, captions) = data();
    let tokenizer = ClipTokenizer::embedded().unwrap();
    let pixels: Vec<Tensor> = images
        .iter()
        .map(|x| normalize(&((x + 1.0).unwrap() * 0.5).unwrap()).unwrap())
        .collect();
    let trainer_config = TrainerConfig {
        schedule: LrSchedule::constant(3e-3),
        ..TrainerConfig::new(30, ITEMS, ITEMS)
    };
    let mut trainer = Trainer::new(named_vars(&vars).unwrap(), trainer_config).unwrap();
    trainer
        .clamp_param("logit_scale", 0.0, MAX_LOGIT_SCALE)
        .unwrap();
    let records = trainer
        .run(u64::MAX, |ctx| {
            let caps: Vec<String> = ctx.indices.iter().map(|&i| captions[i].clone()).collect();
            clip_loss(
                &model,
                &token_ids(&tokenizer, &caps),
                &batch_of(&pixels, &ctx.indices),
            )
        })
        .unwrap();
    assert_learns("CLIP contrastive loss", &losses(&records), 0.6);
    let scale = model.logit_scale().to_scalar::<f32>().unwrap() as f64;
    assert!((0.0..=MAX_LOGIT_SCALE).contains(&scale));
}

// ---------------------------------------------------------------- loop mechanics

/// y = w x on fixed data: gradient accumulation over 2 x 2 items equals one batch of 4.
#[test]
fn gradient_accumulation_equals_the_larger_batch() {
    let xs = [1.0f32, -2.0, 0.5, 3.0];
    let run = |batch: usize, accumulation: usize| {
        let w = Var::new(&[0.3f32], &DEV).unwrap();
        let config = TrainerConfig {
            grad_accumulation: accumulation,
            schedule: LrSchedule::constant(0.1),
            max_grad_norm: None,
            ..TrainerConfig::new(3, batch, 4)
        };
        let mut trainer = Trainer::new(vec![("w".into(), w.clone())], config).unwrap();
        trainer
            .run(u64::MAX, |ctx| {
                let x: Vec<f32> = ctx.indices.iter().map(|&i| xs[i]).collect();
                let x = Tensor::new(x, &DEV)?;
                let pred = x.broadcast_mul(w.as_tensor())?;
                Ok((pred - (&x * 2.0)?)?.sqr()?.mean_all()?)
            })
            .unwrap();
        w.as_tensor().to_vec1::<f32>().unwrap()[0]
    };
    // Both visit the same items each step (4 items per step = the whole dataset).
    let (one, two) = (run(4, 1), run(2, 2));
    assert!((one - two).abs() < 1e-6, "{one} vs {two}");
    assert!(one > 0.5, "w moved toward 2: {one}");
}

#[test]
fn divergence_and_detached_losses_are_errors() {
    let w = Var::new(&[1.0f32], &DEV).unwrap();
    let mut trainer =
        Trainer::new(vec![("w".into(), w.clone())], TrainerConfig::new(5, 1, 1)).unwrap();
    let err = trainer
        .run(1, |_| Ok((w.as_tensor() * f64::NAN)?.sum_all()?))
        .unwrap_err()
        .to_string();
    assert!(err.contains("diverged"), "{err}");
    let err = trainer
        .run(1, |_| Ok(w.as_tensor().detach().sum_all()?))
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not depend"), "{err}");
    let err = trainer
        .run(1, |_| Ok(w.as_tensor().clone()))
        .err()
        .map(|e| e.to_string());
    assert!(err.is_none(), "a one-element loss is accepted: {err:?}");
    assert_eq!(trainer.step_count(), 1);
}

/// Training draws one timestep per sample: each row of `forward_timesteps` is what `forward`
/// gives for that row's timestep alone.
#[test]
fn per_sample_timesteps_match_single_timestep_forwards() {
    let vars = VarMap::new();
    let unet = UNet2DConditionModel::new(
        seeded_var_builder(&vars, 8, DType::F32, &DEV),
        &tiny_unet_config(),
    )
    .unwrap();
    let x = Tensor::from_vec(
        pigment::train::TrainRng::new(1).normal_vec(2 * 4 * 8 * 8),
        (2, 4, 8, 8),
        &DEV,
    )
    .unwrap();
    let context = Tensor::ones((2, 3, 16), DType::F32, &DEV).unwrap();
    let both = unet
        .forward_timesteps(&x, &[10.0, 500.0], &context, &Default::default())
        .unwrap();
    for (i, t) in [10.0, 500.0].into_iter().enumerate() {
        let row = unet
            .forward(
                &x.narrow(0, i, 1).unwrap(),
                t,
                &context.narrow(0, i, 1).unwrap(),
            )
            .unwrap();
        let diff = (both.narrow(0, i, 1).unwrap() - row)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        // Same arithmetic per row; only batched-matmul blocking can differ.
        assert!(diff < 1e-5, "row {i}: {diff}");
    }
    assert!(unet
        .forward_timesteps(&x, &[10.0], &context, &Default::default())
        .is_err());
}
