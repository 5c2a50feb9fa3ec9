//! The ControlNet flags of `pigment generate`: one unit per `--controlnet`, matched by order with
//! `--control-image`, `--control-scale`, `--control-start`, `--control-end` and `--preprocess`
//! (each given once for all units, or once per unit).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use image::RgbImage;
use pigment::control::{canny, control_image_from_edges, load_controlnet, scribble_from_edges};
use pigment::image::load_image;
use pigment::pipelines::{
    control_image_tensor, ControlNetRequest, ControlNetUnit, StableDiffusion,
};

#[derive(Args, Default)]
pub struct ControlArgs {
    /// A ControlNet (Zhang 2023): a diffusers folder (config.json +
    /// diffusion_pytorch_model.safetensors) or an original .safetensors/.pth file. Repeat for
    /// several; their residuals are summed (diffusers' MultiControlNet).
    #[arg(long = "controlnet", value_name = "PATH")]
    pub controlnets: Vec<PathBuf>,
    /// The control image of each --controlnet, in order (edges, scribble, ...; or a photo with
    /// --preprocess). It must be the output size; without --width/--height the first one's
    /// size is used.
    #[arg(long = "control-image", value_name = "FILE")]
    pub images: Vec<PathBuf>,
    /// Conditioning scale of each ControlNet (one value for all, or one each) [default: 1].
    #[arg(long = "control-scale", value_name = "S")]
    pub scales: Vec<f64>,
    /// Fraction of the steps at which each ControlNet starts acting [default: 0].
    #[arg(long = "control-start", value_name = "F")]
    pub starts: Vec<f64>,
    /// Fraction of the steps after which each ControlNet stops [default: 1].
    #[arg(long = "control-end", value_name = "F")]
    pub ends: Vec<f64>,
    /// Make each control image from a photo first: canny (edges, OpenCV's cv2.Canny), scribble
    /// (thick strokes from the edges) or none [default: none].
    #[arg(long = "preprocess", value_name = "canny|scribble|none")]
    pub preprocess: Vec<String>,
    /// Canny's low hysteresis threshold (ControlNet's default 100).
    #[arg(long, default_value_t = 100.0)]
    pub canny_low: f32,
    /// Canny's high hysteresis threshold (ControlNet's default 200).
    #[arg(long, default_value_t = 200.0)]
    pub canny_high: f32,
    /// diffusers' guess mode: the ControlNets see only the prompt side of guidance and weight
    /// their residuals 0.1 (shallow) to 1 (deep), so the control image leads even without a
    /// prompt.
    #[arg(long)]
    pub guess_mode: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Preprocess {
    None,
    Canny,
    Scribble,
}

/// One unit's flags, with its control image made (and preprocessed) but no model loaded yet.
struct UnitSpec {
    path: PathBuf,
    image: RgbImage,
    preprocess: Preprocess,
    scale: f64,
    start: f64,
    end: f64,
}

/// The checked flags, before the model loads.
pub struct ControlPlan {
    units: Vec<UnitSpec>,
    guess_mode: bool,
    canny: (f32, f32),
}

/// Value `i` of a per-unit list: the only one, one each, or the default when none is given.
fn pick<T: Copy>(values: &[T], i: usize, default: T) -> T {
    match values {
        [] => default,
        [one] => *one,
        many => many[i],
    }
}

fn check_count(flag: &str, given: usize, units: usize) -> Result<()> {
    if given > 1 && given != units {
        anyhow::bail!(
            "{given} {flag} values for {units} --controlnet: give one value for all, or one per \
             --controlnet in the same order"
        );
    }
    Ok(())
}

impl ControlArgs {
    fn any(&self) -> bool {
        !(self.controlnets.is_empty()
            && self.images.is_empty()
            && self.scales.is_empty()
            && self.starts.is_empty()
            && self.ends.is_empty()
            && self.preprocess.is_empty()
            && !self.guess_mode)
    }

