//! AUTOMATIC1111 hypernetworks (stable-diffusion-webui, modules/hypernetworks/hypernetwork.py):
//! for each context width (768, 320, ...) a pair of small MLPs that transform the context of an
//! attention before its key and value projections:
//! `context_k = context + h_k(context) * strength`, `context_v = context + h_v(context) * strength`
//! (`HypernetworkModule.forward`). A1111 applies them in every UNet attention whose context has a
//! width the file holds, self-attention included (its context is its own input); several
//! hypernetworks are chained (`apply_hypernetworks`). Dropout is off at inference.
//!
//! The file is a torch pickle of `{width: (state_dict_k, state_dict_v), 'layer_structure': ...,
//! 'activation_func': ..., 'is_layer_norm': ..., 'activate_output': ...}`; each MLP is a
//! `torch.nn.Sequential` of Linear, activation, LayerNorm and Dropout layers, whose indices are
//! read from the state dict (dropout layers have no weights and shift the indices).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, D};

use crate::error::{Error, Result};
use crate::unet::{AttentionHook, AttentionSite};

/// torch.nn.LayerNorm's default eps.
const LAYER_NORM_EPS: f64 = 1e-5;

/// An activation of `HypernetworkModule.activation_dict` (torch.nn defaults for its constants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Activation {
    Relu,
    LeakyRelu,
    Elu,
    /// A1111's "swish" is torch.nn.Hardswish.
    Hardswish,
    Tanh,
    Sigmoid,
    Gelu,
    Silu,
    Mish,
    Softplus,
}

impl Activation {
    /// None for "linear" / no activation.
    fn parse(name: &str) -> Result<Option<Self>> {
        Ok(Some(match name.to_ascii_lowercase().as_str() {
            "linear" | "identity" | "" => return Ok(None),
            "relu" => Self::Relu,
            "leakyrelu" => Self::LeakyRelu,
            "elu" => Self::Elu,
            "swish" | "hardswish" => Self::Hardswish,
            "tanh" => Self::Tanh,
            "sigmoid" => Self::Sigmoid,
            "gelu" => Self::Gelu,
            "silu" => Self::Silu,
            "mish" => Self::Mish,
            "softplus" => Self::Softplus,
            other => {
                return Err(Error::invalid(format!(
                    "hypernetwork activation `{other}` is not supported; supported: linear, relu, \
                     leakyrelu, elu, swish, tanh, sigmoid, gelu, silu, mish, softplus"
                )))
            }
        }))
    }

    fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        let softplus = |x: &Tensor| -> candle_core::Result<Tensor> {
            // log(1 + exp(x)), stable for large x (torch's threshold 20).
            let big = x.ge(20.0)?;
            let soft = (x.clamp(-80.0, 20.0)?.exp()? + 1.0)?.log()?;
            big.where_cond(x, &soft)
        };
        match self {
            Self::Relu => x.relu(),
            Self::LeakyRelu => candle_nn::ops::leaky_relu(x, 0.01),
            Self::Elu => x.elu(1.0),
            Self::Hardswish => x * ((x + 3.0)?.clamp(0.0, 6.0)? / 6.0)?,
            Self::Tanh => x.tanh(),
            Self::Sigmoid => candle_nn::ops::sigmoid(x),
            Self::Gelu => x.gelu_erf(),
            Self::Silu => x.silu(),
            Self::Mish => x * softplus(x)?.tanh()?,
            Self::Softplus => softplus(x),
        }
    }
}

/// One step of the MLP (a layer of its torch.nn.Sequential).
#[derive(Debug, Clone)]
enum Step {
    /// weight [out, in], bias [out].
    Linear(Tensor, Tensor),
    Activation(Activation),
    /// weight, bias [width].
    LayerNorm(Tensor, Tensor),
}

/// `HypernetworkModule`: `x + mlp(x) * strength`.
#[derive(Debug, Clone)]
struct Mlp {
    layers: Vec<Step>,
}

