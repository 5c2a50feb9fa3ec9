//! FLOP counts of one forward pass, from the model's own config.
//!
//! Counted: every convolution, every linear layer (matrix multiply) and the two products of
//! every attention (Q K^T and softmax(.) V). One multiply-add is 2 FLOPs. Not counted:
//! normalisations, activations, softmax, residual adds, up/down-sampling copies and embedding
//! look-ups, which are memory-bound and small next to the products (under 2% of SD1.5's UNet).
//!
//! - conv k x k, C_in -> C_out, output H x W, batch B: 2 B C_in C_out k^2 H W
//! - linear d_in -> d_out over R rows (tokens x batch): 2 R d_in d_out
//! - attention, L_q queries, L_k keys, C = heads x head_dim channels, batch B: 4 B L_q L_k C
//!
//! The block structure follows diffusers: models/unets/unet_2d_condition.py (down blocks with
//! a stride-2 conv, the mid block, up blocks of `layers_per_block + 1` resnets fed the skips),
//! models/attention.py `BasicTransformerBlock` (self-attention, cross-attention, GEGLU
//! feed-forward with inner width 4C), models/autoencoders/vae.py `Decoder`, and transformers'
//! `CLIPEncoderLayer`.

use crate::error::Result;
use crate::text::ClipTextConfig;
use crate::unet::plan::{TransformerSpec, UNetPlan};
use crate::unet::UNet2DConditionConfig;
use crate::vae::AutoencoderKLConfig;

fn f(x: usize) -> f64 {
    x as f64
}

/// 2 B C_in C_out k^2 H W.
pub fn conv(batch: usize, cin: usize, cout: usize, k: usize, h: usize, w: usize) -> f64 {
    2.0 * f(batch) * f(cin) * f(cout) * f(k * k) * f(h) * f(w)
}

/// 2 R d_in d_out.
pub fn linear(rows: usize, d_in: usize, d_out: usize) -> f64 {
    2.0 * f(rows) * f(d_in) * f(d_out)
}

/// Q K^T and P V over all heads: 2 * (2 B L_q L_k C).
pub fn attention(batch: usize, lq: usize, lk: usize, channels: usize) -> f64 {
    4.0 * f(batch) * f(lq) * f(lk) * f(channels)
}

/// ResnetBlock2D: two 3x3 convs, the time-embedding projection, a 1x1 shortcut when the width
/// changes.
fn resnet(b: usize, cin: usize, cout: usize, h: usize, w: usize, temb: Option<usize>) -> f64 {
    let shortcut = if cin != cout {
        conv(b, cin, cout, 1, h, w)
    } else {
        0.0
    };
    conv(b, cin, cout, 3, h, w)
        + conv(b, cout, cout, 3, h, w)
        + shortcut
        + temb.map_or(0.0, |t| linear(b, t, cout))
}

/// Transformer2DModel: proj_in, `layers` BasicTransformerBlocks, proj_out (1x1 conv or linear:
/// the same count).
fn transformer(b: usize, c: usize, tokens: usize, spec: &TransformerSpec, ctx_len: usize) -> f64 {
    let n = b * tokens;
    let dc = spec.cross_attention_dim;
    let cross_kv = 2.0 * linear(b * ctx_len, dc, c);
    let self_attention = if spec.only_cross_attention {
        linear(n, c, c) + cross_kv + attention(b, tokens, ctx_len, c) + linear(n, c, c)
    } else {
        4.0 * linear(n, c, c) + attention(b, tokens, tokens, c)
    };
    let cross_attention =
        linear(n, c, c) + cross_kv + attention(b, tokens, ctx_len, c) + linear(n, c, c);
    // GEGLU: C -> 2 * 4C (value and gate), then 4C -> C.
    let feed_forward = linear(n, c, 8 * c) + linear(n, 4 * c, c);
    2.0 * linear(n, c, c) + spec.layers as f64 * (self_attention + cross_attention + feed_forward)
}

/// Stride-2 output size of a 3x3 conv with padding 1.
fn half(x: usize) -> usize {
    x.div_ceil(2)
}

