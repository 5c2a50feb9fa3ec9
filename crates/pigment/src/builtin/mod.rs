//! The built-in model's synthetic world: a vocabulary of coloured shapes, a deterministic
//! renderer and captioner that make an endless text-image dataset from a seed, held-out
//! (colour, shape) pairs for measuring compositional generalisation, and an analyser that
//! judges any image against a caption (the evaluation of the built-in model).
//!
//! ```
//! use pigment::builtin::{analyse, parse_caption, Dataset};
//! let (image, caption, _scene) = Dataset::train(7).sample(0);
//! let query = parse_caption(&caption).expect("captions are in the grammar");
//! assert!(analyse(&image, &query).all_correct());
//! ```

mod analyse;
mod background;
mod captions;
mod counterfactual;
mod dataset;
mod degrade;
mod detect;
pub mod eval;
mod generate;
mod model;
mod prng;
mod query;
pub mod recipe;
mod render;
mod shapes;
mod world;

pub use analyse::{analyse, judge, Verdict, RELATION_MARGIN};
pub use captions::{caption, caption_for, clear_relation, vocabulary};
pub use counterfactual::Change;
pub use dataset::{Dataset, Sample, MAX_SIZE, MIN_SIZE};
pub use degrade::{degrade, Degradation};
pub use detect::{classify, perceive, shape_features, Detection, Perception, ShapeFeatures};
pub use generate::{Category, Split};
pub use model::{builtin_model_dir, BUILTIN_MODEL_DIR, BUILTIN_MODEL_NAME};
pub use prng::SplitMix64;
pub use query::{parse_caption, BackgroundQuery, ObjectQuery, Query, RelationQuery, MAX_OBJECTS};
pub use render::render;
pub use world::{
    is_held_out, Background, Colour, Halves, Object, Relation, Scene, Shape, Size, HELD_OUT,
    MIN_CONTRAST,
};