impl Mlp {
    fn forward(&self, x: &Tensor, strength: f64) -> candle_core::Result<Tensor> {
        let (b, l, c) = x.dims3()?;
        let mut h = x.reshape((b * l, c))?;
        for layer in &self.layers {
            h = match layer {
                Step::Linear(w, bias) => h.matmul(&w.t()?)?.broadcast_add(bias)?,
                Step::Activation(a) => a.apply(&h)?,
                Step::LayerNorm(w, bias) => {
                    let mean = h.mean_keepdim(D::Minus1)?;
                    let centred = h.broadcast_sub(&mean)?;
                    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
                    centred
                        .broadcast_div(&(var + LAYER_NORM_EPS)?.sqrt()?)?
                        .broadcast_mul(w)?
                        .broadcast_add(bias)?
                }
            };
        }
        let width = h.dim(1)?;
        x + (h.reshape((b, l, width))? * strength)?
    }

    fn to_device(&self, device: &Device) -> Result<Self> {
        let mv = |t: &Tensor| t.to_device(device);
        let layers = self
            .layers
            .iter()
            .map(|l| {
                Ok(match l {
                    Step::Linear(w, b) => Step::Linear(mv(w)?, mv(b)?),
                    Step::LayerNorm(w, b) => Step::LayerNorm(mv(w)?, mv(b)?),
                    Step::Activation(a) => Step::Activation(*a),
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self { layers })
    }
}

/// An A1111 hypernetwork: a key and a value MLP per context width.
#[derive(Debug, Clone)]
pub struct Hypernetwork {
    name: String,
    layers: BTreeMap<usize, [Mlp; 2]>,
}

impl Hypernetwork {
    /// Reads an A1111 hypernetwork `.pt` (without running pickle code). Its name is the file
    /// stem, as A1111's `<hypernet:name:strength>` looks it up.
    pub fn load(path: &Path) -> Result<Self> {
        let fail = |why: String| {
            Error::invalid(format!(
                "hypernetwork {}: {why}; expected an AUTOMATIC1111 hypernetwork .pt",
                path.display()
            ))
        };
        if !path.is_file() {
            return Err(Error::invalid(format!(
                "hypernetwork {}: no such file",
                path.display()
            )));
        }
        let (tensors, meta) = crate::weights::load_torch_tensors_with_metadata(path)?;
        let activation = match meta.get("activation_func") {
            Some(serde_json::Value::String(s)) => Activation::parse(s)?,
            _ => None,
        };
        // hypernetwork.py's `load`: a missing `activate_output` means True.
        let activate_output = !matches!(
            meta.get("activate_output"),
            Some(serde_json::Value::Bool(false))
        );
        // {(width, 0 = key / 1 = value): {sequential index: (weight, bias)}}
        type Params = BTreeMap<usize, (Option<Tensor>, Option<Tensor>)>;
        let mut parts: BTreeMap<(usize, usize), Params> = BTreeMap::new();
        for (name, t) in tensors {
            let mut it = name.splitn(3, '.');
            let (Some(width), Some(which), Some(key)) = (it.next(), it.next(), it.next()) else {
                return Err(fail(format!("unexpected tensor `{name}`")));
            };
            let (Ok(width), Ok(which)) = (width.parse::<usize>(), which.parse::<usize>()) else {
                return Err(fail(format!("unexpected tensor `{name}`")));
            };
            // Old files: linear1 / linear2 (hypernetwork.py's fix_old_state_dict).
            let key = match key {
                "linear1.weight" => "linear.0.weight",
                "linear1.bias" => "linear.0.bias",
                "linear2.weight" => "linear.1.weight",
                "linear2.bias" => "linear.1.bias",
                k => k,
            };
            let parsed = key
                .strip_prefix("linear.")
                .and_then(|rest| rest.split_once('.'))
                .and_then(|(i, p)| Some((i.parse::<usize>().ok()?, p)));
            let Some((index, param)) = parsed.filter(|_| which < 2) else {
                return Err(fail(format!("unexpected tensor `{name}`")));
            };
            let slot = parts
                .entry((width, which))
                .or_default()
                .entry(index)
                .or_default();
            match param {
                "weight" => slot.0 = Some(t),
                "bias" => slot.1 = Some(t),
                _ => return Err(fail(format!("unexpected tensor `{name}`"))),
            }
        }
        let mut layers: BTreeMap<usize, Vec<Mlp>> = BTreeMap::new();
        for ((width, which), params) in parts {
            let linears = params
                .values()
                .filter(|(w, _)| w.as_ref().is_some_and(|w| w.rank() == 2))
                .count();
            let mut mlp = Vec::new();
            let mut seen = 0;
            let mut current = width;
            for (index, (w, b)) in params {
                let (Some(w), Some(b)) = (w, b) else {
                    return Err(fail(format!(
                        "layer {index} of the width-{width} MLP lacks its weight or bias"
                    )));
                };
                match w.dims() {
                    &[out, inp] if inp == current && b.dims() == [out] => {
                        mlp.push(Step::Linear(w, b));
                        seen += 1;
                        current = out;
                        if let Some(a) = activation.filter(|_| seen < linears || activate_output) {
                            mlp.push(Step::Activation(a));
                        }
                    }
                    &[n] if n == current && b.dims() == [n] => mlp.push(Step::LayerNorm(w, b)),
                    dims => {
                        return Err(fail(format!(
                            "layer {index} of the width-{width} MLP has weight shape {dims:?}, \
                             which does not follow from width {current}"
                        )))
                    }
                }
            }
            if seen == 0 || current != width {
                return Err(fail(format!(
                    "the width-{width} MLP does not map width {width} back to {width}"
                )));
            }
            // BTreeMap order: the key MLP (0) before the value MLP (1).
            debug_assert!(which < 2);
            layers.entry(width).or_default().push(Mlp { layers: mlp });
        }
        let mut pairs = BTreeMap::new();
        for (width, mlps) in layers {
            let [k, v]: [Mlp; 2] = mlps.try_into().map_err(|_| {
                fail(format!(
                    "width {width} needs a key and a value MLP (a pair)"
                ))
            })?;
            pairs.insert(width, [k, v]);
        }
        if pairs.is_empty() {
            return Err(fail("it holds no per-width MLPs".into()));
        }
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Self {
            name,
            layers: pairs,
        })
    }

    /// The file stem: the name `<hypernet:name>` uses.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The context widths it transforms.
    pub fn widths(&self) -> Vec<usize> {
        self.layers.keys().copied().collect()
    }

    /// `(h_k(context_k), h_v(context_v))` at `strength`, or None when the file has no MLPs for
    /// their width. Computed in f32 (A1111's `cond_cast_float`), returned in the input's dtype.
    pub fn apply(
        &self,
        context_k: &Tensor,
        context_v: &Tensor,
        strength: f64,
    ) -> Result<Option<(Tensor, Tensor)>> {
        let Some([k, v]) = self.layers.get(&context_k.dim(D::Minus1)?) else {
            return Ok(None);
        };
        let run = |mlp: &Mlp, x: &Tensor| -> Result<Tensor> {
            Ok(mlp
                .forward(&x.to_dtype(DType::F32)?, strength)?
                .to_dtype(x.dtype())?)
        };
        Ok(Some((run(k, context_k)?, run(v, context_v)?)))
    }

    /// The same hypernetwork with its weights on `device`.
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        let layers = self
            .layers
            .iter()
            .map(|(w, [k, v])| Ok((*w, [k.to_device(device)?, v.to_device(device)?])))
            .collect::<Result<_>>()?;
        Ok(Self {
            name: self.name.clone(),
            layers,
        })
    }
}

/// Several hypernetworks with their strengths, chained in order as A1111's
/// `apply_hypernetworks` does: the [`AttentionHook`] the UNet calls in every attention.
#[derive(Debug, Clone, Default)]
pub struct HypernetworkStack {
    entries: Vec<(Arc<Hypernetwork>, f64)>,
}

impl HypernetworkStack {
    pub fn new(entries: Vec<(Arc<Hypernetwork>, f64)>) -> Self {
        Self { entries }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[(Arc<Hypernetwork>, f64)] {
        &self.entries
    }

    /// `(context_k, context_v)` after every hypernetwork, or None when none applies.
    pub fn key_value(&self, context: &Tensor) -> Result<Option<(Tensor, Tensor)>> {
        let mut out: Option<(Tensor, Tensor)> = None;
        for (net, strength) in &self.entries {
            // Each hypernetwork maps the key context and the value context it is given.
            let (k_in, v_in) = match &out {
                Some((k, v)) => (k.clone(), v.clone()),
                None => (context.clone(), context.clone()),
            };
            if let Some(pair) = net.apply(&k_in, &v_in, *strength)? {
                out = Some(pair);
            }
        }
        Ok(out)
    }
}

impl AttentionHook for HypernetworkStack {
    fn key_value_context(
        &self,
        _site: &AttentionSite<'_>,
        context: &Tensor,
    ) -> Result<Option<(Tensor, Tensor)>> {
        self.key_value(context)
    }
}

impl crate::pipelines::StableDiffusion {
    /// Uses `nets` (with their strengths, chained in this order) in every later run, replacing
    /// the ones set before; an empty list turns hypernetworks off. A hypernetwork none of whose
    /// widths is a context width of this UNet (one made for another model family) is an error.
    pub fn set_hypernetworks(&mut self, nets: &[(Hypernetwork, f64)]) -> Result<()> {
        let cfg = self.unet_config();
        let blocks = cfg.block_out_channels.len();
        let mut widths: Vec<usize> = cfg.block_out_channels.clone();
        widths.extend((0..blocks).map(|i| cfg.cross_attention_dim.get(i)));
        let mut entries = Vec::with_capacity(nets.len());
        for (net, strength) in nets {
            if !strength.is_finite() {
                return Err(Error::invalid(format!(
                    "hypernetwork {}: strength {strength} is not a number; use e.g. 0.6",
                    net.name()
                )));
            }
            if !net.widths().iter().any(|w| widths.contains(w)) {
                return Err(Error::invalid(format!(
                    "hypernetwork {}: its context widths {:?} are none of this model's attention \
                     widths {widths:?}; it was made for another model family (e.g. SD2 vs SD1)",
                    net.name(),
                    net.widths()
                )));
            }
            entries.push((Arc::new(net.to_device(&self.device)?), *strength));
        }
        self.hypernetworks = HypernetworkStack::new(entries);
        Ok(())
    }

    /// The hypernetworks set with [`Self::set_hypernetworks`].
    pub fn hypernetworks(&self) -> &HypernetworkStack {
        &self.hypernetworks
    }

    /// The attention hook every denoising loop hands the UNet: the hypernetworks, when set.
    pub(crate) fn adapter_attention_hook(&self) -> Option<&dyn AttentionHook> {
        (!self.hypernetworks.is_empty()).then_some(&self.hypernetworks as &dyn AttentionHook)
    }

    /// A plain UNet evaluation with the model's adapters (hypernetworks) in it, for the loops
    /// that pass no other extras (InstructPix2Pix, MultiDiffusion).
    pub(crate) fn unet_forward(
        &self,
        sample: &Tensor,
        timestep: f64,
        context: &Tensor,
    ) -> Result<Tensor> {
        let extras = crate::unet::UNetExtras {
            attention_hook: self.adapter_attention_hook(),
            ..Default::default()
        };
        self.unet.forward_with(sample, timestep, context, &extras)
    }
}
