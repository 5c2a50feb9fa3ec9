//! The UNet's spatial transformer: diffusers `Transformer2DModel` (continuous input,
//! models/transformers/transformer_2d.py) holding `BasicTransformerBlock`s with a GEGLU
//! `FeedForward` (models/attention.py, models/activations.py).

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use crate::ops::{LayerNorm, Linear};

use super::attention::{Attention, AttentionSettings};
use super::hooks::AttentionHook;
use super::plan::TransformerSpec;
use crate::error::Result;
use crate::ops::{Conv2d, GroupNorm};

/// GEGLU feed-forward (Shazeer 2020): net.2(h * gelu(gate)) with [h, gate] = net.0.proj(x) split
/// in halves on the last axis; gelu is the exact (erf) form; inner width 4 * dim.
struct FeedForward {
    proj: Linear,
    out: Linear,
}

impl FeedForward {
    fn new(vb: VarBuilder, dim: usize) -> Result<Self> {
        let inner = 4 * dim;
        Ok(Self {
            proj: crate::ops::linear(dim, 2 * inner, vb.pp("net.0.proj"))?,
            out: crate::ops::linear(inner, dim, vb.pp("net.2"))?,
        })
    }

    /// FF(x) + residual.
    fn forward_add(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let (batch, tokens, dim) = x.dims3()?;
        let rows = batch * tokens;
        // Inference on many tokens: the rows in chunks (diffusers' enable_forward_chunking; rows
        // are independent, so the numbers are the same), because the [rows, 8 * dim] projection
        // and its GEGLU halves are the largest activations of the UNet (SD1.5 at 512x512,
        // batch 2: 84 + 2 x 42 MB at once, 21 + 2 x 10.5 MB in chunks).
        if rows <= FF_CHUNK_ROWS || x.track_op() {
            return self.forward_rows(x, residual);
        }
        let flat = x.reshape((rows, dim))?;
        let flat_residual = residual.reshape((rows, dim))?;
        let chunks = (0..rows)
            .step_by(FF_CHUNK_ROWS)
            .map(|start| {
                let len = FF_CHUNK_ROWS.min(rows - start);
                self.forward_rows(
                    &flat.narrow(0, start, len)?,
                    &flat_residual.narrow(0, start, len)?,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&chunks, 0)?.reshape((batch, tokens, dim))?)
    }

    fn forward_rows(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let h = crate::ops::geglu(&self.proj.forward(x)?)?;
        Ok(self.out.forward_add(&h, residual)?)
    }
}

/// Rows of the feed-forward computed at once in inference.
const FF_CHUNK_ROWS: usize = 2048;

/// LayerNorm -> self-attention (attn1) -> LayerNorm -> cross-attention (attn2) -> LayerNorm -> FF,
/// each with a residual add; LayerNorm eps 1e-5 (diffusers' default norm_eps).
struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
    only_cross_attention: bool,
}