/// One UNet2DConditionModel forward at batch `b` on an `h` x `w` latent with a text context
/// of `ctx_len` tokens.
pub fn unet(
    cfg: &UNet2DConditionConfig,
    b: usize,
    h: usize,
    w: usize,
    ctx_len: usize,
) -> Result<f64> {
    let plan = UNetPlan::new(cfg)?;
    let n = plan.down.len();
    let boc = &cfg.block_out_channels;
    let temb = Some(plan.time_embed_dim);
    let mut total = linear(b, plan.time_proj_dim, plan.time_embed_dim)
        + linear(b, plan.time_embed_dim, plan.time_embed_dim)
        + conv(b, cfg.in_channels, boc[0], cfg.conv_in_kernel, h, w)
        + conv(b, boc[0], cfg.out_channels, cfg.conv_out_kernel, h, w);

    let mut sizes = vec![(h, w)];
    let mut cin = boc[0];
    for (i, block) in plan.down.iter().enumerate() {
        let (bh, bw) = sizes[i];
        let c = block.out_channels;
        for layer in 0..block.layers {
            let from = if layer == 0 { cin } else { c };
            total += resnet(b, from, c, bh, bw, temb);
            if block.cross_attention {
                total += transformer(b, c, bh * bw, &block.transformer, ctx_len);
            }
        }
        if i + 1 < n {
            let (nh, nw) = (half(bh), half(bw));
            total += conv(b, c, c, 3, nh, nw);
            sizes.push((nh, nw));
        }
        cin = c;
    }

    let (mh, mw) = sizes[n - 1];
    let c_mid = boc[n - 1];
    total += resnet(b, c_mid, c_mid, mh, mw, temb);
    if let Some(spec) = &plan.mid {
        total +=
            transformer(b, c_mid, mh * mw, spec, ctx_len) + resnet(b, c_mid, c_mid, mh, mw, temb);
    }

    let mut prev = c_mid;
    for (i, block) in plan.up.iter().enumerate() {
        let j = n - 1 - i;
        let (bh, bw) = sizes[j];
        let c = block.out_channels;
        let input = boc[j.saturating_sub(1)];
        for layer in 0..block.layers {
            let skip = if layer + 1 == block.layers { input } else { c };
            let from = if layer == 0 { prev } else { c };
            total += resnet(b, from + skip, c, bh, bw, temb);
            if block.cross_attention {
                total += transformer(b, c, bh * bw, &block.transformer, ctx_len);
            }
        }
        if i + 1 < n {
            let (uh, uw) = sizes[j - 1];
            total += conv(b, c, c, 3, uh, uw);
        }
        prev = c;
    }
    Ok(total)
}

/// One CLIP text-encoder forward over `b` sequences of `len` tokens (every layer).
pub fn text_encoder(cfg: &ClipTextConfig, b: usize, len: usize) -> f64 {
    let (d, inner) = (cfg.hidden_size, cfg.intermediate_size);
    let rows = b * len;
    let layer = 4.0 * linear(rows, d, d)
        + attention(b, len, len, d)
        + linear(rows, d, inner)
        + linear(rows, inner, d);
    cfg.num_hidden_layers as f64 * layer
}

/// The VAE decoder (post_quant_conv included) on a `b` x latent_channels x `h` x `w` latent.
pub fn vae_decode(cfg: &AutoencoderKLConfig, b: usize, h: usize, w: usize) -> f64 {
    let boc = &cfg.block_out_channels;
    let n = boc.len();
    let lc = cfg.latent_channels;
    let top = boc[n - 1];
    let mut total = conv(b, lc, top, 3, h, w);
    if cfg.use_post_quant_conv {
        total += conv(b, lc, lc, 1, h, w);
    }
    total += 2.0 * resnet(b, top, top, h, w, None);
    if cfg.mid_block_add_attention {
        let tokens = h * w;
        total += 4.0 * linear(b * tokens, top, top) + attention(b, tokens, tokens, top);
    }
    let (mut bh, mut bw) = (h, w);
    for i in 0..n {
        let cin = boc[n - i.max(1)];
        let cout = boc[n - 1 - i];
        for layer in 0..cfg.layers_per_block + 1 {
            let from = if layer == 0 { cin } else { cout };
            total += resnet(b, from, cout, bh, bw, None);
        }
        if i + 1 < n {
            bh *= 2;
            bw *= 2;
            total += conv(b, cout, cout, 3, bh, bw);
        }
    }
    total + conv(b, boc[0], cfg.out_channels, 3, bh, bw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas() {
        assert_eq!(conv(1, 2, 3, 3, 4, 5), 2.0 * 2.0 * 3.0 * 9.0 * 20.0);
        assert_eq!(linear(10, 4, 6), 480.0);
        assert_eq!(attention(2, 8, 77, 320), 4.0 * 2.0 * 8.0 * 77.0 * 320.0);
    }

    /// BK-SDM (Kim et al. 2023, table 1) gives SD1.5's UNet 339 G multiply-adds per 512x512
    /// sample; this count adds the attention products, so it must land a little above that.
    #[test]
    fn sd15_unet_is_in_the_published_range() {
        let flops = unet(&UNet2DConditionConfig::sd1(), 1, 64, 64, 77).unwrap();
        let gmacs = flops / 2e9;
        assert!(
            (330.0..420.0).contains(&gmacs),
            "SD1.5 UNet: {gmacs} GMACs per sample"
        );
    }

    #[test]
    fn text_encoder_sd1() {
        // 12 layers x (4 x 2*77*768^2 + 4*77^2*768 + 2 x 2*77*768*3072): about 13.4 GFLOP.
        let flops = text_encoder(&ClipTextConfig::sd1(), 1, 77);
        assert!((flops / 1e9 - 13.4).abs() < 0.2, "{flops}");
    }
}
