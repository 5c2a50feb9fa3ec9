//! The hook points through which later features reach into the UNet without forking it
//! (DESIGN.md "Hooks, not forks"): ControlNet residuals, LCM's timestep condition, and an
//! [`AttentionHook`] that sees every attention call (prompt-to-prompt, hypernetworks).

use candle_core::Tensor;

use crate::error::Result;

/// Where an attention call happens; handed to every [`AttentionHook`] callback.
#[derive(Debug, Clone, Copy)]
pub struct AttentionSite<'a> {
    /// The diffusers module path relative to the UNet, e.g.
    /// `down_blocks.0.attentions.0.transformer_blocks.0.attn2` (the weight-key prefix).
    pub path: &'a str,
    /// True when keys/values come from the encoder hidden states (every `attn2`, and `attn1`
    /// under `only_cross_attention`); false for self-attention.
    pub is_cross_attention: bool,
    /// Number of heads: the probabilities are `[batch, heads, queries, keys]`.
    pub heads: usize,
    /// (height, width) of the feature map whose pixels are the queries, in row-major order.
    pub spatial: (usize, usize),
}

/// Called inside every UNet attention. Both methods default to "no change"; return `Ok(None)` to
/// leave a value as it is. Implementations that record state (attention stores) use interior
/// mutability (`RefCell`/`Mutex`), as the UNet holds only a shared reference.
pub trait AttentionHook {
    /// Transform the context before the key and value projections, returning the contexts for
    /// the keys and for the values (A1111 hypernetworks use one small MLP for each). `context` is
    /// `[batch, keys, dim]`: the encoder hidden states for cross-attention, the normalised hidden
    /// states for self-attention.
    fn key_value_context(
        &self,
        site: &AttentionSite<'_>,
        context: &Tensor,
    ) -> Result<Option<(Tensor, Tensor)>> {
        let _ = (site, context);
        Ok(None)
    }

    /// See or replace the attention probabilities (softmax output) `[batch, heads, queries,
    /// keys]`, e.g. prompt-to-prompt's stored or edited maps. They arrive in f32 when the
    /// model computes in f16/bf16 (the softmax runs in f32); a replacement must have the same
    /// shape and is cast back to the compute dtype.
    fn attention_probs(&self, site: &AttentionSite<'_>, probs: &Tensor) -> Result<Option<Tensor>> {
        let _ = (site, probs);
        Ok(None)
    }
}

/// Optional inputs of [`super::UNet2DConditionModel::forward_with`]; `Default` is a plain
/// forward.
#[derive(Clone, Copy, Default)]
pub struct UNetExtras<'a> {
    /// ControlNet: added to the down-path skip connections, in diffusers' order (conv_in output,
    /// then each down block's resnet outputs and downsampler output); diffusers'
    /// `down_block_additional_residuals`.
    pub down_block_residuals: Option<&'a [Tensor]>,
    /// ControlNet: added to the mid-block output (`mid_block_additional_residual`).
    pub mid_block_residual: Option<&'a Tensor>,
    /// Called in every transformer attention; None is the plain fast path.
    pub attention_hook: Option<&'a dyn AttentionHook>,
    /// LCM-distilled UNets (`time_cond_proj_dim`): the guidance-scale embedding `[batch,
    /// time_cond_proj_dim]`, diffusers' `timestep_cond`.
    pub timestep_cond: Option<&'a Tensor>,
}