impl BasicTransformerBlock {
    fn new(vb: VarBuilder, dim: usize, spec: &TransformerSpec, path: &str) -> Result<Self> {
        let attn = |context_dim: Option<usize>| AttentionSettings {
            query_dim: dim,
            context_dim,
            heads: spec.heads,
            head_dim: dim / spec.heads,
            qkv_bias: false,
            upcast_attention: spec.upcast_attention,
        };
        let ln = |name: &str| crate::ops::layer_norm(dim, 1e-5, vb.pp(name));
        let attn1_context = spec
            .only_cross_attention
            .then_some(spec.cross_attention_dim);
        Ok(Self {
            norm1: ln("norm1")?,
            attn1: Attention::new(vb.pp("attn1"), attn(attn1_context), format!("{path}.attn1"))?,
            norm2: ln("norm2")?,
            attn2: Attention::new(
                vb.pp("attn2"),
                attn(Some(spec.cross_attention_dim)),
                format!("{path}.attn2"),
            )?,
            norm3: ln("norm3")?,
            ff: FeedForward::new(vb.pp("ff"), dim)?,
            only_cross_attention: spec.only_cross_attention,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        context: &Tensor,
        hook: Option<&dyn AttentionHook>,
        spatial: (usize, usize),
    ) -> Result<Tensor> {
        let ctx1 = self.only_cross_attention.then_some(context);
        // Each residual add rides in the output projection's GEMM (Linear::forward_add).
        let x =
            self.attn1
                .forward_residual(&self.norm1.forward(x)?, ctx1, hook, spatial, Some(x))?;
        let x = self.attn2.forward_residual(
            &self.norm2.forward(&x)?,
            Some(context),
            hook,
            spatial,
            Some(&x),
        )?;
        self.ff.forward_add(&self.norm3.forward(&x)?, &x)
    }
}

/// proj_in / proj_out are 1x1 convs, or linears with `use_linear_projection` (SD2).
enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

impl Projection {
    /// Weight [out, in] and bias as a linear map over channels (both forms are one), for the
    /// fused map/token projections; None while a run-time adapter adds to the layer.
    fn as_linear(&self) -> Result<Option<(Tensor, Option<Tensor>)>> {
        Ok(match self {
            Projection::Conv(conv) if !conv.has_active_adapter() => {
                let w = conv.weight()?;
                let (out, inp, kh, kw) = w.dims4()?;
                (kh == 1 && kw == 1)
                    .then(|| -> Result<_> {
                        Ok((w.contiguous()?.reshape((out, inp))?, conv.bias().cloned()))
                    })
                    .transpose()?
            }
            Projection::Linear(lin) if !lin.has_active_adapter() => {
                Some((lin.weight()?, lin.bias().cloned()))
            }
            _ => None,
        })
    }
}

/// GroupNorm (eps 1e-6) -> proj_in -> transformer blocks over the h*w pixels -> proj_out, plus
/// the input as residual.
pub struct Transformer2DModel {
    norm: GroupNorm,
    proj_in: Projection,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: Projection,
}

impl Transformer2DModel {
    /// `path`: module path relative to the UNet (e.g. `down_blocks.0.attentions.1`).
    pub fn new(
        vb: VarBuilder,
        channels: usize,
        spec: &TransformerSpec,
        path: &str,
    ) -> Result<Self> {
        let proj = |name: &str| -> Result<Projection> {
            Ok(if spec.use_linear_projection {
                Projection::Linear(crate::ops::linear(channels, channels, vb.pp(name))?)
            } else {
                Projection::Conv(crate::ops::conv2d(
                    channels,
                    channels,
                    1,
                    Default::default(),
                    vb.pp(name),
                )?)
            })
        };
        let blocks = (0..spec.layers)
            .map(|i| {
                BasicTransformerBlock::new(
                    vb.pp("transformer_blocks").pp(i),
                    channels,
                    spec,
                    &format!("{path}.transformer_blocks.{i}"),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            norm: crate::ops::group_norm(spec.norm_groups, channels, 1e-6, vb.pp("norm"))?,
            proj_in: proj("proj_in")?,
            blocks,
            proj_out: proj("proj_out")?,
        })
    }

    /// `x` [B, C, H, W], `context` [B, S, cross_attention_dim].
    pub fn forward(
        &self,
        x: &Tensor,
        context: &Tensor,
        hook: Option<&dyn AttentionHook>,
    ) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let to_tokens =
            |t: &Tensor| -> Result<Tensor> { Ok(t.permute((0, 2, 3, 1))?.reshape((b, h * w, c))?) };
        let to_map = |t: &Tensor| -> Result<Tensor> {
            Ok(t.reshape((b, h, w, c))?
                .permute((0, 3, 1, 2))?
                .contiguous()?)
        };
        let normed = self.norm.forward(x)?;
        // CPU f32 inference: one strided GEMM each way, no permuted copies (ops::token_projection).
        let fused_in = match self.proj_in.as_linear()? {
            Some((w, bias)) => crate::ops::map_to_tokens(&normed, &w, bias.as_ref())?,
            None => None,
        };
        let mut tokens = match (fused_in, &self.proj_in) {
            (Some(tokens), _) => tokens,
            (None, Projection::Conv(conv)) => to_tokens(&conv.forward(&normed)?)?,
            (None, Projection::Linear(lin)) => lin.forward(&to_tokens(&normed)?)?,
        };
        for block in &self.blocks {
            tokens = block.forward(&tokens, context, hook, (h, w))?;
        }
        if let Some((w, bias)) = self.proj_out.as_linear()? {
            if let Some(out) = crate::ops::tokens_to_map(&tokens, &w, bias.as_ref(), x)? {
                return Ok(out);
            }
        }
        let out = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(&to_map(&tokens)?)?,
            Projection::Linear(lin) => to_map(&lin.forward(&tokens)?)?,
        };
        Ok((out + x)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::RandomWeights;
    use candle_core::{DType, Device};

    /// The chunked inference path computes each row (residual added) as the whole-tensor path
    /// does: same numbers (tolerance 1e-6: only the GEMM's blocking over rows may differ), for
    /// a row count that is not a multiple of the chunk.
    #[test]
    fn chunked_feed_forward_matches_the_whole() {
        let dev = Device::Cpu;
        let ff = FeedForward::new(RandomWeights::var_builder(5, DType::F32, &dev), 16).unwrap();
        let rows = 2 * FF_CHUNK_ROWS + 300;
        let x = Tensor::randn(0f32, 1.0, (2, rows / 2, 16), &dev).unwrap();
        let residual = Tensor::randn(0f32, 1.0, x.dims(), &dev).unwrap();
        let chunked = ff.forward_add(&x, &residual).unwrap();
        let whole = ff.forward_rows(&x, &residual).unwrap();
        assert_eq!(chunked.dims(), whole.dims());
        let diff = crate::ops::max_abs_diff(&chunked, &whole);
        assert!(diff <= 1e-6, "chunked vs whole: {diff}");
    }
}
