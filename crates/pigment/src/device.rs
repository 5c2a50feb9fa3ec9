//! Backend and dtype choice. CPU with f32 compute is the default; CUDA and Metal are compiled in
//! only with the `cuda` / `metal` cargo features.

use crate::error::{Error, Result};
use candle_core::{DType, Device};

/// Which device to run on, as a user names it (`cpu`, `cuda`, `cuda:1`, `metal`).
pub fn parse_device(name: &str) -> Result<Device> {
    let name = name.trim().to_ascii_lowercase();
    let (kind, ordinal) = match name.split_once(':') {
        Some((k, o)) => {
            let ordinal = o.parse::<usize>().map_err(|_| {
                Error::invalid(format!(
                    "device `{name}`: `{o}` is not a device number (try `cuda:0`)"
                ))
            })?;
            (k.to_string(), ordinal)
        }
        None => (name.clone(), 0),
    };
    match kind.as_str() {
        "cpu" => Ok(Device::Cpu),
        "cuda" => {
            if cfg!(feature = "cuda") {
                Ok(Device::new_cuda(ordinal)?)
            } else {
                Err(Error::invalid(
                    "device `cuda`: this build has no CUDA support; rebuild with `--features cuda`",
                ))
            }
        }
        "metal" => {
            if cfg!(feature = "metal") {
                Ok(Device::new_metal(ordinal)?)
            } else {
                Err(Error::invalid(
                    "device `metal`: this build has no Metal support; rebuild with `--features metal`",
                ))
            }
        }
        other => Err(Error::invalid(format!(
            "unknown device `{other}`: use `cpu`, `cuda[:N]` or `metal`"
        ))),
    }
}

/// Compute dtype as a user names it (`f32`, `f16`, `bf16`).
pub fn parse_dtype(name: &str) -> Result<DType> {
    match name.trim().to_ascii_lowercase().as_str() {
        "f32" | "fp32" | "float32" => Ok(DType::F32),
        "f16" | "fp16" | "float16" | "half" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        other => Err(Error::invalid(format!(
            "unknown dtype `{other}`: use `f32`, `f16` or `bf16`"
        ))),
    }
}

/// Fixes the CPU thread count for the rest of the process by setting `RAYON_NUM_THREADS` (when
/// unset) to the count candle would pick. candle reads that variable at every matrix product
/// (`candle_core::utils::get_num_threads`) and, when it is unset, recounts the cores from
/// /proc and /sys each time: about 7000 file opens in one 20-step generation of the built-in
/// model, a quarter of its time. Call it at start-up, before other threads run (setting an
/// environment variable races with threads reading the environment); the CLI does. Returns
/// the thread count.
pub fn pin_cpu_thread_count() -> usize {
    let threads = candle_core::utils::get_num_threads();
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
    threads
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_rejects_unknown() {
        assert!(matches!(parse_device("cpu").unwrap(), Device::Cpu));
        let err = parse_device("tpu").unwrap_err().to_string();
        assert!(err.contains("unknown device `tpu`"), "{err}");
        assert_eq!(parse_dtype("fp16").unwrap(), DType::F16);
        assert!(parse_dtype("f8").is_err());
    }
}
