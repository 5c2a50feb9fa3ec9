//! Evaluation of a text-to-image model on the built-in world: generate images for captions the
//! dataset's own captioner wrote, judge each with the analyser (per asked attribute), and
//! optionally measure the CLIP score, per category and per kind of (colour, shape) pairs: pairs
//! seen in training, and the held-out pairs that test compositional generalisation.
//!
//! Scoring is separate from generation ([`score_images`]), so any images can be judged: the
//! rendered ground truth scores (nearly) 100%, which is the ceiling a model can reach.
//!
//! ```
//! use pigment::builtin::eval::{eval_prompts, score_images};
//! use pigment::builtin::render;
//! let prompts = eval_prompts(1).unwrap();
//! let images: Vec<_> = prompts.iter().map(|p| render(&p.scene, 64)).collect();
//! let items: Vec<_> = prompts.iter().zip(&images).map(|(p, i)| (p, 0, i)).collect();
//! let report = score_images(&items, None).unwrap();
//! assert_eq!(report.overall.images, prompts.len());
//! ```

mod clip_score;
mod report;

use std::time::Instant;

use ::image::RgbImage;

pub use clip_score::ClipScorer;
pub use report::{EvalReport, GroupReport, ImageResult, Tally, ATTRIBUTES};

use super::dataset::Dataset;
use super::generate::Category;
use super::query::{parse_caption, Query};
use super::world::Scene;
use crate::error::{Error, Result};
use crate::image::tensor_to_images;
use crate::pipelines::{StableDiffusion, Txt2ImgRequest};
use crate::samplers::SamplerKind;

/// Seed of the training-split dataset that the "seen pairs" prompts come from. Training must
/// draw its data with another seed, so that these exact scenes were never trained on (their
/// colour-shape pairs were).
pub const SEEN_PROMPTS_SEED: u64 = 0x5EE0_E7A1;
/// Seed of the evaluation-split dataset that the held-out prompts come from.
pub const HELD_OUT_PROMPTS_SEED: u64 = 0x4E1D_0E7A;

/// Whether a prompt's first object is a (colour, shape) pair the training split contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pairs {
    /// From `Dataset::train`: every pair was seen in training.
    Seen,
    /// From `Dataset::eval`: the first object is a held-out pair (see `world::HELD_OUT`).
    HeldOut,
}

impl Pairs {
    pub const ALL: [Pairs; 2] = [Pairs::Seen, Pairs::HeldOut];

    pub fn name(self) -> &'static str {
        match self {
            Pairs::Seen => "seen",
            Pairs::HeldOut => "held-out",
        }
    }
}

/// One evaluation prompt: a caption from the dataset, what it asks, and the scene it describes
/// (whose rendering is the ground truth).
#[derive(Debug, Clone)]
pub struct EvalPrompt {
    pub category: Category,
    pub pairs: Pairs,
    pub caption: String,
    pub query: Query,
    pub scene: Scene,
}

/// How to evaluate.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    /// Captions per category and per kind of pairs (so 12 x this many prompts in all).
    pub prompts_per_category: usize,
    /// One image per prompt and seed.
    pub seeds: Vec<u64>,
    pub steps: usize,
    pub cfg_scale: f64,
    /// Guidance rescale phi ([`Txt2ImgRequest::guidance_rescale`]; 0: plain guidance).
    pub guidance_rescale: f64,
    pub sampler: SamplerKind,
    pub width: usize,
    pub height: usize,
}

impl Default for EvalConfig {
    /// 8 prompts per category, seeds 0, 1, 2, 20 Euler-ancestral steps at CFG 7.5, 64x64 (the
    /// dataset's resolution).
    fn default() -> Self {
        Self {
            prompts_per_category: 8,
            seeds: vec![0, 1, 2],
            steps: 20,
            cfg_scale: 7.5,
            guidance_rescale: 0.0,
            sampler: SamplerKind::EulerAncestral,
            width: 64,
            height: 64,
        }
    }
}

impl EvalConfig {
    /// The text-to-image request of one evaluation image.
    pub fn request(&self, caption: &str, seed: u64) -> Txt2ImgRequest {
        Txt2ImgRequest {
            prompt: caption.to_string(),
            steps: self.steps,
            cfg_scale: self.cfg_scale,
            guidance_rescale: self.guidance_rescale,
            sampler: self.sampler,
            seed,
            width: self.width,
            height: self.height,
            batch_size: 1,
            ..Txt2ImgRequest::default()
        }
    }

    /// Reject settings that would evaluate nothing, with the fix in the message.
    pub fn validate(&self) -> Result<()> {
        if self.prompts_per_category == 0 {
            return Err(Error::invalid(
                "--prompts-per-category 0: evaluate at least one prompt per category",
            ));
        }
        if self.seeds.is_empty() {
            return Err(Error::invalid(
                "no seeds given: pass at least one, e.g. --seeds 0,1,2",
            ));
        }
        if !(0.0..=1.0).contains(&self.guidance_rescale) {
            return Err(Error::invalid(format!(
                "--guidance-rescale {}: must be between 0 (plain guidance) and 1",
                self.guidance_rescale
            )));
        }
        Ok(())
    }
}

/// One generated image, as the progress callback sees it.
pub struct EvalStep<'a> {
    /// Images generated so far (this one included) and in all.
    pub done: usize,
    pub total: usize,
    pub prompt: &'a EvalPrompt,
    pub seed: u64,
    pub image: &'a RgbImage,
    pub result: &'a ImageResult,
}

