//! Generation parameters in AUTOMATIC1111's "infotext" format, the text A1111, Forge, ComfyUI
//! readers and image sites show for a PNG's `parameters` chunk:
//!
//! ```text
//! a photo of a cat
//! Negative prompt: blurry
//! Steps: 20, Sampler: Euler a, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x512, Model hash: abcd1234, Model: name, Clip skip: 2
//! ```
//!
//! Writing follows A1111's `create_infotext` (modules/processing.py): the prompt, a
//! `Negative prompt:` line only when there is one, then `key: value` pairs joined by ", " in
//! A1111's order, extra pairs last, the whole text stripped. A value containing a comma, colon
//! or newline is written as a JSON string (`quote` in modules/infotext_utils.py).
//! Reading follows `parse_generation_parameters` (modules/infotext_utils.py): the last line is
//! the parameters line if the `key: value` pattern matches at least 3 times in it; the lines
//! before are the prompt until one starts with `Negative prompt:`; each line is stripped.

use crate::error::{Error, Result};
use regex::Regex;
use std::sync::OnceLock;

/// What produced an image, as A1111 records it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationParameters {
    pub prompt: String,
    /// Empty when there was none (then no `Negative prompt:` line is written).
    pub negative_prompt: String,
    pub steps: usize,
    /// A1111's sampler name: "Euler a", "DPM++ 2M", "DPM++ 2M SDE", "DDIM", "Heun", "LCM"...
    pub sampler: String,
    /// A1111's "Schedule type", e.g. "Karras".
    pub schedule_type: Option<String>,
    pub cfg_scale: f64,
    pub seed: u64,
    pub width: usize,
    pub height: usize,
    pub model_name: Option<String>,
    pub model_hash: Option<String>,
    /// A1111 writes it only when above 1.
    pub clip_skip: Option<usize>,
    /// Any other `key: value` pairs, in order (e.g. "Eta", "Denoising strength").
    pub extra: Vec<(String, String)>,
}

const STEPS: &str = "Steps";
const SAMPLER: &str = "Sampler";
const SCHEDULE_TYPE: &str = "Schedule type";
const CFG_SCALE: &str = "CFG scale";
const SEED: &str = "Seed";
const SIZE: &str = "Size";
const MODEL_HASH: &str = "Model hash";
const MODEL: &str = "Model";
const CLIP_SKIP: &str = "Clip skip";
const NEGATIVE_PROMPT: &str = "Negative prompt:";

/// `re_param` of modules/infotext_utils.py: a key, then a JSON-quoted or comma-free value.
fn param_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r#"\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)"#)
            .expect("the infotext pattern is valid")
    })
}

/// A1111's `quote`: values with a comma, newline or colon become JSON strings. A value that
/// already starts with a quote is quoted too, so that reading it back cannot unquote it.
fn quote(value: &str) -> String {
    if value.contains([',', '\n', ':']) || value.starts_with('"') {
        serde_json::to_string(value).unwrap_or_else(|_| value.to_string())
    } else {
        value.to_string()
    }
}

/// A1111's `unquote`: a value in double quotes is decoded as JSON, if it is valid JSON.
fn unquote(value: &str) -> String {
    if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
        if let Ok(decoded) = serde_json::from_str::<String>(value) {
            return decoded;
        }
    }
    value.to_string()
}

impl GenerationParameters {
    /// The `key: value` pairs in A1111's order (theirs first, then `extra`).
    fn pairs(&self) -> Vec<(&str, String)> {
        let mut pairs = vec![
            (STEPS, self.steps.to_string()),
            (SAMPLER, self.sampler.clone()),
        ];
        if let Some(schedule) = &self.schedule_type {
            pairs.push((SCHEDULE_TYPE, schedule.clone()));
        }
        pairs.push((CFG_SCALE, self.cfg_scale.to_string()));
        pairs.push((SEED, self.seed.to_string()));
        pairs.push((SIZE, format!("{}x{}", self.width, self.height)));
        if let Some(hash) = &self.model_hash {
            pairs.push((MODEL_HASH, hash.clone()));
        }
        if let Some(name) = &self.model_name {
            pairs.push((MODEL, name.clone()));
        }
        if let Some(skip) = self.clip_skip {
            pairs.push((CLIP_SKIP, skip.to_string()));
        }
        for (key, value) in &self.extra {
            pairs.push((key.as_str(), value.clone()));
        }
        pairs
    }

