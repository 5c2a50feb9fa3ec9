//! Hot-path tensor operations that candle's CPU backend runs slowly, rewritten for CPU f32
//! (other devices and dtypes fall back to candle).

mod attention;
mod attention_packed;
mod buffers;
mod channel;
mod conv2d;
pub mod conv2d_train;
mod conv_kernel;
mod conv_strided;
mod conv_weight_grad;
mod dense;
mod fast_exp;
mod geglu;
mod gemm;
mod group_norm;
pub mod layer_adapter;
mod layer_norm;
mod linear;
mod packed_gemm;
pub mod packed_weight;
mod softmax;
mod token_projection;
mod winograd;

pub use attention::{fused_attention, set_fast_attention, FusedAttention};
pub use channel::{add_channel_bias, scale_channels};
pub use conv2d::{conv2d, set_fast_conv, Conv2d};
pub use geglu::geglu;
pub use group_norm::{group_norm, set_fast_group_norm, GroupNorm};
pub use layer_norm::{layer_norm, LayerNorm};
pub use linear::{linear, linear_no_bias, Linear};
pub use packed_weight::{WeightFormat, WeightFormatScope};
pub use softmax::softmax_last_dim;
pub use token_projection::{map_to_tokens, tokens_to_map};
pub use winograd::set_winograd_conv;

/// Deterministic values in [-1, 1) for the kernels' unit tests (a small LCG: no test depends
/// on a random seed).
#[cfg(test)]
pub(crate) fn test_values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// max |a - b| over all elements, for the kernels' unit tests.
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
        .expect("two f32 tensors of one shape")
}
