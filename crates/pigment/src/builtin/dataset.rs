//! The synthetic dataset: sample `index` is a pure function of (seed, split, size, categories,
//! index), so samples can be drawn in any order, in parallel, and reproduced exactly.

use ::image::RgbImage;

use super::captions::caption_for;
use super::counterfactual::{counterfactual, Change};
use super::generate::{generate, Category, Split};
use super::prng::SplitMix64;
use super::render::render;
use super::world::Scene;
use crate::error::{Error, Result};

/// Smallest and largest supported render sizes.
pub const MIN_SIZE: u32 = 16;
pub const MAX_SIZE: u32 = 1024;

/// One dataset item.
#[derive(Debug, Clone)]
pub struct Sample {
    pub image: RgbImage,
    pub caption: String,
    pub scene: Scene,
    pub category: Category,
}

#[derive(Debug, Clone)]
pub struct Dataset {
    seed: u64,
    size: u32,
    split: Split,
    categories: Vec<Category>,
}

impl Dataset {
    /// The training split at 64x64: never contains a held-out (colour, shape) pair.
    pub fn train(seed: u64) -> Self {
        Self::new(seed, Split::Train)
    }

    /// The evaluation split at 64x64: every scene's first object is a held-out pair.
    pub fn eval(seed: u64) -> Self {
        Self::new(seed, Split::Eval)
    }

    fn new(seed: u64, split: Split) -> Self {
        Self {
            seed,
            size: 64,
            split,
            categories: Category::ALL.to_vec(),
        }
    }

    /// Render at `size x size` pixels.
    pub fn with_size(mut self, size: u32) -> Result<Self> {
        if !(MIN_SIZE..=MAX_SIZE).contains(&size) {
            return Err(Error::invalid(format!(
                "builtin dataset size {size} is out of range: choose {MIN_SIZE} to {MAX_SIZE} pixels"
            )));
        }
        self.size = size;
        Ok(self)
    }

    /// Draw only these categories (in their training proportions).
    pub fn with_categories(mut self, categories: &[Category]) -> Result<Self> {
        if categories.is_empty() {
            return Err(Error::invalid(
                "builtin dataset needs at least one category: pass e.g. &Category::ALL",
            ));
        }
        self.categories = categories.to_vec();
        Ok(self)
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn size(&self) -> u32 {
        self.size
    }

    pub fn split(&self) -> Split {
        self.split
    }

    /// (image, caption, scene) of item `index`.
    pub fn sample(&self, index: u64) -> (RgbImage, String, Scene) {
        let s = self.get(index);
        (s.image, s.caption, s.scene)
    }

    /// Item `index` with its category.
    pub fn get(&self, index: u64) -> Sample {
        let (scene, caption, category) = self.describe(index);
        Sample {
            image: render(&scene, self.size),
            caption,
            scene,
            category,
        }
    }

    /// Scene, caption and category of item `index`, without rendering.
    pub fn describe(&self, index: u64) -> (Scene, String, Category) {
        let (scene, category, mut caption_rng) = self.scene(index);
        let caption = caption_for(&scene, category, &mut caption_rng);
        (scene, caption, category)
    }

    /// Item `index` and a hard negative for it: the same scene with one fact changed (shape,
    /// size, mirrored relation or one object fewer), captioned with the same template choices
    /// ([`counterfactual`]). The negative is as deterministic as the item.
    pub fn contrast_pair(&self, index: u64) -> (Sample, Sample, Change) {
        let (scene, category, caption_rng) = self.scene(index);
        let caption = caption_for(&scene, category, &mut caption_rng.clone());
        let mut rng = SplitMix64::for_item(self.seed, self.stream() + 2, index);
        let (negative, negative_caption, change) = counterfactual(
            &scene,
            category,
            self.split,
            &caption,
            &caption_rng,
            &mut rng,
        );
        let sample = |scene: Scene, caption: String| Sample {
            image: render(&scene, self.size),
            caption,
            scene,
            category,
        };
        (
            sample(scene, caption),
            sample(negative, negative_caption),
            change,
        )
    }

    fn stream(&self) -> u64 {
        match self.split {
            Split::Train => 1,
            Split::Eval => 2,
        }
    }

    /// The scene and category of item `index`, and the generator's state for its caption.
    fn scene(&self, index: u64) -> (Scene, Category, SplitMix64) {
        let mut rng = SplitMix64::for_item(self.seed, self.stream(), index);
        let category = self.pick_category(&mut rng);
        let scene = generate(category, self.split, &mut rng);
        (scene, category, rng)
    }

    fn pick_category(&self, rng: &mut SplitMix64) -> Category {
        let total: u32 = self.categories.iter().map(|c| c.weight()).sum();
        let mut ticket = rng.below(total.max(1) as usize) as u32;
        for &c in &self.categories {
            if ticket < c.weight() {
                return c;
            }
            ticket -= c.weight();
        }
        self.categories[0]
    }
}
