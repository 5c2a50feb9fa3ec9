//! Timestep conditioning: the sinusoidal features of the timestep (Ho et al. 2020, after the
//! Transformer's positional encoding) and the MLP that turns them into the embedding every resnet
//! receives. Mirrors diffusers models/embeddings.py (`get_timestep_embedding`, `Timesteps`,
//! `TimestepEmbedding`).

use candle_core::{Device, Module, Tensor};
use candle_nn::VarBuilder;

use crate::ops::Linear;

use crate::error::Result;

/// diffusers `get_timestep_embedding(t, dim, flip_sin_to_cos, downscale_freq_shift)` for one
/// timestep, repeated for the batch: `[batch, dim]` f32.
///
/// freq_i = exp(-ln(10000) * i / (dim/2 - shift)), features = [sin(t freq), cos(t freq)]
/// (or [cos, sin] with `flip_sin_to_cos`), zero-padded when `dim` is odd. Computed in f32 step by
/// step in the reference's order (torch casts the Python scalars to f32 and the timestep to f32
/// before multiplying), so that large timesteps give the same phases as diffusers.
pub fn timestep_embedding(
    timestep: f64,
    batch: usize,
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
    device: &Device,
) -> Result<Tensor> {
    let row = embedding_row(timestep, dim, flip_sin_to_cos, freq_shift);
    let rows: Vec<f32> = row.iter().copied().cycle().take(batch * dim).collect();
    Ok(Tensor::from_vec(rows, (batch, dim), device)?)
}

/// [`timestep_embedding`] with one timestep per batch row (training draws a timestep per
/// sample): `[timesteps.len(), dim]` f32.
pub fn timestep_embeddings(
    timesteps: &[f64],
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
    device: &Device,
) -> Result<Tensor> {
    let rows: Vec<f32> = timesteps
        .iter()
        .flat_map(|&t| embedding_row(t, dim, flip_sin_to_cos, freq_shift))
        .collect();
    Ok(Tensor::from_vec(rows, (timesteps.len(), dim), device)?)
}

fn embedding_row(timestep: f64, dim: usize, flip_sin_to_cos: bool, freq_shift: f64) -> Vec<f32> {
    let half = dim / 2;
    let neg_log_period = -(10000f64.ln()) as f32;
    let denominator = (half as f64 - freq_shift) as f32;
    let t = timestep as f32;
    let args: Vec<f32> = (0..half)
        .map(|i| t * ((neg_log_period * i as f32) / denominator).exp())
        .collect();
    let sin = args.iter().map(|a| a.sin());
    let cos = args.iter().map(|a| a.cos());
    let mut row: Vec<f32> = if flip_sin_to_cos {
        cos.chain(sin).collect()
    } else {
        sin.chain(cos).collect()
    };
    row.resize(dim, 0.0);
    row
}

/// diffusers `TimestepEmbedding` with act_fn silu and no post-activation:
/// linear_2(silu(linear_1(features + cond_proj(cond)))). `cond_proj` exists only for
/// `time_cond_proj_dim` (LCM-distilled UNets, which condition on the guidance scale).
pub struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
    cond_proj: Option<Linear>,
}

impl TimestepEmbedding {
    pub fn new(
        vb: VarBuilder,
        in_dim: usize,
        embed_dim: usize,
        cond_proj_dim: Option<usize>,
    ) -> Result<Self> {
        Ok(Self {
            linear_1: crate::ops::linear(in_dim, embed_dim, vb.pp("linear_1"))?,
            linear_2: crate::ops::linear(embed_dim, embed_dim, vb.pp("linear_2"))?,
            cond_proj: match cond_proj_dim {
                Some(d) => Some(crate::ops::linear_no_bias(d, in_dim, vb.pp("cond_proj"))?),
                None => None,
            },
        })
    }

    /// `features` [B, in_dim], `cond` [B, cond_proj_dim] (used only if the model has cond_proj).
    pub fn forward(&self, features: &Tensor, cond: Option<&Tensor>) -> Result<Tensor> {
        let x = match (&self.cond_proj, cond) {
            (Some(proj), Some(c)) => (features + proj.forward(c)?)?,
            _ => features.clone(),
        };
        let x = self.linear_1.forward(&x)?.silu()?;
        Ok(self.linear_2.forward(&x)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_frequency_is_one_and_flip_puts_cos_first() {
        let e = timestep_embedding(2.0, 2, 6, true, 0.0, &Device::Cpu).unwrap();
        let v = e.to_vec2::<f32>().unwrap();
        assert_eq!(v[0], v[1]);
        // i = 0: frequency 1 -> cos(2), sin(2)
        assert!((v[0][0] - 2f32.cos()).abs() < 1e-7);
        assert!((v[0][3] - 2f32.sin()).abs() < 1e-7);
        // last frequency: exp(-ln(1e4) * 2 / 3)
        let f = (-(10000f32.ln()) * 2.0 / 3.0).exp();
        assert!((v[0][2] - (2.0 * f).cos()).abs() < 1e-6);
    }

    #[test]
    fn per_sample_rows_match_the_shared_timestep() {
        let rows = timestep_embeddings(&[3.0, 700.0], 8, true, 1.0, &Device::Cpu).unwrap();
        for (i, t) in [3.0, 700.0].into_iter().enumerate() {
            let one = timestep_embedding(t, 1, 8, true, 1.0, &Device::Cpu).unwrap();
            assert_eq!(
                rows.get(i).unwrap().to_vec1::<f32>().unwrap(),
                one.get(0).unwrap().to_vec1::<f32>().unwrap()
            );
        }
    }

    #[test]
    fn odd_width_is_zero_padded() {
        let e = timestep_embedding(5.0, 1, 7, false, 1.0, &Device::Cpu).unwrap();
        let v = e.to_vec2::<f32>().unwrap();
        assert_eq!(v[0].len(), 7);
        assert_eq!(v[0][6], 0.0);
        assert!((v[0][0] - 5f32.sin()).abs() < 1e-7);
    }
}
