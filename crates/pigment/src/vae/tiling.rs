//! Tiled VAE decode and encode, as diffusers' `AutoencoderKL.enable_tiling()`
//! (diffusers/models/autoencoders/autoencoder_kl.py `tiled_decode`, `_tiled_encode`,
//! `blend_v`, `blend_h`): the input is cut into tiles of the VAE's native size
//! (`sample_size` pixels, `sample_size / f` latent cells) overlapping by a quarter, each tile
//! runs through the network alone, and each output tile is blended linearly into its upper and
//! left neighbours over a quarter tile before the tiles are cropped and joined. Peak memory is
//! that of one tile whatever the image size; the blend hides the seams.

use candle_core::Tensor;

use crate::error::Result;

/// When the VAE works in tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VaeTiling {
    /// Never: diffusers' default.
    #[default]
    Off,
    /// diffusers' `enable_tiling()`: whenever the input is larger than one tile on a side.
    On,
    /// Only for large images: from [`AUTO_TILING_PIXELS`] (1024 x 1024) pixels up, and only
    /// when the image is larger than one tile on a side. There the whole-image SD decoder's
    /// activations (128 channels at full resolution, several alive at once) pass 2 GB and grow
    /// with the area; smaller images decode whole, exactly as diffusers does by default.
    Auto,
}

impl std::str::FromStr for VaeTiling {
    type Err = crate::error::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "off" | "no" | "false" => Ok(Self::Off),
            "on" | "yes" | "true" => Ok(Self::On),
            "auto" => Ok(Self::Auto),
            _ => Err(crate::error::Error::invalid(format!(
                "--vae-tiling {s:?}: use auto, on or off"
            ))),
        }
    }
}

/// The image area from which [`VaeTiling::Auto`] tiles: 1024 x 1024 pixels.
pub const AUTO_TILING_PIXELS: usize = 1024 * 1024;

/// diffusers' `tile_overlap_factor`.
pub const TILE_OVERLAP_FACTOR: f64 = 0.25;

impl VaeTiling {
    /// Whether an image of `height` x `width` pixels is processed in tiles of `tile` pixels.
    pub fn applies(self, height: usize, width: usize, tile: usize) -> bool {
        match self {
            Self::Off => false,
            Self::On => height > tile || width > tile,
            Self::Auto => height * width >= AUTO_TILING_PIXELS && (height > tile || width > tile),
        }
    }
}

/// Linear blend of the last rows (`dim` 2) or columns (`dim` 3) of `a` into the first ones of
/// `b`: b[y] = a[-e + y] * (1 - y / e) + b[y] * (y / e) for y < e = min(extent, both sizes).
fn blend(a: &Tensor, b: &Tensor, extent: usize, dim: usize) -> Result<Tensor> {
    let e = extent.min(a.dim(dim)?).min(b.dim(dim)?);
    if e == 0 {
        return Ok(b.clone());
    }
    let mut shape = [1usize; 4];
    shape[dim] = e;
    // The weights as diffusers' Python floats are cast to the tensor's dtype.
    let ramp = |f: &dyn Fn(f64) -> f64| -> Result<Tensor> {
        let w: Vec<f32> = (0..e).map(|y| f(y as f64 / e as f64) as f32).collect();
        Ok(Tensor::from_vec(w, &shape[..], b.device())?.to_dtype(b.dtype())?)
    };
    let keep = ramp(&|t| 1.0 - t)?;
    let take = ramp(&|t| t)?;
    let a_tail = a.narrow(dim, a.dim(dim)? - e, e)?;
    let b_head = b.narrow(dim, 0, e)?;
    let head = (a_tail.broadcast_mul(&keep)? + b_head.broadcast_mul(&take)?)?;
    let rest = b.dim(dim)? - e;
    if rest == 0 {
        return Ok(head);
    }
    Ok(Tensor::cat(&[&head, &b.narrow(dim, e, rest)?], dim)?)
}

