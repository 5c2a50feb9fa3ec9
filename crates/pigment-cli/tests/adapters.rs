//! Adapters from the command line as a user coming from AUTOMATIC1111 writes them:
//! `<lora:NAME:W>` and `<hypernet:NAME:W>` in the prompt with `--lora-dir` /
//! `--hypernetwork-dir`, `--lora-mode runtime`, and the bad-input errors (exit 1, no panic, the
//! message, no output file). References: tests/fixtures/lora (the kohya LoRA at 0.8, whose
//! pickled twin is tests/fixtures/adapters/loras/style.pt) and tests/fixtures/adapters
//! (tools/reference/make_adapter_fixtures.py). Images within 2/255 per pixel, the library
//! parity tests' bar.

mod common;
use common::*;

use std::path::Path;
use std::process::Output;

fn generate(out: &Path, prompt: &str, extra: &[&str]) -> Output {
    let model = fixtures().join("models/tiny-sd1").display().to_string();
    let out = out.display().to_string();
    let mut args = vec![
        "generate",
        prompt,
        "--model",
        &model,
        "--out",
        &out,
        "--seed",
        "42",
        "--steps",
        "4",
        "--sampler",
        "euler",
    ];
    args.extend_from_slice(extra);
    pigment(&args)
}

fn dir(name: &str) -> String {
    fixtures().join("adapters").join(name).display().to_string()
}

fn assert_image_matches(out: &Path, area: &str, name: &str) {
    let got = image::open(out).unwrap().to_rgb8();
    let want = fixture_u8_tensor(area, name);
    let worst = max_diff(got.as_raw(), &want);
    assert!(worst <= 2, "{name}: pixels differ by up to {worst}");
}

const PROMPT: &str = "a red star above a small green square";

#[test]
fn lora_tag_in_the_prompt_finds_its_file_and_is_cut_out() {
    let tmp = tempfile::tempdir().unwrap();
    for mode in ["merge", "runtime"] {
        let out = tmp.path().join(format!("{mode}.png"));
        // The tag is cut out leaving the text as the reference's prompt (A1111 keeps the spaces
        // around a tag; here it ends the prompt, so nothing is left behind).
        let prompt = format!("{PROMPT}<lora:style:0.8>");
        let run = generate(
            &out,
            &prompt,
            &["--lora-dir", &dir("loras"), "--lora-mode", mode],
        );
        let err = stderr(&run);
        assert!(run.status.success(), "{mode}: {err}");
        assert!(
            err.contains("style.pt at scale 0.8: 18 weights updated"),
            "{err}"
        );
        assert_image_matches(&out, "lora", "kohya.image");
        // The PNG records the prompt as typed, tag included, as A1111's infotext does.
        let params = pigment::image::read_png_parameters(&out).unwrap().unwrap();
        assert!(params.starts_with(&format!("{prompt}\n")), "{params}");
    }
}

#[test]
fn hypernet_tag_matches_the_a1111_port() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("hn.png");
    let prompt = format!("{PROMPT}<hypernet:sketch:0.7>");
    let run = generate(
        &out,
        &prompt,
        &["--hypernetwork-dir", &dir("hypernetworks")],
    );
    let err = stderr(&run);
    assert!(run.status.success(), "{err}");
    assert!(err.contains("hypernetwork sketch at strength 0.7"), "{err}");
    assert_image_matches(&out, "adapters", "hypernet.image");
    // The same by file.
    let out2 = tmp.path().join("hn2.png");
    let file = format!(
        "{}:0.7",
        fixtures()
            .join("adapters/hypernetworks/sketch.pt")
            .display()
    );
    let run = generate(&out2, PROMPT, &["--hypernetwork", &file]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_image_matches(&out2, "adapters", "hypernet.image");
}

#[test]
fn bad_adapters_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.png");
    let rank = format!(
        "{}:1",
        fixtures()
            .join("adapters/loras/rank_mismatch.safetensors")
            .display()
    );
    let sd2_hn = format!(
        "{}:1",
        fixtures()
            .join("adapters/hypernetworks/sd2_only.pt")
            .display()
    );
    let loras = dir("loras");
    let hns = dir("hypernetworks");
    let with_tag = |tag: &str| format!("{PROMPT} {tag}");
    let cases: Vec<(String, Vec<&str>, &str)> = vec![
        // A misspelt name: the close names in the folder are offered.
        (
            with_tag("<lora:styel:1>"),
            vec!["--lora-dir", &loras],
            "closest names there: style",
        ),
        (with_tag("<lora:style:1>"), vec![], "pass --lora-dir DIR"),
        (
            with_tag("<lora:style:heavy>"),
            vec!["--lora-dir", &loras],
            "`heavy` is not a number",
        ),
        (
            with_tag("<hypernet:sketchy:1>"),
            vec!["--hypernetwork-dir", &hns],
            "no hypernetwork named `sketchy`",
        ),
        (PROMPT.into(), vec!["--lora", &rank], "rank differs"),
        // A hypernetwork made for SD2 (1024-wide context) on an SD1-shaped model.
        (
            PROMPT.into(),
            vec!["--hypernetwork", &sd2_hn],
            "made for another model family",
        ),
        (
            PROMPT.into(),
            vec!["--lora-mode", "fused"],
            "--lora-mode fused",
        ),
    ];
    for (prompt, flags, needle) in &cases {
        let run = generate(&out, prompt, flags);
        assert_clean_error(&run, &out, needle);
    }
}
