//! The samplers Pigment offers and their names: Pigment's CLI names and AUTOMATIC1111's (which
//! is what PNG generation parameters from other tools carry).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SamplerKind {
    /// Ancestral DDPM sampling (Ho et al. 2020): DDPMScheduler.
    Ddpm,
    /// DDIM (Song et al. 2020), deterministic unless eta > 0: DDIMScheduler.
    Ddim,
    /// Euler's method on the probability-flow ODE (Karras et al. 2022): EulerDiscreteScheduler.
    Euler,
    /// Euler with fresh noise each step: EulerAncestralDiscreteScheduler.
    EulerAncestral,
    /// Heun's second-order method (Karras et al. 2022, Alg. 1): HeunDiscreteScheduler.
    Heun,
    /// DPM-Solver++(2M) (Lu et al. 2022): DPMSolverMultistepScheduler, dpmsolver++, order 2.
    DpmPp2M,
    /// The SDE variant of DPM-Solver++(2M): DPMSolverMultistepScheduler, sde-dpmsolver++.
    DpmPp2MSde,
    /// Latent consistency model sampling (Luo et al. 2023): LCMScheduler.
    Lcm,
}

const ALL: [SamplerKind; 8] = [
    SamplerKind::Ddpm,
    SamplerKind::Ddim,
    SamplerKind::Euler,
    SamplerKind::EulerAncestral,
    SamplerKind::Heun,
    SamplerKind::DpmPp2M,
    SamplerKind::DpmPp2MSde,
    SamplerKind::Lcm,
];

impl SamplerKind {
    pub fn all() -> &'static [SamplerKind] {
        &ALL
    }

    /// The name the `pigment` CLI uses (`--sampler`).
    pub fn cli_name(&self) -> &'static str {
        match self {
            SamplerKind::Ddpm => "ddpm",
            SamplerKind::Ddim => "ddim",
            SamplerKind::Euler => "euler",
            SamplerKind::EulerAncestral => "euler_a",
            SamplerKind::Heun => "heun",
            SamplerKind::DpmPp2M => "dpmpp_2m",
            SamplerKind::DpmPp2MSde => "dpmpp_2m_sde",
            SamplerKind::Lcm => "lcm",
        }
    }

    /// AUTOMATIC1111's name (without its " Karras" suffix).
    pub fn a1111_name(&self) -> &'static str {
        match self {
            SamplerKind::Ddpm => "DDPM",
            SamplerKind::Ddim => "DDIM",
            SamplerKind::Euler => "Euler",
            SamplerKind::EulerAncestral => "Euler a",
            SamplerKind::Heun => "Heun",
            SamplerKind::DpmPp2M => "DPM++ 2M",
            SamplerKind::DpmPp2MSde => "DPM++ 2M SDE",
            SamplerKind::Lcm => "LCM",
        }
    }

    /// Whether the Karras sigma schedule is available: where diffusers' scheduler has
    /// `use_karras_sigmas` (EulerAncestralDiscreteScheduler has none).
    pub fn supports_karras(&self) -> bool {
        matches!(
            self,
            SamplerKind::Euler | SamplerKind::Heun | SamplerKind::DpmPp2M | SamplerKind::DpmPp2MSde
        )
    }

    /// Parse a name that may carry AUTOMATIC1111's " Karras" suffix ("DPM++ 2M Karras"):
    /// the sampler and whether the Karras schedule was asked for.
    pub fn parse_with_schedule(name: &str) -> Result<(SamplerKind, bool)> {
        let key = normalize(name);
        match key.strip_suffix("_karras") {
            Some(base) => {
                let kind = lookup(base).ok_or_else(|| unknown(name))?;
                if !kind.supports_karras() {
                    return Err(Error::invalid(format!(
                        "sampler '{name}': {} has no Karras schedule",
                        kind.cli_name()
                    )));
                }
                Ok((kind, true))
            }
            None => Ok((lookup(&key).ok_or_else(|| unknown(name))?, false)),
        }
    }
}

/// Lowercase, "++" as "pp", spaces and hyphens as underscores: "DPM++ 2M" -> "dpmpp_2m".
fn normalize(name: &str) -> String {
    name.trim()
        .to_ascii_lowercase()
        .replace("++", "pp")
        .replace([' ', '-'], "_")
}

fn lookup(key: &str) -> Option<SamplerKind> {
    Some(match key {
        "ddpm" => SamplerKind::Ddpm,
        "ddim" => SamplerKind::Ddim,
        "euler" => SamplerKind::Euler,
        "euler_a" | "euler_ancestral" => SamplerKind::EulerAncestral,
        "heun" => SamplerKind::Heun,
        "dpmpp_2m" => SamplerKind::DpmPp2M,
        "dpmpp_2m_sde" => SamplerKind::DpmPp2MSde,
        "lcm" => SamplerKind::Lcm,
        _ => return None,
    })
}

fn unknown(name: &str) -> Error {
    let names: Vec<&str> = ALL.iter().map(|k| k.cli_name()).collect();
    Error::invalid(format!(
        "unknown sampler '{name}'; valid samplers are {} (AUTOMATIC1111 names such as \"Euler a\" and \"DPM++ 2M\" work too)",
        names.join(", ")
    ))
}

impl FromStr for SamplerKind {
    type Err = Error;

    /// CLI names (ddpm, ddim, euler, euler_a, heun, dpmpp_2m, dpmpp_2m_sde, lcm; also
    /// euler-ancestral / euler_ancestral) and AUTOMATIC1111 names, case-insensitive.
    fn from_str(name: &str) -> Result<Self> {
        let key = normalize(name);
        if let Some(base) = key.strip_suffix("_karras") {
            if let Some(kind) = lookup(base) {
                return Err(Error::invalid(format!(
                    "sampler '{name}' names a schedule too: use the sampler '{}' with the Karras schedule turned on",
                    kind.cli_name()
                )));
            }
        }
        lookup(&key).ok_or_else(|| unknown(name))
    }
}

impl fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.cli_name())
    }
}
