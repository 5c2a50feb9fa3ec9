//! Prompt editing and alternation over the sampling steps, exactly as AUTOMATIC1111's
//! `modules/prompt_parser.py::get_learned_conditioning_prompt_schedules`.
//!
//! `[from:to:when]` uses `from` up to step `when`, then `to`; `[to:when]` adds `to` after `when`;
//! `[from::when]` removes `from` after `when`. `when` with a decimal point is a fraction of the
//! steps (`0.25`, also `1.5` = 150 %), without one an absolute step (`10`, `1e1`); A1111 before
//! 1.6 read every `when < 1` as a fraction (`use_old_scheduling`). `[a|b|c]` takes `a` on step 1,
//! `b` on step 2, ... cycling. Editing can nest in either.

use super::schedule_tree::{parse, Node};

/// A1111's scheduling switches (`get_learned_conditioning_prompt_schedules`' extra arguments).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScheduleOptions {
    /// Steps of the hires-fix pass: integer `when`s then count from the end of the first pass
    /// and fractions from 1.0 (`[a:b:1.5]` switches half way through the hires pass).
    pub hires_steps: Option<usize>,
    /// A1111's "use old prompt editing timelines": `when < 1` is a fraction, else a step.
    pub use_old_scheduling: bool,
}

/// A1111's `get_learned_conditioning_prompt_schedules(prompts, steps)`: for each prompt, the
/// list of `(last step, prompt text)` pairs, in increasing step order, ending at `steps`.
pub fn get_learned_conditioning_prompt_schedules<S: AsRef<str>>(
    prompts: &[S],
    steps: usize,
) -> Vec<Vec<(usize, String)>> {
    prompts
        .iter()
        .map(|p| prompt_schedule(p.as_ref(), steps, ScheduleOptions::default()))
        .collect()
}

/// The schedule of one prompt (see [`get_learned_conditioning_prompt_schedules`]). A prompt
/// A1111's grammar rejects (a bare `|`, a trailing `\`) is used unchanged for all steps.
pub fn prompt_schedule(
    prompt: &str,
    base_steps: usize,
    options: ScheduleOptions,
) -> Vec<(usize, String)> {
    let (steps, int_offset, float_offset) = match options.hires_steps {
        Some(hires) if !options.use_old_scheduling => (hires, base_steps as f64, 1.0),
        _ => (base_steps, 0.0, 0.0),
    };
    let Some(tree) = parse(prompt) else {
        return vec![(steps, prompt.to_owned())];
    };
    let steps_i = i64::try_from(steps).unwrap_or(i64::MAX);
    let when_to_step = |when: &str| -> i64 {
        // The grammar only lets through numbers f64 parsing accepts.
        let mut v: f64 = when.parse().unwrap_or(0.0);
        if options.use_old_scheduling {
            if v < 1.0 {
                v *= steps as f64;
            }
        } else if when.contains('.') {
            v = (v - float_offset) * steps as f64;
        } else {
            v -= int_offset;
        }
        // Python's int() truncates; it raises on ±inf (`1e999`), which saturates here.
        (v as i64).min(steps_i)
    };

    let mut switch_steps = vec![steps_i];
    if collect_steps(&tree, &when_to_step, &mut switch_steps) {
        switch_steps.extend(1..=steps_i);
    }
    switch_steps.sort_unstable();
    switch_steps.dedup();
    switch_steps
        .into_iter()
        .map(|step| {
            let mut text = String::new();
            render(&tree, step, &when_to_step, &mut text);
            (usize::try_from(step).unwrap_or(0), text)
        })
        .collect()
}

/// A1111's `CollectSteps` visitor: pushes every `when` from step 1 on; returns whether the
/// prompt alternates (then every step switches).
fn collect_steps(nodes: &[Node], when_to_step: &dyn Fn(&str) -> i64, out: &mut Vec<i64>) -> bool {
    let mut alternates = false;
    for node in nodes {
        match node {
            Node::Text(_) => {}
            Node::Scheduled {
                before,
                after,
                when,
            } => {
                let step = when_to_step(when);
                if step >= 1 {
                    out.push(step);
                }
                alternates |= collect_steps(before, when_to_step, out);
                alternates |= collect_steps(after, when_to_step, out);
            }
            Node::Alternate(options) => {
                alternates = true;
                for option in options {
                    collect_steps(option, when_to_step, out);
                }
            }
        }
    }
    alternates
}

/// A1111's `AtStep` transformer: the prompt text at `step`.
fn render(nodes: &[Node], step: i64, when_to_step: &dyn Fn(&str) -> i64, out: &mut String) {
    for node in nodes {
        match node {
            Node::Text(text) => out.push_str(text),
            Node::Scheduled {
                before,
                after,
                when,
            } => {
                let chosen = if step <= when_to_step(when) {
                    before
                } else {
                    after
                };
                render(chosen, step, when_to_step, out);
            }
            Node::Alternate(options) => {
                // Python's `%` is never negative: step 0 picks the last option.
                let index = (step - 1).rem_euclid(options.len() as i64) as usize;
                render(&options[index], step, when_to_step, out);
            }
        }
    }
}

/// The prompt of a schedule at a sampling step, as A1111's `reconstruct_cond_batch` picks it:
/// the first entry whose last step is `>= step`, else the first entry. `step` counts from 0 as
/// A1111's `CFGDenoiser.step` does, so `[a:b:3]` uses `a` for steps 0 to 3.
pub fn prompt_at_step(schedule: &[(usize, String)], step: usize) -> &str {
    schedule
        .iter()
        .find(|(end, _)| step <= *end)
        .or(schedule.first())
        .map_or("", |(_, text)| text.as_str())
}
