//! Pipelines: thin compositions of the parts (text encoder, denoiser, guidance, sampler, VAE).
//! A pipeline chooses and wires components; it holds no numerics of its own.

pub mod conditioning;
pub mod controlnet;
pub mod deferred;
pub mod img2img;
pub mod inpaint;
pub mod instruct_pix2pix;
pub mod low_memory;
pub mod multidiffusion;
pub mod outpaint;
pub mod prompt;
mod prompt_a1111;
pub mod stable_diffusion;
pub mod textual_inversion;
pub mod txt2img;

pub use conditioning::{prompt_warnings, PromptSyntax, ScheduledConditioning};
pub use controlnet::{control_image_tensor, ControlNetRequest, ControlNetUnit};
pub use deferred::ComponentSource;
pub use img2img::Img2ImgRequest;
pub use inpaint::InpaintRequest;
pub use instruct_pix2pix::InstructPix2PixRequest;
pub use multidiffusion::PanoramaRequest;
pub use outpaint::{OutpaintPadding, OutpaintRequest};
pub use stable_diffusion::{LoadOptions, StableDiffusion};
pub use txt2img::{Progress, Txt2ImgOutput, Txt2ImgRequest};
