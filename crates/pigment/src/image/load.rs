//! Reading input images (img2img, inpainting, control images).

use crate::error::{Error, Result};
use ::image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};
use std::path::Path;

/// Reads a PNG or JPEG as 8-bit RGB, like `diffusers.utils.load_image`: the EXIF orientation
/// is applied (`ImageOps.exif_transpose`) and alpha is dropped (`convert("RGB")`). The format
/// is detected from the content, not the file name.
pub fn load_image(path: &Path) -> Result<RgbImage> {
    let shown = path.display();
    let reader = ImageReader::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::Image(format!(
            "{shown}: no such file; check the path of the input image"
        )),
        _ => Error::io(path, e),
    })?;
    let reader = reader
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    let not_an_image = |e: ::image::ImageError| {
        Error::Image(format!(
            "{shown} is not an image Pigment can read (PNG or JPEG): {e}"
        ))
    };
    let mut decoder = reader.into_decoder().map_err(not_an_image)?;
    let orientation = decoder.orientation().map_err(not_an_image)?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(not_an_image)?;
    img.apply_orientation(orientation);
    Ok(img.to_rgb8())
}
