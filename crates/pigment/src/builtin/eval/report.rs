//! The evaluation's numbers: per image, per (category, pairs) group and overall; as an aligned
//! text table and as JSON.

use std::time::Duration;

use serde_json::{json, Value};

use super::Pairs;
use crate::builtin::generate::Category;
use crate::builtin::Verdict;

/// The attributes the analyser judges, in the order of the table's columns.
pub const ATTRIBUTES: [&str; 6] = ["colour", "shape", "size", "count", "relation", "background"];

fn judged(v: &Verdict) -> [Option<bool>; 6] {
    [v.colour, v.shape, v.size, v.count, v.relation, v.background]
}

/// What one image got right.
#[derive(Debug, Clone)]
pub struct ImageResult {
    pub category: Category,
    pub pairs: Pairs,
    pub caption: String,
    pub seed: u64,
    pub verdict: Verdict,
    /// 100 x cosine(text feature, image feature) of the small CLIP, not clipped (a group's
    /// mean is clipped at 0, as torchmetrics' CLIPScore does).
    pub clip_score: Option<f64>,
}

/// Counts over a set of images.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    pub images: usize,
    /// Images with every asked attribute right.
    pub all_correct: usize,
    /// Per attribute (see [`ATTRIBUTES`]): images whose prompt asked it, and got it right.
    pub asked: [usize; 6],
    pub correct: [usize; 6],
    clip_sum: f64,
    clip_images: usize,
}

impl Tally {
    pub fn add(&mut self, result: &ImageResult) {
        self.images += 1;
        self.all_correct += usize::from(result.verdict.all_correct());
        for (k, verdict) in judged(&result.verdict).into_iter().enumerate() {
            if let Some(ok) = verdict {
                self.asked[k] += 1;
                self.correct[k] += usize::from(ok);
            }
        }
        if let Some(score) = result.clip_score {
            self.clip_sum += score;
            self.clip_images += 1;
        }
    }

    /// Share of images with everything right, in percent (None without images).
    pub fn all_correct_percent(&self) -> Option<f64> {
        percent(self.all_correct, self.images)
    }

    /// Share of the images asking attribute `k` (index into [`ATTRIBUTES`]) that got it right.
    pub fn attribute_percent(&self, k: usize) -> Option<f64> {
        percent(*self.correct.get(k)?, *self.asked.get(k)?)
    }

    /// Mean CLIP score, clipped at 0 as torchmetrics' `CLIPScore.compute` does
    /// (torchmetrics/multimodal/clip_score.py: `max(score / n_samples, 0)`).
    pub fn clip_score(&self) -> Option<f64> {
        (self.clip_images > 0).then(|| (self.clip_sum / self.clip_images as f64).max(0.0))
    }

    fn to_json(&self) -> Value {
        let attributes: serde_json::Map<String, Value> = ATTRIBUTES
            .iter()
            .enumerate()
            .map(|(k, name)| (name.to_string(), json!(self.attribute_percent(k))))
            .collect();
        json!({
            "images": self.images,
            "all_correct": self.all_correct_percent(),
            "attributes": attributes,
            "clip_score": self.clip_score(),
        })
    }
}

fn percent(part: usize, whole: usize) -> Option<f64> {
    (whole > 0).then(|| 100.0 * part as f64 / whole as f64)
}

/// One (category, pairs) group.
#[derive(Debug, Clone)]
pub struct GroupReport {
    pub category: Category,
    pub pairs: Pairs,
    pub tally: Tally,
}

#[derive(Debug, Clone)]
pub struct EvalReport {
    /// Every category x {seen, held-out}, in `Category::ALL` order, even where empty.
    pub groups: Vec<GroupReport>,
    pub seen: Tally,
    pub held_out: Tally,
    pub overall: Tally,
    /// Every image's result, in the order they were made.
    pub results: Vec<ImageResult>,
    /// Wall time of generation (if any) and scoring.
    pub seconds: f64,
}

impl EvalReport {
    pub fn new(results: Vec<ImageResult>, elapsed: Duration) -> Self {
        let mut groups: Vec<GroupReport> = Category::ALL
            .iter()
            .flat_map(|&category| {
                Pairs::ALL.map(|pairs| GroupReport {
                    category,
                    pairs,
                    tally: Tally::default(),
                })
            })
            .collect();
        let (mut seen, mut held_out, mut overall) =
            (Tally::default(), Tally::default(), Tally::default());
        for r in &results {
            if let Some(g) = groups
                .iter_mut()
                .find(|g| (g.category, g.pairs) == (r.category, r.pairs))
            {
                g.tally.add(r);
            }
            let split: &mut Tally = match r.pairs {
                Pairs::Seen => &mut seen,
                Pairs::HeldOut => &mut held_out,
            };
            split.add(r);
            overall.add(r);
        }
        Self {
            groups,
            seen,
            held_out,
            overall,
            results,
            seconds: elapsed.as_secs_f64(),
        }
    }

    pub fn group(&self, category: Category, pairs: Pairs) -> Option<&GroupReport> {
        self.groups
            .iter()
            .find(|g| (g.category, g.pairs) == (category, pairs))
    }

    pub fn images_per_second(&self) -> f64 {
        self.overall.images as f64 / self.seconds.max(1e-9)
    }

