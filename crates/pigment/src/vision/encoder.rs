//! The pre-norm transformer encoder of the CLIP vision tower (transformers
//! models/clip/modeling_clip.py `CLIPEncoder`, `CLIPEncoderLayer`, `CLIPAttention`, `CLIPMLP`):
//! full (unmasked) self-attention over the class token and the patches.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use crate::ops::{layer_norm, linear, LayerNorm, Linear};

use super::config::ClipVisionConfig;
use crate::error::{Error, Result};

/// The MLP non-linearity by transformers' `hidden_act` name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Activation {
    /// `x * sigmoid(1.702 x)` (OpenAI CLIP).
    QuickGelu,
    /// Exact erf GELU (OpenCLIP).
    Gelu,
    /// tanh-approximated GELU.
    GeluTanh,
}

impl Activation {
    pub(crate) fn from_name(name: &str) -> Result<Self> {
        match name {
            "quick_gelu" => Ok(Self::QuickGelu),
            "gelu" => Ok(Self::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Self::GeluTanh),
            other => Err(Error::Config(format!(
                "CLIP vision hidden_act `{other}` is not supported: use `quick_gelu` or `gelu`"
            ))),
        }
    }

    fn forward(self, xs: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::QuickGelu => (xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?)?,
            Self::Gelu => xs.gelu_erf()?,
            Self::GeluTanh => xs.gelu()?,
        })
    }
}

struct SelfAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
    head_dim: usize,
}

impl SelfAttention {
    fn new(vb: VarBuilder, cfg: &ClipVisionConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            q_proj: linear(h, h, vb.pp("q_proj"))?,
            k_proj: linear(h, h, vb.pp("k_proj"))?,
            v_proj: linear(h, h, vb.pp("v_proj"))?,
            out_proj: linear(h, h, vb.pp("out_proj"))?,
            heads: cfg.num_attention_heads,
            head_dim: h / cfg.num_attention_heads,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, n, hidden) = xs.dims3()?;
        let split = |t: Tensor| -> Result<Tensor> {
            Ok(t.reshape((b, n, self.heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let scale = (self.head_dim as f64).powf(-0.5);
        let q = split((self.q_proj.forward(xs)? * scale)?)?;
        let k = split(self.k_proj.forward(xs)?)?;
        let v = split(self.v_proj.forward(xs)?)?;
        let probs = crate::ops::softmax_last_dim(&q.matmul(&k.t()?)?)?;
        let out = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, n, hidden))?;
        Ok(self.out_proj.forward(&out)?)
    }
}

struct EncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: SelfAttention,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    activation: Activation,
}

impl EncoderLayer {
    fn new(vb: VarBuilder, cfg: &ClipVisionConfig, activation: Activation) -> Result<Self> {
        let norm = |name: &str| layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp(name));
        let mlp = vb.pp("mlp");
        Ok(Self {
            layer_norm1: norm("layer_norm1")?,
            self_attn: SelfAttention::new(vb.pp("self_attn"), cfg)?,
            layer_norm2: norm("layer_norm2")?,
            fc1: linear(cfg.hidden_size, cfg.intermediate_size, mlp.pp("fc1"))?,
            fc2: linear(cfg.intermediate_size, cfg.hidden_size, mlp.pp("fc2"))?,
            activation,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = (xs + self.self_attn.forward(&self.layer_norm1.forward(xs)?)?)?;
        let h = self.layer_norm2.forward(&xs)?;
        let h = self
            .fc2
            .forward(&self.activation.forward(&self.fc1.forward(&h)?)?)?;
        Ok((xs + h)?)
    }
}

/// `encoder.layers.{i}.*`.
pub(crate) struct Encoder {
    layers: Vec<EncoderLayer>,
}

impl Encoder {
    pub(crate) fn new(vb: VarBuilder, cfg: &ClipVisionConfig) -> Result<Self> {
        let activation = Activation::from_name(&cfg.hidden_act)?;
        let vb = vb.pp("layers");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| EncoderLayer::new(vb.pp(i), cfg, activation))
            .collect::<Result<_>>()?;
        Ok(Self { layers })
    }

    pub(crate) fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// The output of every layer, in order (the last is the final hidden state).
    pub(crate) fn forward_all(&self, xs: &Tensor) -> Result<Vec<Tensor>> {
        let mut outs = Vec::with_capacity(self.layers.len());
        let mut x = xs.clone();
        for layer in &self.layers {
            x = layer.forward(&x)?;
            outs.push(x.clone());
        }
        Ok(outs)
    }
}