    /// Checks the flags and reads (and preprocesses) the control images: everything a user
    /// typed is checked before the model loads. None without ControlNet flags.
    pub fn plan(&self) -> Result<Option<ControlPlan>> {
        if !self.any() {
            return Ok(None);
        }
        let n = self.controlnets.len();
        if n == 0 {
            anyhow::bail!(
                "--control-image/--control-scale/--control-start/--control-end/--preprocess/\
                 --guess-mode need a ControlNet: pass --controlnet PATH"
            );
        }
        if self.images.len() != n {
            anyhow::bail!(
                "{} --controlnet but {} --control-image: give one control image per ControlNet, \
                 in the same order",
                n,
                self.images.len()
            );
        }
        check_count("--control-scale", self.scales.len(), n)?;
        check_count("--control-start", self.starts.len(), n)?;
        check_count("--control-end", self.ends.len(), n)?;
        check_count("--preprocess", self.preprocess.len(), n)?;
        if !(self.canny_low.is_finite() && self.canny_high.is_finite())
            || self.canny_low < 0.0
            || self.canny_low > self.canny_high
        {
            anyhow::bail!(
                "--canny-low {} / --canny-high {}: need 0 <= low <= high (ControlNet uses 100 and 200)",
                self.canny_low,
                self.canny_high
            );
        }
        let mut units = Vec::with_capacity(n);
        for (i, path) in self.controlnets.iter().enumerate() {
            let (scale, start, end) = (
                pick(&self.scales, i, 1.0),
                pick(&self.starts, i, 0.0),
                pick(&self.ends, i, 1.0),
            );
            if !scale.is_finite() {
                anyhow::bail!("--control-scale {scale}: must be a finite number, e.g. 1 or 0.5");
            }
            if !(0.0..=1.0).contains(&start) || !(0.0..=1.0).contains(&end) || start >= end {
                anyhow::bail!(
                    "--control-start {start} / --control-end {end} (ControlNet {i}): need 0 <= \
                     start < end <= 1, fractions of the steps (e.g. 0 and 1 for all of them)"
                );
            }
            let preprocess = match self.preprocess.get(i).or(self.preprocess.first()) {
                None => Preprocess::None,
                Some(p) => match p.trim().to_ascii_lowercase().as_str() {
                    "none" => Preprocess::None,
                    "canny" => Preprocess::Canny,
                    "scribble" => Preprocess::Scribble,
                    other => {
                        anyhow::bail!("--preprocess {other}: unknown; use canny, scribble or none")
                    }
                },
            };
            if !path.exists() {
                anyhow::bail!(
                    "--controlnet {}: no such file or folder; pass a diffusers ControlNet folder \
                     or a ControlNet .safetensors/.pth file",
                    path.display()
                );
            }
            let image = load_image(&self.images[i])
                .with_context(|| format!("reading --control-image {}", self.images[i].display()))?;
            let image = self.preprocessed(image, preprocess)?;
            units.push(UnitSpec {
                path: path.clone(),
                image,
                preprocess,
                scale,
                start,
                end,
            });
        }
        Ok(Some(ControlPlan {
            units,
            guess_mode: self.guess_mode,
            canny: (self.canny_low, self.canny_high),
        }))
    }

    fn preprocessed(&self, image: RgbImage, preprocess: Preprocess) -> Result<RgbImage> {
        Ok(match preprocess {
            Preprocess::None => image,
            Preprocess::Canny => {
                control_image_from_edges(&canny(&image, self.canny_low, self.canny_high)?)
            }
            Preprocess::Scribble => control_image_from_edges(&scribble_from_edges(&canny(
                &image,
                self.canny_low,
                self.canny_high,
            )?)),
        })
    }
}

impl ControlPlan {
    /// The first control image's (width, height): the output size when none is given, as
    /// diffusers takes it from the control image.
    pub fn size(&self) -> Option<(usize, usize)> {
        self.units
            .first()
            .map(|u| (u.image.width() as usize, u.image.height() as usize))
    }

    /// Loads the ControlNets (in the model's dtype, on its device; single files take what their
    /// shapes cannot tell from the model's UNet) and builds the request.
    pub fn request(&self, model: &StableDiffusion) -> Result<ControlNetRequest> {
        let mut units = Vec::with_capacity(self.units.len());
        let mut loaded: Vec<(&Path, Arc<pigment::control::ControlNetModel>)> = Vec::new();
        for u in &self.units {
            let net = match loaded.iter().find(|(p, _)| *p == u.path.as_path()) {
                Some((_, net)) => net.clone(),
                None => {
                    let net = Arc::new(
                        load_controlnet(
                            &u.path,
                            Some(model.unet_config()),
                            model.dtype,
                            &model.device,
                        )
                        .with_context(|| format!("loading --controlnet {}", u.path.display()))?,
                    );
                    loaded.push((&u.path, net.clone()));
                    net
                }
            };
            units.push(ControlNetUnit {
                model: net,
                image: control_image_tensor(&u.image, &model.device)?,
                scale: u.scale,
                start: u.start,
                end: u.end,
            });
        }
        Ok(ControlNetRequest {
            units,
            guess_mode: self.guess_mode,
        })
    }

    /// PNG parameters, roughly as AUTOMATIC1111's ControlNet extension writes them:
    /// `ControlNet 0: "Module: canny, Model: NAME, Weight: 1, Guidance Start: 0, ..."`.
    pub fn parameters(&self) -> Vec<(String, String)> {
        self.units
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let name = u
                    .path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let mut fields = vec![
                    format!(
                        "Module: {}",
                        match u.preprocess {
                            Preprocess::None => "none",
                            Preprocess::Canny => "canny",
                            Preprocess::Scribble => "scribble",
                        }
                    ),
                    format!("Model: {name}"),
                    format!("Weight: {}", u.scale),
                ];
                if u.preprocess != Preprocess::None {
                    fields.push(format!("Threshold A: {}", self.canny.0));
                    fields.push(format!("Threshold B: {}", self.canny.1));
                }
                fields.push(format!("Guidance Start: {}", u.start));
                fields.push(format!("Guidance End: {}", u.end));
                fields.push(format!(
                    "Control Mode: {}",
                    if self.guess_mode {
                        "ControlNet is more important"
                    } else {
                        "Balanced"
                    }
                ));
                (format!("ControlNet {i}"), fields.join(", "))
            })
            .collect()
    }
}
