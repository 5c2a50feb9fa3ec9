//! Reading diffusers config files (`config.json`, `scheduler_config.json`) into the shared config
//! structs; their serde defaults are diffusers' and unknown fields are ignored.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::Component;
use crate::error::{Error, Result};
use crate::schedule::SchedulerConfig;
use crate::text::ClipTextConfig;
use crate::unet::UNet2DConditionConfig;
use crate::vae::AutoencoderKLConfig;

pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| {
        Error::Config(format!(
            "{}: {e}; fix the file or replace it with the model's original",
            path.display()
        ))
    })
}

/// Path of a component's config inside a diffusers folder.
pub(crate) fn config_path(dir: &Path, component: Component) -> PathBuf {
    dir.join(component.folder()).join("config.json")
}

pub(crate) fn scheduler_path(dir: &Path) -> PathBuf {
    dir.join("scheduler").join("scheduler_config.json")
}

/// The configs found in a diffusers folder; each is `None` when its file is absent.
#[derive(Debug, Default)]
pub(crate) struct ConfigSet {
    pub text: Option<(ClipTextConfig, PathBuf)>,
    pub unet: Option<(UNet2DConditionConfig, PathBuf)>,
    pub vae: Option<(AutoencoderKLConfig, PathBuf)>,
    pub scheduler: Option<(SchedulerConfig, PathBuf)>,
}

impl ConfigSet {
    pub fn read(dir: &Path) -> Result<Self> {
        fn opt<T: DeserializeOwned>(p: PathBuf) -> Result<Option<(T, PathBuf)>> {
            if p.is_file() {
                Ok(Some((read_json(&p)?, p)))
            } else {
                Ok(None)
            }
        }
        Ok(Self {
            text: opt(config_path(dir, Component::TextEncoder))?,
            unet: opt(config_path(dir, Component::Unet))?,
            vae: opt(config_path(dir, Component::Vae))?,
            scheduler: opt(scheduler_path(dir))?,
        })
    }

    /// The `OpenOptions::config` folder: it must exist and hold at least one config file.
    pub fn read_override(dir: &Path) -> Result<Self> {
        let set = Self::read(dir)?;
        if set.text.is_none() && set.unet.is_none() && set.vae.is_none() && set.scheduler.is_none()
        {
            return Err(Error::Config(format!(
                "{}: no unet/config.json, vae/config.json, text_encoder/config.json or \
                 scheduler/scheduler_config.json there; pass a diffusers folder as the config",
                dir.display()
            )));
        }
        Ok(set)
    }

    /// `self`'s entries where present, else `other`'s.
    pub fn or(self, other: ConfigSet) -> ConfigSet {
        ConfigSet {
            text: self.text.or(other.text),
            unet: self.unet.or(other.unet),
            vae: self.vae.or(other.vae),
            scheduler: self.scheduler.or(other.scheduler),
        }
    }
}
