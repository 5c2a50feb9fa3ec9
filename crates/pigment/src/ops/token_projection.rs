//! The spatial transformer's projections between the feature map and its tokens, each one GEMM
//! per batch item on strided operands (CPU f32 inference): proj_in reads the NCHW map as the
//! token matrix [H*W, C] (its transpose, as the GEMM's packing can), proj_out writes the NCHW
//! map straight from the tokens with the block's residual as the output's initial value. With
//! candle's ops these were a 1x1 conv (or linear), a permuted copy each way and an add: three
//! passes over each map that ran on one thread. diffusers: models/transformers/transformer_2d.py
//! (`proj_in` / `proj_out`, the 1x1 conv and `use_linear_projection` forms give the same numbers
//! as a linear map over channels).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};

use super::gemm::{gemm_f32, Operand};

fn applies(tensors: &[&Tensor]) -> bool {
    tensors
        .iter()
        .all(|t| matches!(t.device(), Device::Cpu) && t.dtype() == DType::F32 && !t.track_op())
}

fn bias_vec(bias: Option<&Tensor>, out: usize) -> Result<Vec<f32>> {
    match bias {
        Some(b) => b.to_vec1::<f32>(),
        None => Ok(vec![0.0; out]),
    }
}

/// `map` [B, C, H, W] -> tokens [B, H*W, out] = (map as [B, H*W, C]) W^T + b, for `weight`
/// [out, C]; None when not CPU f32 inference.
pub fn map_to_tokens(
    map: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
) -> Result<Option<Tensor>> {
    if !applies(&[map, weight]) {
        return Ok(None);
    }
    let out = weight.dim(0)?;
    let op = MapToTokens {
        bias: bias_vec(bias, out)?,
    };
    Ok(Some(
        map.contiguous()?
            .apply_op2_no_bwd(&weight.contiguous()?, &op)?,
    ))
}

/// tokens [B, H*W, C] -> map [B, out, H, W] = (tokens W^T + b) as NCHW, plus `residual`
/// [B, out, H, W]; None when not CPU f32 inference.
pub fn tokens_to_map(
    tokens: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    residual: &Tensor,
) -> Result<Option<Tensor>> {
    if !applies(&[tokens, weight, residual]) {
        return Ok(None);
    }
    let out = weight.dim(0)?;
    let op = TokensToMap {
        bias: bias_vec(bias, out)?,
    };
    Ok(Some(tokens.contiguous()?.apply_op3_no_bwd(
        &weight.contiguous()?,
        &residual.contiguous()?,
        &op,
    )?))
}

fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    super::buffers::contiguous_f32(storage, layout, "token projection")
}

struct MapToTokens {
    bias: Vec<f32>,
}

impl CustomOp2 for MapToTokens {
    fn name(&self) -> &'static str {
        "pigment-map-to-tokens"
    }

    fn cpu_fwd(
        &self,
        ms: &CpuStorage,
        ml: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = ml.shape().dims4()?;
        let (out, w_in) = wl.shape().dims2()?;
        if w_in != c || self.bias.len() != out {
            candle_core::bail!(
                "map_to_tokens: map {:?}, weight {:?}",
                ml.shape(),
                wl.shape()
            );
        }
        let (map, weight) = (f32_slice(ms, ml)?, f32_slice(ws, wl)?);
        let hw = h * w;
        let mut tokens = self.bias.repeat(b * hw);
        for (item, dst) in tokens.chunks_exact_mut(hw * out).enumerate() {
            gemm_f32(
                dst,
                out,
                // Token matrix [hw, c]: element (p, ci) = map[item][ci][p].
                Operand {
                    data: map,
                    offset: item * c * hw,
                    row_stride: 1,
                    col_stride: hw,
                },
                // W^T [c, out]: element (ci, o) = weight[o][ci].
                Operand {
                    data: weight,
                    offset: 0,
                    row_stride: 1,
                    col_stride: c,
                },
                (hw, out, c),
                true,
            )?;
        }
        Ok((CpuStorage::F32(tokens), Shape::from((b, hw, out))))
    }
}

struct TokensToMap {
    bias: Vec<f32>,
}

impl CustomOp3 for TokensToMap {
    fn name(&self) -> &'static str {
        "pigment-tokens-to-map"
    }

    fn cpu_fwd(
        &self,
        ts: &CpuStorage,
        tl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, hw, c) = tl.shape().dims3()?;
        let (out, w_in) = wl.shape().dims2()?;
        let (rb, ro, h, w) = rl.shape().dims4()?;
        if w_in != c || self.bias.len() != out || rb != b || ro != out || h * w != hw {
            candle_core::bail!(
                "tokens_to_map: tokens {:?}, weight {:?}, residual {:?}",
                tl.shape(),
                wl.shape(),
                rl.shape()
            );
        }
        let (tokens, weight) = (f32_slice(ts, tl)?, f32_slice(ws, wl)?);
        let mut map = f32_slice(rs, rl)?.to_vec();
        for (plane, &bias) in map.chunks_exact_mut(hw).zip(self.bias.iter().cycle()) {
            for v in plane {
                *v += bias;
            }
        }
        for (item, dst) in map.chunks_exact_mut(out * hw).enumerate() {
            gemm_f32(
                dst,
                hw,
                Operand {
                    data: weight,
                    offset: 0,
                    row_stride: c,
                    col_stride: 1,
                },
                // tokens[item]^T [c, hw]: element (ci, p) = tokens[item][p][ci].
                Operand {
                    data: tokens,
                    offset: item * hw * c,
                    row_stride: 1,
                    col_stride: c,
                },
                (out, hw, c),
                true,
            )?;
        }
        Ok((CpuStorage::F32(map), rl.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::max_abs_diff;

    /// Against the permute + matmul + permute + add they replace, with a non-square projection
    /// and a map that is not square: within 1e-5 (sums of 24 products of unit-size values).
    #[test]
    fn match_the_permuted_matmuls() {
        let dev = Device::Cpu;
        let (b, c, h, w, out) = (2, 24, 5, 7, 16);
        let map = Tensor::randn(0f32, 1.0, (b, c, h, w), &dev).unwrap();
        let weight = Tensor::randn(0f32, 0.3, (out, c), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, out, &dev).unwrap();
        let tokens = map_to_tokens(&map, &weight, Some(&bias)).unwrap().unwrap();
        let want = map
            .permute((0, 2, 3, 1))
            .unwrap()
            .reshape((b, h * w, c))
            .unwrap()
            .broadcast_matmul(&weight.t().unwrap())
            .unwrap()
            .broadcast_add(&bias)
            .unwrap();
        assert!(max_abs_diff(&tokens, &want) <= 1e-5);

        let back_weight = Tensor::randn(0f32, 0.3, (c, out), &dev).unwrap();
        let residual = Tensor::randn(0f32, 1.0, (b, c, h, w), &dev).unwrap();
        let got = tokens_to_map(&tokens, &back_weight, None, &residual)
            .unwrap()
            .unwrap();
        let want = (tokens
            .broadcast_matmul(&back_weight.t().unwrap())
            .unwrap()
            .reshape((b, h, w, c))
            .unwrap()
            .permute((0, 3, 1, 2))
            .unwrap()
            + &residual)
            .unwrap();
        assert!(max_abs_diff(&got, &want) <= 1e-5);
        let wrong = Tensor::zeros((b, c, h + 1, w), DType::F32, &dev).unwrap();
        assert!(tokens_to_map(&tokens, &back_weight, None, &wrong).is_err());
    }
}
