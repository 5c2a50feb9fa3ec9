//! Adapter flags of `generate`: where `<lora:NAME:W>` and `<hypernet:NAME:W>` prompt tags find
//! their files, and hypernetworks by file. The tags are cut out of the prompt as AUTOMATIC1111
//! does (only the prompt's, as A1111 parses only the positive prompts); their LoRAs join the
//! `--lora` flags, their hypernetworks the `--hypernetwork` flags.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use pigment::adapters::{find_named_file, parse_extra_networks, Hypernetwork, LoraMode};
use pigment::pipelines::StableDiffusion;

/// LoRA file types a `<lora:NAME>` tag finds (A1111's Lora folder lists the same).
const LORA_EXTENSIONS: [&str; 4] = ["safetensors", "pt", "ckpt", "bin"];

#[derive(Args, Clone, Debug)]
pub struct AdapterArgs {
    /// Folder where `<lora:NAME:WEIGHT>` tags in the prompt find NAME.safetensors (or .pt,
    /// .ckpt), searched with its subfolders, as AUTOMATIC1111's models/Lora folder.
    /// `<lora:NAME>` is weight 1. The tags are removed from the prompt before it is encoded.
    #[arg(long, value_name = "DIR")]
    pub lora_dir: Option<PathBuf>,
    /// An AUTOMATIC1111 hypernetwork (.pt) as FILE:STRENGTH (FILE alone is strength 1).
    /// Repeatable; several are chained in order, as A1111 does.
    #[arg(long = "hypernetwork", value_name = "FILE:STRENGTH")]
    pub hypernetworks: Vec<String>,
    /// Folder where `<hypernet:NAME:STRENGTH>` tags in the prompt find NAME.pt.
    #[arg(long, value_name = "DIR")]
    pub hypernetwork_dir: Option<PathBuf>,
    /// merge: LoRAs are added into the weights at load (no cost per step). runtime: computed in
    /// each forward (x W^T + scale (x A^T) B^T), as a library user switching LoRAs on a loaded
    /// model would; same image either way.
    #[arg(long, default_value = "merge", value_name = "merge|runtime")]
    pub lora_mode: String,
}

/// What the flags and the prompt's tags ask for.
pub struct PromptAdapters {
    /// The prompt with its tags cut out.
    pub prompt: String,
    /// LoRAs named by tags, to add to the `--lora` flags.
    pub loras: Vec<(PathBuf, f64)>,
    /// Hypernetworks of the flags, then of the tags.
    pub hypernetworks: Vec<(Hypernetwork, f64)>,
}

impl AdapterArgs {
    pub fn lora_mode(&self) -> Result<LoraMode> {
        Ok(self.lora_mode.parse()?)
    }

    /// Reads the prompt's tags and loads every hypernetwork, before the model loads.
    pub fn resolve(&self, prompt: &str) -> Result<PromptAdapters> {
        let (stripped, tags) = parse_extra_networks(prompt)?;
        let mut loras = Vec::new();
        let mut hypernetworks = Vec::new();
        for flag in &self.hypernetworks {
            let (path, strength) = parse_file_scale(flag, "--hypernetwork", "STRENGTH")?;
            hypernetworks.push((
                Hypernetwork::load(&path)
                    .with_context(|| format!("reading --hypernetwork {flag}"))?,
                strength,
            ));
        }
        for tag in &tags {
            match tag.kind.as_str() {
                "lora" | "lyco" => {
                    let dir = folder(self.lora_dir.as_deref(), "--lora-dir", &tag.kind, &tag.name)?;
                    let path = find_named_file(dir, &tag.name, &LORA_EXTENSIONS, "LoRA")?;
                    if !tag.extra_args.is_empty() {
                        eprintln!(
                            "warning: <{}:{}:...>: arguments after the weight ({}) are not \
                             supported and were ignored",
                            tag.kind,
                            tag.name,
                            tag.extra_args.join(":")
                        );
                    }
                    loras.push((path, tag.multiplier));
                }
                "hypernet" => {
                    let dir = folder(
                        self.hypernetwork_dir.as_deref(),
                        "--hypernetwork-dir",
                        "hypernet",
                        &tag.name,
                    )?;
                    let path = find_named_file(dir, &tag.name, &["pt"], "hypernetwork")?;
                    hypernetworks.push((Hypernetwork::load(&path)?, tag.multiplier));
                }
                other => eprintln!(
                    "warning: prompt tag <{other}:{}>: Pigment knows <lora:...> and \
                     <hypernet:...> tags; this one was removed from the prompt and ignored",
                    tag.name
                ),
            }
        }
        Ok(PromptAdapters {
            prompt: stripped,
            loras,
            hypernetworks,
        })
    }
}

impl PromptAdapters {
    /// Puts the hypernetworks into the loaded model and says so.
    pub fn apply(&self, model: &mut StableDiffusion) -> Result<()> {
        if self.hypernetworks.is_empty() {
            return Ok(());
        }
        model.set_hypernetworks(&self.hypernetworks)?;
        for (net, strength) in &self.hypernetworks {
            eprintln!(
                "hypernetwork {} at strength {strength} (context widths {:?})",
                net.name(),
                net.widths()
            );
        }
        Ok(())
    }
}

fn folder<'a>(dir: Option<&'a Path>, flag: &str, kind: &str, name: &str) -> Result<&'a Path> {
    match dir {
        Some(d) if d.is_dir() => Ok(d),
        Some(d) => anyhow::bail!("{flag} {}: no such folder", d.display()),
        None => anyhow::bail!(
            "the prompt names <{kind}:{name}>: pass {flag} DIR, the folder that holds {name}"
        ),
    }
}

/// FILE:SCALE, FILE alone being 1; the scale is what follows the last `:` when it is a number,
/// so Windows paths keep their drive letter.
fn parse_file_scale(arg: &str, flag: &str, what: &str) -> Result<(PathBuf, f64)> {
    if let Some((file, scale)) = arg.rsplit_once(':') {
        if let Ok(v) = scale.parse::<f64>() {
            if !v.is_finite() {
                anyhow::bail!("{flag} {arg}: the {what} must be a finite number, e.g. FILE:0.6");
            }
            return Ok((PathBuf::from(file), v));
        }
    }
    if arg.is_empty() {
        anyhow::bail!("{flag} needs FILE:{what}, e.g. {flag} sketch.pt:0.6");
    }
    Ok((PathBuf::from(arg), 1.0))
}