    /// The infotext A1111 would write for these parameters.
    pub fn to_infotext(&self) -> String {
        let params = self
            .pairs()
            .into_iter()
            .map(|(key, value)| format!("{key}: {}", quote(&value)))
            .collect::<Vec<_>>()
            .join(", ");
        let negative = if self.negative_prompt.is_empty() {
            String::new()
        } else {
            format!("\n{NEGATIVE_PROMPT} {}", self.negative_prompt)
        };
        format!("{}{negative}\n{params}", self.prompt)
            .trim()
            .to_string()
    }

    /// Parses an infotext (as written by A1111, Forge, Pigment...). Steps, Sampler, CFG scale,
    /// Seed and Size are required; pairs Pigment has no field for go to `extra`.
    pub fn from_infotext(text: &str) -> Result<Self> {
        let re = param_regex();
        let mut lines: Vec<&str> = text.trim().split('\n').collect();
        let mut last = lines.pop().unwrap_or("");
        if re.captures_iter(last).count() < 3 {
            lines.push(last);
            last = "";
        }

        let mut params = GenerationParameters::default();
        let mut in_negative = false;
        for line in lines {
            let mut line = line.trim();
            if let Some(rest) = line.strip_prefix(NEGATIVE_PROMPT) {
                in_negative = true;
                line = rest.trim();
            }
            let target = if in_negative {
                &mut params.negative_prompt
            } else {
                &mut params.prompt
            };
            if !target.is_empty() {
                target.push('\n');
            }
            target.push_str(line);
        }

        let (mut steps, mut sampler, mut cfg, mut seed, mut size) = (None, None, None, None, None);
        for caps in re.captures_iter(last) {
            let key = &caps[1];
            let value = unquote(&caps[2]);
            match key {
                STEPS => steps = Some(parse_number(key, &value)?),
                SAMPLER => sampler = Some(value),
                SCHEDULE_TYPE => params.schedule_type = Some(value),
                CFG_SCALE => cfg = Some(parse_number(key, &value)?),
                SEED => seed = Some(parse_number(key, &value)?),
                SIZE => size = Some(parse_size(&value)?),
                MODEL_HASH => params.model_hash = Some(value),
                MODEL => params.model_name = Some(value),
                CLIP_SKIP => params.clip_skip = Some(parse_number(key, &value)?),
                _ => params.extra.push((key.to_string(), value)),
            }
        }

        let missing: Vec<&str> = [
            (STEPS, steps.is_none()),
            (SAMPLER, sampler.is_none()),
            (CFG_SCALE, cfg.is_none()),
            (SEED, seed.is_none()),
            (SIZE, size.is_none()),
        ]
        .into_iter()
        .filter_map(|(key, absent)| absent.then_some(key))
        .collect();
        match (steps, sampler, cfg, seed, size) {
            (Some(steps), Some(sampler), Some(cfg), Some(seed), Some((width, height))) => {
                params.steps = steps;
                params.sampler = sampler;
                params.cfg_scale = cfg;
                params.seed = seed;
                params.width = width;
                params.height = height;
                Ok(params)
            }
            _ => Err(Error::invalid(format!(
                "generation parameters lack {}: expected a last line like \
                 \"Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512\"",
                missing.join(", ")
            ))),
        }
    }
}

fn parse_number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T> {
    value.trim().parse().map_err(|_| {
        Error::invalid(format!(
            "generation parameters: \"{key}: {value}\" is not a valid number"
        ))
    })
}

