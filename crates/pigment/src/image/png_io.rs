//! PNG files with the generation parameters in a text chunk keyed `parameters`: where
//! AUTOMATIC1111 puts its infotext (PIL's `PngInfo.add_text`) and where A1111, Forge, ComfyUI
//! and image sites look for it.

use super::atomic_write::write_atomically;
use crate::error::{Error, Result};
use ::image::RgbImage;
use std::fs::File;
use std::io::{BufReader, Write};
use std::path::Path;

/// The text-chunk keyword A1111 uses for its infotext.
pub const PARAMETERS_KEY: &str = "parameters";

/// Encodes `img` as an 8-bit RGB PNG into `out`, with `parameters` (if any) in a `tEXt` chunk,
/// or an `iTXt` (UTF-8) chunk when it is not Latin-1, as PIL does.
pub fn encode_png(img: &RgbImage, parameters: Option<&str>, out: &mut dyn Write) -> Result<()> {
    let png_error = |e: png::EncodingError| Error::Image(format!("PNG encoding failed: {e}"));
    let mut encoder = png::Encoder::new(out, img.width(), img.height());
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    if let Some(text) = parameters {
        let key = PARAMETERS_KEY.to_string();
        if text.chars().all(|c| (c as u32) <= 0xff) {
            encoder.add_text_chunk(key, text.to_string())
        } else {
            encoder.add_itxt_chunk(key, text.to_string())
        }
        .map_err(png_error)?;
    }
    let mut writer = encoder.write_header().map_err(png_error)?;
    writer.write_image_data(img.as_raw()).map_err(png_error)?;
    writer.finish().map_err(png_error)
}

/// Writes `img` to `path` as PNG with optional infotext, atomically (see
/// [`super::write_atomically`]). An existing file is an error unless `overwrite`.
pub fn save_png(
    path: &Path,
    img: &RgbImage,
    parameters: Option<&str>,
    overwrite: bool,
) -> Result<()> {
    write_atomically(path, overwrite, |out| encode_png(img, parameters, out))
}

/// The `parameters` text of a PNG (tEXt, zTXt or iTXt, before or after the image data), or
/// None if it has none.
pub fn read_png_parameters(path: &Path) -> Result<Option<String>> {
    let file = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::Image(format!("{}: no such file", path.display())),
        _ => Error::io(path, e),
    })?;
    let not_png = |e: png::DecodingError| {
        Error::Image(format!(
            "{} is not a readable PNG file: {e}",
            path.display()
        ))
    };
    let mut reader = png::Decoder::new(BufReader::new(file))
        .read_info()
        .map_err(not_png)?;
    if let Some(text) = find_parameters(reader.info()).map_err(not_png)? {
        return Ok(Some(text));
    }
    // Text chunks after the image data are only seen once the rest is read.
    reader.finish().map_err(not_png)?;
    find_parameters(reader.info()).map_err(not_png)
}

fn find_parameters(info: &png::Info) -> Result<Option<String>, png::DecodingError> {
    if let Some(chunk) = info
        .uncompressed_latin1_text
        .iter()
        .find(|c| c.keyword == PARAMETERS_KEY)
    {
        return Ok(Some(chunk.text.clone()));
    }
    if let Some(chunk) = info
        .compressed_latin1_text
        .iter()
        .find(|c| c.keyword == PARAMETERS_KEY)
    {
        return chunk.get_text().map(Some);
    }
    if let Some(chunk) = info.utf8_text.iter().find(|c| c.keyword == PARAMETERS_KEY) {
        return chunk.get_text().map(Some);
    }
    Ok(None)
}
