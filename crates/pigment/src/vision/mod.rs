//! CLIP's vision side: the vision transformer (transformers' `CLIPVisionModel` names), the dual
//! encoder with its projections and logit scale (`CLIPModel`), and CLIP's input normalisation.
//! Used to train Pigment's own CLIP and, with real CLIP weights, for zero-shot scores.

mod clip_model;
pub mod config;
mod encoder;
mod model;
mod preprocess;

pub use clip_model::{eos_pooled, l2_normalize, ClipModel};
pub use config::{ClipConfig, ClipVisionConfig};
pub use model::{ClipVisionModel, ClipVisionOutput};
pub use preprocess::{normalize, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD};
