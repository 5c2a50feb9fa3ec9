//! Pigment: a text-to-image diffusion engine.
//!
//! The library is the engine; the `pigment` CLI and the HTTP server are front ends of it.
//! See docs/ARCHITECTURE.md for the map of modules.

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
