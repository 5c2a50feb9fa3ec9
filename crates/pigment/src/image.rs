//! Images in and out: tensor <-> 8-bit RGB exactly as diffusers converts them, loading input
//! images, PNG files that carry their generation parameters (AUTOMATIC1111's "infotext"), and
//! writes that never leave a half-written file or overwrite one unasked.

mod atomic_write;
mod convert;
mod infotext;
mod load;
mod png_io;

pub use atomic_write::write_atomically;
pub use convert::{image_to_tensor, tensor_to_images};
pub use infotext::GenerationParameters;
pub use load::load_image;
pub use png_io::{encode_png, read_png_parameters, save_png, PARAMETERS_KEY};
