//! CPU f32 3x3 stride-1 convolution by Winograd's minimal filtering (Lavin & Gray 2015, "Fast
//! Algorithms for Convolutional Neural Networks", eq. 8): an m x m output tile is
//! Y = A^T [ (G g G^T) .* (B^T d B) ] A for a 3x3 kernel g and the (m+2) x (m+2) input tile d.
//! Summed over input channels, the element-wise product becomes one GEMM per tile element:
//! M[e] [out, tiles] = U[e] [out, in] x V[e] [in, tiles], (m+2)^2 GEMMs that do 9 / (m+2)^2 * m^2
//! of the direct convolution's multiplies (F(4x4, 3x3): 36 GEMMs, 4x fewer; F(2x2, 3x3): 16, 2.25x).
//!
//! Memory stays bounded: the transformed weights U ((m+2)^2 / 9 times the weights) are never
//! kept between calls, nor whole: each task transforms the weights of its chunk of output
//! channels right before its GEMMs. The transformed input V is built for a block of whole tile
//! rows within a budget, so a 512x512 VAE layer is a few blocks (see [`Blocking`]).
//!
//! The transforms are straight-line formulas applied to whole rows (over pixels, tiles or input
//! channels), which the compiler vectorises; they are compiled for AVX-512 and AVX2 as well and
//! picked at run time.
//!
//! Rounding: the F(4x4) transforms mix values with weights up to 5 (B) and 8 (A), so its f32
//! result has a larger error than the direct sum's: on SD-like data ~11x the direct kernel's
//! rms error (3e-6 of the output's rms) and 27-39x its max error; F(2x2) 1.4-1.7x (measured
//! in the tests below). Every parity suite passes with either tile forced on every conv.

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::Result;

use super::conv_kernel::ConvGeometry;

mod driver;
mod rows;
mod stride2;
#[cfg(test)]
mod tests;
mod tiles;

use driver::{run, Blocking};
pub(crate) use stride2::{applies as stride2_applies, conv2d_stride2_f32};
use tiles::{F2, F4};

static WINOGRAD: AtomicBool = AtomicBool::new(true);

/// Turns the Winograd path of `Conv2d`'s CPU f32 3x3 stride-1 convolutions on or off for the
/// whole process (on by default; `PIGMENT_WINOGRAD=0` in the environment turns it off too): for
/// before/after timings and for checking a suspicion against the implicit-GEMM kernel.
pub fn set_winograd_conv(enabled: bool) {
    WINOGRAD.store(enabled, Ordering::Relaxed);
}

/// Which tile sizes `Conv2d` uses (`PIGMENT_WINOGRAD`: `0`/`off` none, `f2` / `f4` that tile
/// for every 3x3 stride-1 conv whatever its size (for checking a suspicion); unset: by size,
/// see [`winograd_for`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Allowed {
    Off,
    AlwaysF2,
    AlwaysF4,
    BySize,
}

fn allowed() -> Allowed {
    static ENV: std::sync::OnceLock<Allowed> = std::sync::OnceLock::new();
    let env = *ENV.get_or_init(|| {
        match std::env::var("PIGMENT_WINOGRAD")
            .unwrap_or_default()
            .to_ascii_lowercase()
            .as_str()
        {
            "0" | "off" | "false" => Allowed::Off,
            "f2" | "2" => Allowed::AlwaysF2,
            "f4" | "4" => Allowed::AlwaysF4,
            _ => Allowed::BySize,
        }
    });
    if WINOGRAD.load(Ordering::Relaxed) {
        env
    } else {
        Allowed::Off
    }
}

/// Whether Winograd paths may run at all (not turned off by [`set_winograd_conv`] or
/// `PIGMENT_WINOGRAD=0`).
fn enabled() -> bool {
    allowed() != Allowed::Off
}

/// The Winograd tile size for this call of `Conv2d`'s fast path, or None for the direct
/// kernel. Only 3x3 stride 1. The weight transform costs the same for any image size while
/// the GEMMs scale with the tile count, so small images go to the smaller tile or the direct
/// kernel. Thresholds from examples/conv_bench.rs (2 threads, AVX-512), SD1.5's shapes:
/// F(4x4) wins from 32 4x4 tiles per call (UNet 1280@16 at batch 2: 34 vs 57 ms direct);
/// below that F(2x2) wins from 32 2x2 tiles (1280@8 at batch 2: 15 vs 22 ms; 1280@16 at
/// batch 1: 20 vs 28 ms, F(4x4) 24 ms).
pub(crate) fn winograd_for(g: &ConvGeometry) -> Option<WinogradTile> {
    const MIN_TILES: usize = 32;
    if g.kernel != 3 || g.stride != 1 {
        return None;
    }
    let tiles = |m: usize| {
        let (oh, ow) = (g.height + 2 * g.padding, g.width + 2 * g.padding);
        g.batch * oh.saturating_sub(2).div_ceil(m) * ow.saturating_sub(2).div_ceil(m)
    };
    match allowed() {
        Allowed::Off => None,
        Allowed::AlwaysF2 => Some(WinogradTile::F2),
        Allowed::AlwaysF4 => Some(WinogradTile::F4),
        Allowed::BySize if tiles(4) >= MIN_TILES => Some(WinogradTile::F4),
        Allowed::BySize if tiles(2) >= MIN_TILES => Some(WinogradTile::F2),
        Allowed::BySize => None,
    }
}

/// The output tile size m of F(m x m, 3 x 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WinogradTile {
    /// F(2x2, 3x3): 4x4 input tiles, 16 GEMMs, transforms with weights 0, +-1, 1/2.
    F2,
    /// F(4x4, 3x3): 6x6 input tiles, 36 GEMMs, interpolation points 0, +-1, +-2, infinity.
    F4,
}

/// y = conv2d(x, W) + bias for a 3x3 kernel at stride 1 (any padding), NCHW f32 `x`
/// (contiguous), W tap-major [3, 3, out, in] as for [`super::conv_kernel::conv2d_f32`], whose
/// result it matches up to rounding. Returns the [batch, out, oh, ow] output, contiguous.
pub(crate) fn winograd_conv2d_f32(
    x: &[f32],
    taps: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeometry,
    tile: WinogradTile,
) -> Result<Vec<f32>> {
    winograd_with(x, taps, bias, g, tile, Blocking::from_env())
}

fn winograd_with(
    x: &[f32],
    taps: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeometry,
    tile: WinogradTile,
    blocking: Blocking,
) -> Result<Vec<f32>> {
    match tile {
        WinogradTile::F2 => run::<F2>(x, taps, bias, g, blocking),
        WinogradTile::F4 => run::<F4>(x, taps, bias, g, blocking),
    }
}
