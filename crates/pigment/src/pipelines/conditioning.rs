//! Which prompt syntax a request uses, and the text conditioning of a run as a schedule over the
//! sampling steps.
//!
//! - [`PromptSyntax::Plain`]: diffusers' `encode_prompt` (the text as written, cut to 77
//!   tokens); one conditioning for the whole run. The parity tests' reference.
//! - [`PromptSyntax::A1111`]: AUTOMATIC1111's syntax: emphasis, `BREAK`, prompts of any length
//!   in 75-token chunks (`prompt_a1111.rs`), and prompt editing `[from:to:when]` / alternation
//!   `[a|b]`, which switch the conditioning during sampling. A1111 counts steps by model
//!   evaluations from 0 (`CFGDenoiser.step`, incremented after every call) and picks the first
//!   schedule entry whose last step is at least the current one, else the first entry
//!   (`prompt_parser.reconstruct_cond_batch`). When prompt and negative prompt encode to
//!   different lengths, the shorter gets the encoded empty prompt appended until they match
//!   (A1111's "pad prompt/negative prompt to be same length", `pad_cond_uncond`), so that both
//!   go through the UNet in one batch.
//!
//! For an ordinary prompt (no brackets, at most 75 tokens) both syntaxes give the same tokens and
//! the same conditioning, bit for bit.

use std::cell::OnceCell;

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::pipelines::StableDiffusion;
use crate::text::prompt_syntax::{
    pad_cond_uncond, parse_prompt_attention_with_warnings, prompt_schedule, ParseWarning,
    ScheduleOptions,
};

/// How prompt text becomes conditioning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum PromptSyntax {
    /// diffusers: the text as written, truncated to the text encoder's 77 tokens.
    #[default]
    Plain,
    /// AUTOMATIC1111: `(emphasis:1.2)`, `[less]`, `BREAK`, `[from:to:when]`, `[a|b]`, no length
    /// limit.
    A1111,
}

impl PromptSyntax {
    pub fn as_str(&self) -> &'static str {
        match self {
            PromptSyntax::Plain => "plain",
            PromptSyntax::A1111 => "a1111",
        }
    }
}

impl std::fmt::Display for PromptSyntax {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for PromptSyntax {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "plain" | "diffusers" => Ok(PromptSyntax::Plain),
            "a1111" | "automatic1111" | "webui" => Ok(PromptSyntax::A1111),
            other => Err(Error::invalid(format!(
                "unknown prompt syntax `{other}`; use `a1111` (AUTOMATIC1111: emphasis, BREAK, \
                 prompt editing, long prompts) or `plain` (diffusers: text as written, 77 tokens)"
            ))),
        }
    }
}

/// What a prompt's syntax may be warned about (unclosed or stray brackets, unreadable weights),
/// with 1-based character columns. Empty for plain prompts, which have no syntax.
pub fn prompt_warnings(prompt: &str, syntax: PromptSyntax) -> Vec<ParseWarning> {
    match syntax {
        PromptSyntax::Plain => Vec::new(),
        PromptSyntax::A1111 => parse_prompt_attention_with_warnings(prompt).1,
    }
}

/// The UNet's text context for every model evaluation of a run: `(last step, context)` entries
/// in increasing step order (see the module docs for A1111's step counting).
#[derive(Debug, Clone)]
pub struct ScheduledConditioning {
    entries: Vec<(usize, Tensor)>,
}

impl ScheduledConditioning {
    /// One context for the whole run.
    pub fn fixed(context: Tensor) -> Self {
        Self {
            entries: vec![(usize::MAX, context)],
        }
    }

    /// The context of model evaluation `step` (0 = the first of the run):
    /// A1111's `reconstruct_cond_batch`.
    pub fn at_step(&self, step: usize) -> &Tensor {
        let entry = self
            .entries
            .iter()
            .find(|(end, _)| step <= *end)
            .unwrap_or(&self.entries[0]);
        &entry.1
    }

    /// The `(last step, context)` entries.
    pub fn entries(&self) -> &[(usize, Tensor)] {
        &self.entries
    }
}

/// One prompt's conditioning over the steps: `(last step, [1, tokens, hidden])`.
pub type PromptSchedule = Vec<(usize, Tensor)>;

/// The entry of `schedule` in force at `step` (`reconstruct_cond_batch`).
fn schedule_at(schedule: &[(usize, Tensor)], step: usize) -> &Tensor {
    &schedule
        .iter()
        .find(|(end, _)| step <= *end)
        .unwrap_or(&schedule[0])
        .1
}

impl StableDiffusion {
    /// One prompt's conditioning over a run of `steps` steps. Plain: one entry. A1111: one entry
    /// per change of the prompt-editing schedule, the schedule's texts encoded as one batch
    /// (each distinct text once).
    pub fn encode_prompt_schedule(
        &self,
        prompt: &str,
        syntax: PromptSyntax,
        steps: usize,
        clip_skip: usize,
    ) -> Result<PromptSchedule> {
        match syntax {
            PromptSyntax::Plain => Ok(vec![(steps, self.encode_prompts(&[prompt], clip_skip)?)]),
            PromptSyntax::A1111 => {
                let schedule = prompt_schedule(prompt, steps, ScheduleOptions::default());
                let texts: Vec<&str> = schedule.iter().map(|(_, t)| t.as_str()).collect();
                let encoded = self.encode_prompts_a1111(&texts, clip_skip)?;
                Ok(schedule.iter().map(|(end, _)| *end).zip(encoded).collect())
            }
        }
    }

    /// Joins a prompt's schedule and (when guiding) the negative prompt's into the UNet context
    /// of every step: `build(cond, uncond)` makes one context from `[1, tokens, hidden]` pieces
    /// of equal length (A1111 padding applied first).
    pub(crate) fn pair_schedules(
        &self,
        cond: &[(usize, Tensor)],
        uncond: Option<&[(usize, Tensor)]>,
        syntax: PromptSyntax,
        clip_skip: usize,
        build: &dyn Fn(&Tensor, Option<&Tensor>) -> Result<Tensor>,
    ) -> Result<ScheduledConditioning> {
        if cond.is_empty() || uncond.is_some_and(<[_]>::is_empty) {
            return Err(Error::invalid("internal: an empty prompt schedule"));
        }
        let mut ends: Vec<usize> = cond.iter().map(|(end, _)| *end).collect();
        if let Some(u) = uncond {
            ends.extend(u.iter().map(|(end, _)| *end));
        }
        ends.sort_unstable();
        ends.dedup();
        let empty: OnceCell<Tensor> = OnceCell::new();
        let mut entries = Vec::with_capacity(ends.len());
        for end in ends {
            let c = schedule_at(cond, end);
            let context = match uncond.map(|u| schedule_at(u, end)) {
                Some(u) if u.dim(1)? != c.dim(1)? => {
                    if syntax == PromptSyntax::Plain {
                        return Err(Error::invalid(
                            "internal: plain prompts of different lengths",
                        ));
                    }
                    let empty = match empty.get() {
                        Some(e) => e,
                        None => {
                            let e = self.encode_prompts_a1111(&[""], clip_skip)?.remove(0);
                            empty.get_or_init(|| e)
                        }
                    };
                    let (c, u) = pad_cond_uncond(c, u, empty)?;
                    build(&c, Some(&u))?
                }
                u => build(c, u)?,
            };
            entries.push((end, context));
        }
        Ok(ScheduledConditioning { entries })
    }
}
