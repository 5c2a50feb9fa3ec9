//! Pigment: a text-to-image diffusion engine.
//!
//! The library is the engine; the `pigment` CLI and the HTTP server are front ends of it.
//! See docs/ARCHITECTURE.md for the map of modules.
//!
//! ```no_run
//! use std::path::Path;
//! use pigment::pipelines::{LoadOptions, StableDiffusion, Txt2ImgRequest};
//!
//! # fn main() -> pigment::Result<()> {
//! let model = StableDiffusion::load(Path::new("sd15-folder"), &LoadOptions::default())?;
//! let request = Txt2ImgRequest {
//!     prompt: "a watercolor fox in the snow".into(),
//!     sampler: "dpmpp_2m".parse()?,
//!     karras: true,
//!     seed: 42,
//!     ..Txt2ImgRequest::default()
//! };
//! let output = model.txt2img(&request, &mut |step, total| eprintln!("{step}/{total}"))?;
//! for (i, image) in pigment::image::tensor_to_images(&output.decoded)?.iter().enumerate() {
//!     let parameters = request.parameters(&model.name).to_infotext();
//!     pigment::image::save_png(Path::new(&format!("fox-{i}.png")), image, Some(&parameters), false)?;
//! }
//! # Ok(())
//! # }
//! ```

pub mod adapters;
pub mod bench;
pub mod builtin;
pub mod control;
pub mod device;
pub mod error;
pub mod guidance;
pub mod image;
pub mod ops;
pub mod pipelines;
pub mod rng;
pub mod samplers;
pub mod schedule;
pub mod text;
pub mod train;
pub mod unet;
pub mod vae;
pub mod vision;
pub mod weights;

pub use error::{Error, Result};
