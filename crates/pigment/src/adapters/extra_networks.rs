//! AUTOMATIC1111's extra-network tags in prompts: `<lora:name:0.8>`, `<lora:name>` (= 1.0),
//! `<hypernet:name:0.6>`. As stable-diffusion-webui's modules/extra_networks.py does, every match
//! of `<(\w+):([^>]+)>` is cut out of the prompt (replaced by nothing, the spaces around it
//! kept) before the prompt is parsed and encoded, and its text after the first colon is split on
//! `:` into arguments. The first argument is the network's name; for `lora` and `hypernet` the
//! second is the multiplier (1.0 when absent; extra_networks_lora.py / extra_networks_hypernet.py).
//! Names are looked up as file stems in a folder (`--lora-dir`, `--hypernetwork-dir`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use regex::Regex;

use crate::error::{Error, Result};

/// One `<kind:name[:multiplier...]>` tag.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtraNetworkTag {
    /// `lora`, `hypernet`, ... as written.
    pub kind: String,
    pub name: String,
    /// The second argument as a number; 1.0 when absent.
    pub multiplier: f64,
    /// Every argument after the name, as written (e.g. A1111's unet multiplier or `te=0.5`).
    pub extra_args: Vec<String>,
}

fn tag_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    // modules/extra_networks.py: re_extra_net = re.compile(r"<(\w+):([^>]+)>")
    RE.get_or_init(|| Regex::new(r"<(\w+):([^>]+)>").expect("a valid regex"))
}

/// Cuts every extra-network tag out of `prompt` (as A1111's `parse_prompt`), returning the prompt
/// left and the tags in order. A multiplier that is not a number is an error naming the tag.
pub fn parse_extra_networks(prompt: &str) -> Result<(String, Vec<ExtraNetworkTag>)> {
    let mut tags = Vec::new();
    for m in tag_regex().captures_iter(prompt) {
        let kind = m[1].to_string();
        let mut args = m[2].split(':').map(str::to_string);
        let name = args.next().unwrap_or_default();
        let rest: Vec<String> = args.collect();
        let multiplier = match rest.first() {
            None => 1.0,
            Some(s) => match s.trim().parse::<f64>() {
                Ok(v) if v.is_finite() => v,
                _ => {
                    return Err(Error::invalid(format!(
                        "prompt tag {}: `{s}` is not a number; write e.g. <{kind}:{name}:0.8>",
                        &m[0]
                    )))
                }
            },
        };
        tags.push(ExtraNetworkTag {
            kind,
            name,
            multiplier,
            extra_args: rest.into_iter().skip(1).collect(),
        });
    }
    Ok((tag_regex().replace_all(prompt, "").into_owned(), tags))
}

/// The file in `dir` (searched recursively, as A1111 lists its folders) whose stem is `name`
/// with one of `extensions`. A name not found is an error listing the closest names there.
pub fn find_named_file(dir: &Path, name: &str, extensions: &[&str], what: &str) -> Result<PathBuf> {
    let mut files = Vec::new();
    collect_files(dir, extensions, 0, &mut files);
    files.sort();
    if let Some(found) = files.iter().find(|p| stem(p) == name) {
        return Ok(found.clone());
    }
    // A1111 compares names case-insensitively too when nothing matches exactly.
    if let Some(found) = files.iter().find(|p| stem(p).eq_ignore_ascii_case(name)) {
        return Ok(found.clone());
    }
    let mut names: Vec<String> = files.iter().map(|p| stem(p)).collect();
    names.dedup();
    let mut close: Vec<(usize, &String)> = names
        .iter()
        .map(|n| (edit_distance(&n.to_lowercase(), &name.to_lowercase()), n))
        .collect();
    close.sort();
    let hint = if names.is_empty() {
        format!(
            "the folder holds no {} files",
            extensions
                .iter()
                .map(|e| format!(".{e}"))
                .collect::<Vec<_>>()
                .join("/")
        )
    } else {
        let best: Vec<&str> = close.iter().take(5).map(|(_, n)| n.as_str()).collect();
        format!("closest names there: {}", best.join(", "))
    };
    Err(Error::invalid(format!(
        "no {what} named `{name}` in {} ({hint}); the name is the file name without extension",
        dir.display()
    )))
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn collect_files(dir: &Path, extensions: &[&str], depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if depth < 8 {
                collect_files(&path, extensions, depth + 1, out);
            }
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| extensions.iter().any(|x| x.eq_ignore_ascii_case(e)))
        {
            out.push(path);
        }
    }
}

/// Levenshtein distance, for "did you mean" lists.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_cut_out_as_a1111_does() {
        let (prompt, tags) =
            parse_extra_networks("a cat <lora:style:0.8>, <lora:detail> <hypernet:sketch:0.6>")
                .unwrap();
        assert_eq!(prompt, "a cat ,  ");
        let got: Vec<(&str, &str, f64)> = tags
            .iter()
            .map(|t| (t.kind.as_str(), t.name.as_str(), t.multiplier))
            .collect();
        assert_eq!(
            got,
            [
                ("lora", "style", 0.8),
                ("lora", "detail", 1.0),
                ("hypernet", "sketch", 0.6)
            ]
        );
        // Not tags: no colon, an empty body, a non-word kind.
        let (prompt, tags) = parse_extra_networks("<lora> <lora:> <a-b:c> (x:1.2)").unwrap();
        assert!(tags.is_empty());
        assert_eq!(prompt, "<lora> <lora:> <a-b:c> (x:1.2)");
        assert!(parse_extra_networks("<lora:x:abc>").is_err());
        let (_, tags) = parse_extra_networks("<lora:x:0.5:0.25>").unwrap();
        assert_eq!(tags[0].extra_args, ["0.25"]);
    }

    #[test]
    fn distance() {
        assert_eq!(edit_distance("style", "styel"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