/// Runs `run` over tiles of `x` ([B, C, H, W]) of side `tile_in` at a stride of
/// `tile_in * (1 - overlap)`, blends the outputs (tile side `tile_out`) over
/// `tile_out * overlap` and joins their top-left `tile_out - blend` squares, in diffusers'
/// order (each tile is blended into its already-blended upper, then left, neighbour).
pub(crate) fn tiled(
    x: &Tensor,
    tile_in: usize,
    tile_out: usize,
    run: &dyn Fn(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let stride = ((tile_in as f64 * (1.0 - TILE_OVERLAP_FACTOR)) as usize).max(1);
    let extent = (tile_out as f64 * TILE_OVERLAP_FACTOR) as usize;
    let limit = tile_out - extent;
    let (_, _, h, w) = x.dims4()?;
    let mut rows: Vec<Vec<Tensor>> = Vec::new();
    for i in (0..h).step_by(stride) {
        let mut row = Vec::new();
        for j in (0..w).step_by(stride) {
            let tile = x
                .narrow(2, i, tile_in.min(h - i))?
                .narrow(3, j, tile_in.min(w - j))?
                .contiguous()?;
            row.push(run(&tile)?);
        }
        rows.push(row);
    }
    for i in 0..rows.len() {
        for j in 0..rows[i].len() {
            let mut tile = rows[i][j].clone();
            if i > 0 {
                tile = blend(&rows[i - 1][j], &tile, extent, 2)?;
            }
            if j > 0 {
                tile = blend(&rows[i][j - 1], &tile, extent, 3)?;
            }
            rows[i][j] = tile;
        }
    }
    let crop = |t: &Tensor| -> Result<Tensor> {
        let (th, tw) = (t.dim(2)?.min(limit), t.dim(3)?.min(limit));
        Ok(t.narrow(2, 0, th)?.narrow(3, 0, tw)?)
    };
    let joined_rows = rows
        .iter()
        .map(|row| {
            let parts = row.iter().map(crop).collect::<Result<Vec<_>>>()?;
            Ok(Tensor::cat(&parts, 3)?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&joined_rows, 2)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn values(t: &Tensor) -> Vec<f32> {
        t.to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn rule_of_each_mode() {
        assert!(!VaeTiling::Off.applies(4096, 4096, 512));
        assert!(VaeTiling::On.applies(513, 64, 512));
        assert!(!VaeTiling::On.applies(512, 512, 512));
        assert!(!VaeTiling::Auto.applies(768, 768, 512));
        assert!(!VaeTiling::Auto.applies(1024, 1024, 1024));
        assert!(VaeTiling::Auto.applies(1024, 1024, 512));
        assert!(VaeTiling::Auto.applies(2048, 512, 512));
    }

    #[test]
    fn blend_ramps_from_a_to_b() -> Result<()> {
        let a = Tensor::ones((1, 1, 4, 2), DType::F32, &Device::Cpu)?;
        let b = Tensor::zeros((1, 1, 4, 2), DType::F32, &Device::Cpu)?;
        let out = blend(&a, &b, 2, 2)?;
        // rows: y=0 all a, y=1 half, then b untouched.
        assert_eq!(values(&out), vec![1.0, 1.0, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0]);
        Ok(())
    }

    /// With an identity "network", tiling reproduces the input exactly: the blends mix equal
    /// values and the crops tile the plane without gaps or overlaps.
    #[test]
    fn identity_tiles_rebuild_the_input() -> Result<()> {
        let x = Tensor::arange(0f32, 2.0 * 21.0 * 19.0, &Device::Cpu)?.reshape((1, 2, 21, 19))?;
        let out = tiled(&x, 8, 8, &|t: &Tensor| Ok(t.clone()))?;
        assert_eq!(out.dims(), x.dims());
        assert_eq!(values(&out), values(&x));
        Ok(())
    }
}
