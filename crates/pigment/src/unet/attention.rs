//! diffusers `Attention` (models/attention_processor.py) as the UNet uses it: linear q/k/v,
//! multi-head scaled dot-product attention with scale 1/sqrt(head_dim), and `to_out.0`.
//! All heads go through one batched matmul.

use candle_core::{DType, Module, Tensor};
use candle_nn::VarBuilder;

use crate::ops::Linear;

use super::hooks::{AttentionHook, AttentionSite};
use crate::error::Result;

pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    upcast_attention: bool,
    is_cross_attention: bool,
    path: String,
}

/// How an [`Attention`] is built.
#[derive(Debug, Clone, Copy)]
pub struct AttentionSettings {
    pub query_dim: usize,
    /// Width of the context for cross-attention; None for self-attention.
    pub context_dim: Option<usize>,
    pub heads: usize,
    pub head_dim: usize,
    /// Bias on q/k/v (false in the UNet's transformer blocks, true in the VAE).
    pub qkv_bias: bool,
    /// diffusers `upcast_attention`: scores and softmax in f32 even for f16/bf16 compute.
    pub upcast_attention: bool,
}

fn linear(cin: usize, cout: usize, bias: bool, vb: VarBuilder) -> Result<Linear> {
    Ok(if bias {
        crate::ops::linear(cin, cout, vb)?
    } else {
        crate::ops::linear_no_bias(cin, cout, vb)?
    })
}

impl Attention {
    /// `path`: the module path reported to hooks (the weight prefix relative to the UNet).
    pub fn new(vb: VarBuilder, s: AttentionSettings, path: String) -> Result<Self> {
        let inner = s.heads * s.head_dim;
        let kv_dim = s.context_dim.unwrap_or(s.query_dim);
        Ok(Self {
            to_q: linear(s.query_dim, inner, s.qkv_bias, vb.pp("to_q"))?,
            to_k: linear(kv_dim, inner, s.qkv_bias, vb.pp("to_k"))?,
            to_v: linear(kv_dim, inner, s.qkv_bias, vb.pp("to_v"))?,
            to_out: crate::ops::linear(inner, s.query_dim, vb.pp("to_out").pp("0"))?,
            heads: s.heads,
            upcast_attention: s.upcast_attention,
            is_cross_attention: s.context_dim.is_some(),
            path,
        })
    }

    /// `x` [B, queries, query_dim]; `context` [B, keys, context_dim] for cross-attention (None
    /// attends to `x`). `spatial` is the (h, w) of the queries, reported to the hook.
    pub fn forward(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        hook: Option<&dyn AttentionHook>,
        spatial: (usize, usize),
    ) -> Result<Tensor> {
        self.forward_residual(x, context, hook, spatial, None)
    }

    /// [`Self::forward`] plus `residual` (the block's input), added in to_out's pass.
    pub fn forward_residual(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        hook: Option<&dyn AttentionHook>,
        spatial: (usize, usize),
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let context = match (self.is_cross_attention, context) {
            (true, Some(c)) => c,
            _ => x,
        };
        let site = AttentionSite {
            path: &self.path,
            is_cross_attention: self.is_cross_attention,
            heads: self.heads,
            spatial,
        };
        let replaced = match hook {
            Some(h) => h.key_value_context(&site, context)?,
            None => None,
        };
        let (k, v) = match &replaced {
            Some((ck, cv)) => (self.to_k.forward(ck)?, self.to_v.forward(cv)?),
            None => (self.to_k.forward(context)?, self.to_v.forward(context)?),
        };
        let q = self.to_q.forward(x)?;
        let probs_hook = hook.map(|h| move |p: &Tensor| h.attention_probs(&site, p));
        let out = multi_head_attention(&q, &k, &v, self.heads, self.upcast_attention, probs_hook)?;
        Ok(match residual {
            Some(r) => self.to_out.forward_add(&out, r)?,
            None => self.to_out.forward(&out)?,
        })
    }
}

/// [B, L, H*D] -> [B, H, L, D]
fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, l, c) = x.dims3()?;
    Ok(x.reshape((b, l, heads, c / heads))?
        .transpose(1, 2)?
        .contiguous()?)
}

/// softmax(q k^T / sqrt(d)) v over `heads` heads; q [B, Lq, H*D], k and v [B, Lk, H*D] ->
/// [B, Lq, H*D]. For f16/bf16 the softmax always runs in f32 (torch's fused attention
/// accumulates in f32 too); with `upcast` the scores q k^T are computed in f32 as well (diffusers
/// `upcast_attention`, which SD2 needs to avoid f16 overflow). `probs_hook` may replace the
/// probabilities [B, H, Lq, Lk].
pub fn multi_head_attention<F>(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    upcast: bool,
    probs_hook: Option<F>,
) -> Result<Tensor>
where
    F: FnOnce(&Tensor) -> Result<Option<Tensor>>,
{
    let dtype = q.dtype();
    let reduced = matches!(dtype, DType::F16 | DType::BF16);
    let (b, lq, inner) = q.dims3()?;
    let head_dim = inner / heads;
    let scale = 1.0 / (head_dim as f64).sqrt();
    if probs_hook.is_none() {
        if let Some(out) = crate::ops::fused_attention(q, k, v, heads, scale)? {
            return Ok(out);
        }
    }
    let mut q = split_heads(q, heads)?;
    let mut k = split_heads(k, heads)?;
    let v = split_heads(v, heads)?;
    if upcast && reduced {
        q = q.to_dtype(DType::F32)?;
        k = k.to_dtype(DType::F32)?;
    }
    let scores = (q * scale)?.matmul(&k.t()?)?;
    let scores = if reduced {
        scores.to_dtype(DType::F32)?
    } else {
        scores
    };
    let mut probs = crate::ops::softmax_last_dim(&scores)?;
    if let Some(hook) = probs_hook {
        if let Some(p) = hook(&probs)? {
            probs = p;
        }
    }
    let out = probs.to_dtype(v.dtype())?.matmul(&v)?;
    Ok(out.transpose(1, 2)?.reshape((b, lq, inner))?)
}
