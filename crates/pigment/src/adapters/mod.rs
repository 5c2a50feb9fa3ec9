//! Adapters applied to a checkpoint's weights at load time.
//!
//! LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", eq. 3) learns a
//! low-rank update of a weight; Pigment merges it into the weight as the model asks for it:
//! `W' = W + scale * (alpha / rank) * up @ down`, several LoRAs at once, each with its own scale.
//! The kohya / AUTOMATIC1111 and diffusers / PEFT file layouts are understood (lora_keys.rs);
//! keys that match no module are reported, never dropped silently.
//!
//! In run-time mode (lora_runtime.rs, `LoraMode::Runtime`) the same updates are computed in each
//! forward of the adapted layers instead, `x W^T + scale * (x A^T) B^T`, so a loaded model can
//! switch or re-weight its LoRAs (`StableDiffusion::set_loras`).
//!
//! Hypernetworks (hypernetwork.rs): AUTOMATIC1111's per-width MLPs on the attention context,
//! applied at run time through the UNet's attention hook (`StableDiffusion::set_hypernetworks`).
//! Prompt tags `<lora:name:w>` / `<hypernet:name:w>` are cut out by extra_networks.rs.
//!
//! Textual inversion (textual_inversion.rs) loads learned token vectors that prompts call up by
//! name; `StableDiffusion::add_textual_inversion` puts them into the text encoder.

mod extra_networks;
mod hypernetwork;
mod lora;
mod lora_keys;
mod lora_merge;
mod lora_runtime;
mod textual_inversion;

pub use extra_networks::{find_named_file, parse_extra_networks, ExtraNetworkTag};
pub use hypernetwork::{Hypernetwork, HypernetworkStack};
pub use lora::{LoraReport, LoraSet};
pub(crate) use lora_runtime::{with_runtime_slots, SlotSink};
pub use lora_runtime::{LoraMode, RuntimeLoras};
pub use textual_inversion::{
    load_textual_inversion, load_textual_inversion_dir, TextualInversion, MAX_VECTORS,
};