/// Called after every image; an error stops the evaluation (e.g. an image could not be saved).
pub type EvalProgress<'a> = &'a mut dyn FnMut(&EvalStep) -> Result<()>;

/// For each category, `per_category` captions with seen pairs then `per_category` with held-out
/// pairs, in `Category::ALL` order. Captions come from the dataset's own captioner; any the
/// parser cannot read are skipped (none are expected).
pub fn eval_prompts(per_category: usize) -> Result<Vec<EvalPrompt>> {
    let mut prompts = Vec::with_capacity(per_category * 2 * Category::ALL.len());
    for category in Category::ALL {
        for pairs in Pairs::ALL {
            let dataset = match pairs {
                Pairs::Seen => Dataset::train(SEEN_PROMPTS_SEED),
                Pairs::HeldOut => Dataset::eval(HELD_OUT_PROMPTS_SEED),
            }
            .with_categories(&[category])?;
            let limit = 50 * per_category as u64 + 50;
            let found: Vec<EvalPrompt> = (0..limit)
                .filter_map(|index| {
                    let (scene, caption, category) = dataset.describe(index);
                    let query = parse_caption(&caption)?;
                    Some(EvalPrompt {
                        category,
                        pairs,
                        caption,
                        query,
                        scene,
                    })
                })
                .take(per_category)
                .collect();
            if found.len() < per_category {
                return Err(Error::invalid(format!(
                    "only {} of {limit} {} {} captions parse; ask for fewer prompts per category",
                    found.len(),
                    pairs.name(),
                    category.name()
                )));
            }
            prompts.extend(found);
        }
    }
    Ok(prompts)
}

/// Judge one image against its prompt (and measure its CLIP score when a scorer is given).
pub fn score_image(
    prompt: &EvalPrompt,
    seed: u64,
    image: &RgbImage,
    clip: Option<&ClipScorer>,
) -> Result<ImageResult> {
    let clip_score = clip
        .map(|scorer| scorer.score(&prompt.caption, image))
        .transpose()?;
    Ok(ImageResult {
        category: prompt.category,
        pairs: prompt.pairs,
        caption: prompt.caption.clone(),
        seed,
        verdict: super::analyse(image, &prompt.query),
        clip_score,
    })
}

/// Judge supplied images: (prompt, seed it was made with, image). The report's time is the
/// scoring time.
pub fn score_images(
    items: &[(&EvalPrompt, u64, &RgbImage)],
    clip: Option<&ClipScorer>,
) -> Result<EvalReport> {
    let start = Instant::now();
    let results = items
        .iter()
        .map(|&(prompt, seed, image)| score_image(prompt, seed, image, clip))
        .collect::<Result<Vec<_>>>()?;
    Ok(EvalReport::new(results, start.elapsed()))
}

/// Generate one image per prompt (see [`eval_prompts`]) and seed with `model`, and score them.
/// The report's time covers generation and scoring.
pub fn evaluate(
    model: &StableDiffusion,
    clip: Option<&ClipScorer>,
    cfg: &EvalConfig,
    progress: EvalProgress,
) -> Result<EvalReport> {
    cfg.validate()?;
    let prompts = eval_prompts(cfg.prompts_per_category)?;
    let total = prompts.len() * cfg.seeds.len();
    let start = Instant::now();
    let mut results = Vec::with_capacity(total);
    for prompt in &prompts {
        for &seed in &cfg.seeds {
            let request = cfg.request(&prompt.caption, seed);
            let output = model.txt2img(&request, &mut |_, _| {})?;
            let image = tensor_to_images(&output.decoded)?
                .into_iter()
                .next()
                .ok_or_else(|| Error::Image("the pipeline returned no image".into()))?;
            let result = score_image(prompt, seed, &image, clip)?;
            progress(&EvalStep {
                done: results.len() + 1,
                total,
                prompt,
                seed,
                image: &image,
                result: &result,
            })?;
            results.push(result);
        }
    }
    Ok(EvalReport::new(results, start.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_cover_every_category_and_both_kinds_of_pairs() {
        let prompts = eval_prompts(3).unwrap();
        assert_eq!(prompts.len(), 3 * 2 * Category::ALL.len());
        for category in Category::ALL {
            for pairs in Pairs::ALL {
                let n = prompts
                    .iter()
                    .filter(|p| p.category == category && p.pairs == pairs)
                    .count();
                assert_eq!(n, 3, "{category:?} {pairs:?}");
            }
        }
        for p in prompts.iter().filter(|p| p.pairs == Pairs::HeldOut) {
            let first = &p.scene.objects[0];
            assert!(
                super::super::is_held_out(first.colour, first.shape),
                "{p:?}"
            );
        }
        for p in prompts.iter().filter(|p| p.pairs == Pairs::Seen) {
            assert!(p
                .scene
                .objects
                .iter()
                .all(|o| !super::super::is_held_out(o.colour, o.shape)));
        }
        // Deterministic: the same prompts every time.
        let again = eval_prompts(3).unwrap();
        assert!(prompts
            .iter()
            .zip(&again)
            .all(|(a, b)| a.caption == b.caption));
    }

    #[test]
    fn rejects_empty_configs() {
        let none = EvalConfig {
            prompts_per_category: 0,
            ..EvalConfig::default()
        };
        assert!(none.validate().is_err());
        let no_seeds = EvalConfig {
            seeds: vec![],
            ..EvalConfig::default()
        };
        assert!(no_seeds
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--seeds"));
    }
}