    /// An aligned text table: one row per group, then the seen, held-out and overall totals.
    /// Percentages; "-" where no prompt asked the attribute (or no CLIP model was given).
    pub fn to_table(&self) -> String {
        let mut header = vec!["category", "pairs", "images", "all-ok"];
        header.extend(ATTRIBUTES);
        header.push("clip");
        let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
        let row = |category: &str, pairs: &str, t: &Tally| -> Vec<String> {
            let mut cells = vec![
                category.to_string(),
                pairs.to_string(),
                t.images.to_string(),
                cell(t.all_correct_percent()),
            ];
            cells.extend((0..ATTRIBUTES.len()).map(|k| cell(t.attribute_percent(k))));
            cells.push(cell(t.clip_score()));
            cells
        };
        for g in &self.groups {
            rows.push(row(g.category.name(), g.pairs.name(), &g.tally));
        }
        rows.push(row("all", Pairs::Seen.name(), &self.seen));
        rows.push(row("all", Pairs::HeldOut.name(), &self.held_out));
        rows.push(row("all", "both", &self.overall));

        let widths: Vec<usize> = (0..header.len())
            .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for (i, r) in rows.iter().enumerate() {
            if i == 1 + self.groups.len() {
                out.push_str(&rule(&widths));
            }
            let line: Vec<String> = r
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(c, (text, &w))| {
                    // Names left-aligned, numbers right-aligned.
                    if c < 2 {
                        format!("{text:<w$}")
                    } else {
                        format!("{text:>w$}")
                    }
                })
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
            if i == 0 {
                out.push_str(&rule(&widths));
            }
        }
        out.push_str(&format!(
            "{} images in {:.1} s ({:.2} images/s)\n",
            self.overall.images,
            self.seconds,
            self.images_per_second()
        ));
        out
    }

    /// Groups, totals, per-image results and timing as JSON (percentages in 0..100; null where
    /// nothing was asked).
    pub fn to_json(&self) -> Value {
        let groups: Vec<Value> = self
            .groups
            .iter()
            .map(|g| {
                let mut v = g.tally.to_json();
                v["category"] = json!(g.category.name());
                v["pairs"] = json!(g.pairs.name());
                v
            })
            .collect();
        let results: Vec<Value> = self
            .results
            .iter()
            .map(|r| {
                json!({
                    "category": r.category.name(),
                    "pairs": r.pairs.name(),
                    "caption": r.caption,
                    "seed": r.seed,
                    "all_correct": r.verdict.all_correct(),
                    "failures": r.verdict.failures(),
                    "clip_score": r.clip_score,
                })
            })
            .collect();
        json!({
            "groups": groups,
            "seen": self.seen.to_json(),
            "held_out": self.held_out.to_json(),
            "overall": self.overall.to_json(),
            "seconds": self.seconds,
            "images_per_second": self.images_per_second(),
            "results": results,
        })
    }
}

fn cell(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"))
}

fn rule(widths: &[usize]) -> String {
    let total = widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
    format!("{}\n", "-".repeat(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::parse_caption;
    use crate::builtin::{judge, Perception};

    fn result(category: Category, pairs: Pairs, correct: bool, clip: f64) -> ImageResult {
        let query = parse_caption("a red star").unwrap();
        let seen = Perception {
            background: None,
            objects: vec![],
        };
        let mut verdict = judge(seen, &query);
        if correct {
            verdict = Verdict {
                colour: Some(true),
                shape: Some(true),
                count: Some(true),
                ..verdict
            };
        }
        ImageResult {
            category,
            pairs,
            caption: "a red star".into(),
            seed: 0,
            verdict,
            clip_score: Some(clip),
        }
    }

    #[test]
    fn tallies_percentages_and_clips_the_mean_clip_score() {
        let results = vec![
            result(Category::Single, Pairs::Seen, true, 30.0),
            result(Category::Single, Pairs::Seen, false, 10.0),
            result(Category::Count, Pairs::HeldOut, false, -50.0),
        ];
        let report = EvalReport::new(results, Duration::from_secs(2));
        let single = &report.group(Category::Single, Pairs::Seen).unwrap().tally;
        assert_eq!(single.images, 2);
        assert_eq!(single.all_correct_percent(), Some(50.0));
        assert_eq!(single.attribute_percent(0), Some(50.0)); // colour
        assert_eq!(single.attribute_percent(2), None); // size was not asked
        assert_eq!(single.clip_score(), Some(20.0));
        let count = &report.group(Category::Count, Pairs::HeldOut).unwrap().tally;
        assert_eq!(count.clip_score(), Some(0.0));
        assert_eq!(report.overall.images, 3);
        assert_eq!(report.seen.images, 2);
        assert_eq!(report.held_out.all_correct_percent(), Some(0.0));
        assert_eq!(report.groups.len(), 12);
        assert_eq!(report.images_per_second(), 1.5);

        let table = report.to_table();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("category"), "{table}");
        let single_row = lines.iter().find(|l| l.starts_with("single ")).unwrap();
        assert!(single_row.contains("50.0") && single_row.contains("20.0"));
        // Every data row has the header's column count.
        let columns = lines[0].split_whitespace().count();
        assert_eq!(single_row.split_whitespace().count(), columns, "{table}");

        let json = report.to_json();
        assert_eq!(json["overall"]["images"], 3);
        assert_eq!(json["groups"][0]["category"], "single");
        assert_eq!(json["groups"][0]["attributes"]["size"], Value::Null);
        assert_eq!(json["results"][1]["failures"][0], "colour");
    }
}
