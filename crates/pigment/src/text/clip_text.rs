//! The CLIP text transformer (Radford et al. 2021, section 2.4): token + position embeddings,
//! pre-norm causal self-attention blocks, a final layer norm. Its last hidden state conditions
//! the Stable Diffusion UNet through cross-attention.
//!
//! Mirrors transformers `models/clip/modeling_clip.py` (`CLIPTextTransformer`), weight names
//! included; every shape comes from [`ClipTextConfig`].

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{embedding, Embedding, VarBuilder};

use crate::ops::{layer_norm, linear, LayerNorm, Linear};

use crate::error::{Error, Result};
use crate::text::config::ClipTextConfig;

/// The MLP non-linearity, by transformers' `hidden_act` name (`activations.py::ACT2FN`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Activation {
    /// `x * sigmoid(1.702 x)`: OpenAI CLIP (SD1).
    QuickGelu,
    /// Exact erf GELU: OpenCLIP ViT-H (SD2).
    Gelu,
    /// The tanh approximation of GELU.
    GeluTanh,
}

impl Activation {
    fn from_name(name: &str) -> Result<Self> {
        match name {
            "quick_gelu" => Ok(Self::QuickGelu),
            "gelu" => Ok(Self::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Self::GeluTanh),
            other => Err(Error::Config(format!(
                "text encoder hidden_act `{other}` is not supported; CLIP text encoders use \
                 `quick_gelu` (SD1) or `gelu` (SD2)"
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

/// Multi-head self-attention with the causal mask (`CLIPAttention`).
#[derive(Debug)]
struct SelfAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    num_heads: usize,
    head_dim: usize,
}

impl SelfAttention {
    fn new(vb: VarBuilder, cfg: &ClipTextConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            q_proj: linear(h, h, vb.pp("q_proj"))?,
            k_proj: linear(h, h, vb.pp("k_proj"))?,
            v_proj: linear(h, h, vb.pp("v_proj"))?,
            out_proj: linear(h, h, vb.pp("out_proj"))?,
            num_heads: cfg.num_attention_heads,
            head_dim: h / cfg.num_attention_heads,
        })
    }

    /// `xs`: [batch, seq, hidden]; `mask`: [seq, seq], 0 or -inf, added to the scores.
    fn forward(&self, xs: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (batch, seq, hidden) = xs.dims3()?;
        let heads = |t: Tensor| -> Result<Tensor> {
            Ok(t.reshape((batch, seq, self.num_heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let scale = (self.head_dim as f64).powf(-0.5);
        let q = heads((self.q_proj.forward(xs)? * scale)?)?;
        let k = heads(self.k_proj.forward(xs)?)?;
        let v = heads(self.v_proj.forward(xs)?)?;
        let scores = q.matmul(&k.t()?)?.broadcast_add(mask)?;
        let probs = crate::ops::softmax_last_dim(&scores)?;
        let out = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((batch, seq, hidden))?;
        Ok(self.out_proj.forward(&out)?)
    }
}

/// `fc1 -> activation -> fc2` (`CLIPMLP`).
#[derive(Debug)]
struct Mlp {
    fc1: Linear,
    fc2: Linear,
    activation: Activation,
}

impl Mlp {
    fn new(vb: VarBuilder, cfg: &ClipTextConfig, activation: Activation) -> Result<Self> {
        Ok(Self {
            fc1: linear(cfg.hidden_size, cfg.intermediate_size, vb.pp("fc1"))?,
            fc2: linear(cfg.intermediate_size, cfg.hidden_size, vb.pp("fc2"))?,
            activation,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = self.activation.forward(&self.fc1.forward(xs)?)?;
        Ok(self.fc2.forward(&xs)?)
    }
}

/// Pre-norm residual block (`CLIPEncoderLayer`): x + attn(ln1(x)), then + mlp(ln2(.)).
#[derive(Debug)]
struct EncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: SelfAttention,
    layer_norm2: LayerNorm,
    mlp: Mlp,
}

impl EncoderLayer {
    fn new(vb: VarBuilder, cfg: &ClipTextConfig, activation: Activation) -> Result<Self> {
        let norm = |name: &str| layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp(name));
        Ok(Self {
            layer_norm1: norm("layer_norm1")?,
            self_attn: SelfAttention::new(vb.pp("self_attn"), cfg)?,
            layer_norm2: norm("layer_norm2")?,
            mlp: Mlp::new(vb.pp("mlp"), cfg, activation)?,
        })
    }

    fn forward(&self, xs: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let attn = self
            .self_attn
            .forward(&self.layer_norm1.forward(xs)?, mask)?;
        let xs = (xs + attn)?;
        let mlp = self.mlp.forward(&self.layer_norm2.forward(&xs)?)?;
        Ok((xs + mlp)?)
    }
}

/// The CLIP text encoder (`CLIPTextModel` / `CLIPTextTransformer`), up to the last hidden state.
#[derive(Debug)]
pub struct ClipTextModel {
    token_embedding: Embedding,
    position_embedding: Embedding,
    layers: Vec<EncoderLayer>,
    final_layer_norm: LayerNorm,
    max_position_embeddings: usize,
}

impl ClipTextModel {
    /// `vb` is rooted at transformers' `text_model` level: keys `embeddings.token_embedding.weight`,
    /// `embeddings.position_embedding.weight`, `encoder.layers.{i}.self_attn.{q,k,v,out}_proj.*`,
    /// `encoder.layers.{i}.layer_norm{1,2}.*`, `encoder.layers.{i}.mlp.fc{1,2}.*`,
    /// `final_layer_norm.*`. The model runs in `vb`'s dtype.
    pub fn new(vb: VarBuilder, cfg: &ClipTextConfig) -> Result<Self> {
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads)
        {
            return Err(Error::Config(format!(
                "text encoder hidden_size {} is not divisible by num_attention_heads {}",
                cfg.hidden_size, cfg.num_attention_heads
            )));
        }
        let activation = Activation::from_name(&cfg.hidden_act)?;
        let emb = vb.pp("embeddings");
        let layers_vb = vb.pp("encoder").pp("layers");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| EncoderLayer::new(layers_vb.pp(i), cfg, activation))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            token_embedding: embedding(cfg.vocab_size, cfg.hidden_size, emb.pp("token_embedding"))?,
            position_embedding: embedding(
                cfg.max_position_embeddings,
                cfg.hidden_size,
                emb.pp("position_embedding"),
            )?,
            layers,
            final_layer_norm: layer_norm(
                cfg.hidden_size,
                cfg.layer_norm_eps,
                vb.pp("final_layer_norm"),
            )?,
            max_position_embeddings: cfg.max_position_embeddings,
        })
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Width of the token embeddings (768 for SD1's CLIP ViT-L, 1024 for SD2's OpenCLIP ViT-H).
    pub fn hidden_size(&self) -> usize {
        self.token_embedding.hidden_size()
    }

    /// Rows of the token-embedding table: the vocabulary plus any appended vectors.
    pub fn token_count(&self) -> usize {
        self.token_embedding.embeddings().dim(0).unwrap_or(0)
    }

    /// Appends `rows` ([n, hidden_size]) to the token-embedding table and returns the id of the
    /// first: textual inversion, as diffusers' `load_textual_inversion` resizes the table
    /// (`resize_token_embeddings`) and writes the learned vectors into the new rows.
    pub fn append_token_embeddings(&mut self, rows: &Tensor) -> Result<u32> {
        let table = self.token_embedding.embeddings();
        let hidden = self.hidden_size();
        let (_, width) = rows.dims2()?;
        if width != hidden {
            return Err(Error::invalid(format!(
                "token vectors are {width} wide but the text encoder's hidden size is {hidden}"
            )));
        }
        let first = table.dim(0)?;
        let rows = rows.to_dtype(table.dtype())?.to_device(table.device())?;
        let extended = Tensor::cat(&[table, &rows], 0)?;
        self.token_embedding = Embedding::new(extended, hidden);
        u32::try_from(first).map_err(|_| Error::invalid("token-embedding table too large"))
    }

    /// `last_hidden_state` (after `final_layer_norm`), as diffusers' `encode_prompt` uses it.
    /// `input_ids`: [batch, seq] u32, seq at most `max_position_embeddings`.
    /// Returns [batch, seq, hidden_size].
    pub fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        self.forward_with_clip_skip(input_ids, 1)
    }

    /// AUTOMATIC1111's "Clip skip": 1 = last layer (same as `forward`), 2 = the penultimate
    /// layer's output, and so on. `final_layer_norm` is applied to the chosen layer, as diffusers
    /// does for its `clip_skip` (diffusers' `clip_skip=1` is A1111's 2).
    pub fn forward_with_clip_skip(&self, input_ids: &Tensor, clip_skip: usize) -> Result<Tensor> {
        let n = self.layers.len();
        if clip_skip == 0 || clip_skip > n {
            return Err(Error::invalid(format!(
                "clip skip {clip_skip} is out of range: use 1 (last layer) to {n} for this text \
                 encoder of {n} layers"
            )));
        }
        let (_batch, seq) = input_ids.dims2()?;
        if seq > self.max_position_embeddings {
            return Err(Error::invalid(format!(
                "{seq} tokens exceed the text encoder's {} positions; truncate the prompt (the \
                 tokenizer's encode_padded does)",
                self.max_position_embeddings
            )));
        }
        let device = input_ids.device();
        let input_ids = input_ids.to_dtype(DType::U32)?;
        let positions = Tensor::arange(0u32, seq as u32, device)?;
        let tokens = self.token_embedding.forward(&input_ids)?;
        let mut xs = tokens.broadcast_add(&self.position_embedding.forward(&positions)?)?;
        let mask = causal_mask(seq, device)?.to_dtype(xs.dtype())?;
        for layer in &self.layers[..n + 1 - clip_skip] {
            xs = layer.forward(&xs, &mask)?;
        }
        Ok(self.final_layer_norm.forward(&xs)?)
    }
}

/// [seq, seq]: 0 where a token may attend (itself and earlier tokens), -inf after it.
fn causal_mask(seq: usize, device: &Device) -> Result<Tensor> {
    let values: Vec<f32> = (0..seq)
        .flat_map(|i| (0..seq).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Ok(Tensor::from_vec(values, (seq, seq), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::D;
    use candle_nn::VarMap;

    fn tiny_config(act: &str) -> ClipTextConfig {
        ClipTextConfig {
            vocab_size: 10,
            hidden_size: 8,
            intermediate_size: 16,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            max_position_embeddings: 6,
            hidden_act: act.into(),
            ..ClipTextConfig::default()
        }
    }

    fn tiny_model(act: &str) -> ClipTextModel {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        ClipTextModel::new(vb, &tiny_config(act)).expect("tiny model builds")
    }

    #[test]
    fn output_shape_and_causality() {
        let model = tiny_model("quick_gelu");
        let ids = Tensor::new(&[[1u32, 2, 3, 4], [1, 2, 3, 9]], &Device::Cpu).unwrap();
        let out = model.forward(&ids).unwrap();
        assert_eq!(out.dims(), &[2, 4, 8]);
        // Changing only the last token leaves every earlier position unchanged.
        let diff = (out.get(0).unwrap() - out.get(1).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max(D::Minus1)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(diff[..3].iter().all(|&d| d == 0.0), "{diff:?}");
        assert!(diff[3] > 0.0, "{diff:?}");
    }

    #[test]
    fn bad_inputs_are_errors() {
        let model = tiny_model("gelu");
        let long = Tensor::zeros((1, 7), DType::U32, &Device::Cpu).unwrap();
        assert!(model.forward(&long).is_err());
        let ids = Tensor::zeros((1, 3), DType::U32, &Device::Cpu).unwrap();
        assert!(model.forward_with_clip_skip(&ids, 0).is_err());
        assert!(model.forward_with_clip_skip(&ids, 3).is_err());
        assert!(model.forward_with_clip_skip(&ids, 2).is_ok());
        let vb = VarBuilder::from_varmap(&VarMap::new(), DType::F32, &Device::Cpu);
        assert!(ClipTextModel::new(vb, &tiny_config("swish")).is_err());
    }
}