/// A1111's `re_imagesize`: `WIDTHxHEIGHT`.
fn parse_size(value: &str) -> Result<(usize, usize)> {
    let bad = || {
        Error::invalid(format!(
            "generation parameters: \"Size: {value}\" is not WIDTHxHEIGHT (e.g. 512x768)"
        ))
    };
    let (w, h) = value.trim().split_once('x').ok_or_else(bad)?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(w) || !digits(h) {
        return Err(bad());
    }
    Ok((w.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> GenerationParameters {
        GenerationParameters {
            prompt: "a photo of a cat".into(),
            negative_prompt: "blurry".into(),
            steps: 20,
            sampler: "DPM++ 2M".into(),
            schedule_type: Some("Karras".into()),
            cfg_scale: 7.0,
            seed: 1,
            width: 512,
            height: 768,
            model_name: Some("v1-5-pruned-emaonly".into()),
            model_hash: Some("6ce0161689".into()),
            clip_skip: Some(2),
            extra: vec![],
        }
    }

    #[test]
    fn writes_the_a1111_layout() {
        assert_eq!(
            example().to_infotext(),
            "a photo of a cat\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M, \
             Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x768, \
             Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Clip skip: 2"
        );
    }

    #[test]
    fn omits_what_is_absent() {
        let p = GenerationParameters {
            negative_prompt: String::new(),
            schedule_type: None,
            model_name: None,
            model_hash: None,
            clip_skip: None,
            cfg_scale: 7.5,
            sampler: "Euler a".into(),
            ..example()
        };
        assert_eq!(
            p.to_infotext(),
            "a photo of a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 1, Size: 512x768"
        );
    }

    #[test]
    fn quotes_values_with_commas_colons_and_newlines() {
        let p = GenerationParameters {
            model_name: Some("my, model: v2".into()),
            extra: vec![("Lora hashes".into(), "a: 1, b: 2".into())],
            ..example()
        };
        let text = p.to_infotext();
        assert!(text.contains(r#"Model: "my, model: v2""#), "{text}");
        assert!(text.contains(r#"Lora hashes: "a: 1, b: 2""#), "{text}");
        assert_eq!(GenerationParameters::from_infotext(&text).unwrap(), p);
    }

    #[test]
    fn round_trips() {
        let cases = [
            example(),
            GenerationParameters {
                prompt: "line one\nline two, with comma".into(),
                negative_prompt: "bad\nworse".into(),
                seed: u64::MAX,
                cfg_scale: 0.1,
                extra: vec![
                    ("Eta".into(), "0.3".into()),
                    ("Denoising strength".into(), "0.75".into()),
                    ("Note".into(), "\"quoted\"".into()),
                    ("Path".into(), "C:\\models\\x".into()),
                ],
                ..example()
            },
            GenerationParameters {
                prompt: String::new(),
                negative_prompt: String::new(),
                ..example()
            },
        ];
        for p in cases {
            let text = p.to_infotext();
            assert_eq!(
                GenerationParameters::from_infotext(&text).unwrap(),
                p,
                "{text}"
            );
        }
    }

    #[test]
    fn reads_a1111_output() {
        // From the docstring of parse_generation_parameters (modules/infotext_utils.py),
        // with a version field as A1111 1.x writes it.
        let text =
            "girl with an artist's beret, determined, blue eyes, desert scene, ((eyeshadow))\n\
                    Negative prompt: ugly, fat, (((deformed))), [blurry]\n\
                    Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512, \
                    Model hash: 45dee52b, Version: v1.10.1";
        let p = GenerationParameters::from_infotext(text).unwrap();
        assert_eq!(
            p.prompt,
            "girl with an artist's beret, determined, blue eyes, desert scene, ((eyeshadow))"
        );
        assert_eq!(p.negative_prompt, "ugly, fat, (((deformed))), [blurry]");
        assert_eq!(
            (p.steps, p.sampler.as_str(), p.seed),
            (20, "Euler a", 965400086)
        );
        assert_eq!((p.cfg_scale, p.width, p.height), (7.0, 512, 512));
        assert_eq!(p.model_hash.as_deref(), Some("45dee52b"));
        assert_eq!(p.model_name, None);
        assert_eq!(
            p.extra,
            vec![("Version".to_string(), "v1.10.1".to_string())]
        );
    }

    #[test]
    fn a_prompt_alone_is_an_error_naming_the_missing_fields() {
        let err = GenerationParameters::from_infotext("just a prompt, nothing else")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Steps, Sampler, CFG scale, Seed, Size"),
            "{err}"
        );
    }

    #[test]
    fn bad_numbers_are_errors() {
        let text = "cat\nSteps: many, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64";
        let err = GenerationParameters::from_infotext(text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("Steps: many"), "{err}");
        let text = "cat\nSteps: 2, Sampler: Euler, CFG scale: 7, Seed: 1, Size: big";
        let err = GenerationParameters::from_infotext(text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("WIDTHxHEIGHT"), "{err}");
    }
}
