//! Tensor <-> 8-bit RGB, the way diffusers' `VaeImageProcessor` does it
//! (diffusers/image_processor.py: `denormalize`, `numpy_to_pil`, `pil_to_numpy`, `normalize`).
//! The arithmetic is done in f32 in the same order as there, so every byte matches.

use crate::error::{Error, Result};
use ::image::RgbImage;
use candle_core::{DType, Device, Tensor};

/// Decoded NCHW images in [-1, 1] (any dtype or device; a CHW tensor counts as one image) to
/// 8-bit RGB, as `VaeImageProcessor.postprocess(output_type="pil")`:
/// `(x * 0.5 + 0.5).clamp(0, 1)`, then `(v * 255).round()` to u8, where numpy's `round`
/// rounds halves to even. Out-of-range values clamp; NaN becomes 0.
pub fn tensor_to_images(t: &Tensor) -> Result<Vec<RgbImage>> {
    let t = match t.rank() {
        3 => t.unsqueeze(0)?,
        4 => t.clone(),
        _ => {
            return Err(Error::invalid(format!(
                "expected images as an N x 3 x H x W tensor, got shape {:?}",
                t.dims()
            )))
        }
    };
    let (n, c, h, w) = t.dims4()?;
    if c != 3 {
        return Err(Error::invalid(format!(
            "expected 3 colour channels (N x 3 x H x W), got shape {:?}",
            t.dims()
        )));
    }
    let values = t
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let plane = h * w;
    let mut images = Vec::with_capacity(n);
    for chw in values.chunks_exact(3 * plane) {
        let mut bytes = Vec::with_capacity(3 * plane);
        for p in 0..plane {
            for channel in 0..3 {
                bytes.push(to_u8(chw[channel * plane + p]));
            }
        }
        let image = RgbImage::from_raw(w as u32, h as u32, bytes)
            .ok_or_else(|| Error::Image(format!("cannot make a {w}x{h} image")))?;
        images.push(image);
    }
    Ok(images)
}

/// One value of a decoded image to a byte: denormalize, clamp, scale, round half to even.
fn to_u8(x: f32) -> u8 {
    let v = (x * 0.5 + 0.5).clamp(0.0, 1.0);
    // `as u8` saturates and maps NaN to 0, as numpy's cast does on x86.
    (v * 255.0).round_ties_even() as u8
}

/// An 8-bit RGB image to a 1 x 3 x H x W f32 tensor in [-1, 1], as
/// `VaeImageProcessor.preprocess` does for an image already of the right size:
/// `x / 255` (numpy, f32), then `2 * x - 1`. No resizing happens here.
pub fn image_to_tensor(img: &RgbImage, device: &Device) -> Result<Tensor> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let plane = h * w;
    let mut chw = vec![0f32; 3 * plane];
    for (p, pixel) in img.pixels().enumerate() {
        for channel in 0..3 {
            let unit = pixel.0[channel] as f32 / 255.0;
            chw[channel * plane + p] = 2.0 * unit - 1.0;
        }
    }
    Ok(Tensor::from_vec(chw, (1, 3, h, w), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_of_the_range_and_beyond_clamp() {
        assert_eq!(to_u8(-1.0), 0);
        assert_eq!(to_u8(1.0), 255);
        assert_eq!(to_u8(-7.0), 0);
        assert_eq!(to_u8(7.0), 255);
        assert_eq!(to_u8(f32::NAN), 0);
        // 0 -> 0.5 -> 127.5, a tie: to even.
        assert_eq!(to_u8(0.0), 128);
    }

    #[test]
    fn layout_is_nchw_to_rows_of_rgb() {
        // One 1x2 image: pixel 0 is red, pixel 1 is blue.
        let data = [1f32, -1., -1., -1., -1., 1.];
        let t = Tensor::from_slice(&data, (1, 3, 1, 2), &Device::Cpu).unwrap();
        let images = tensor_to_images(&t).unwrap();
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].as_raw(), &vec![255, 0, 0, 0, 0, 255]);
    }

    #[test]
    fn wrong_shapes_are_refused() {
        let t = Tensor::zeros((1, 4, 2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(tensor_to_images(&t)
            .unwrap_err()
            .to_string()
            .contains("3 colour"));
        let t = Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(tensor_to_images(&t).is_err());
    }

    #[test]
    fn image_to_tensor_and_back_is_lossless() {
        let img = RgbImage::from_fn(5, 3, |x, y| {
            ::image::Rgb([(x * 50) as u8, (y * 90) as u8, 7])
        });
        let t = image_to_tensor(&img, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[1, 3, 3, 5]);
        assert_eq!(tensor_to_images(&t).unwrap()[0], img);
    }
}
