//! `--prompt-syntax`, `--embedding`, `--embedding-dir` and prompt warnings from the command line,
//! on tiny-sd1 with the fixtures of tools/reference/make_prompt_fixtures.py.

mod common;

use std::path::Path;
use std::process::Output;

use common::{assert_clean_error, fixtures, pigment, stderr};

/// `pigment generate PROMPT` on tiny-sd1 (Euler, 2 steps, seed 0, 64x64) with `flags`.
fn generate(prompt: &str, out: &Path, flags: &[&str]) -> Output {
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
        "0",
        "--steps",
        "2",
        "--sampler",
        "euler",
    ];
    args.extend_from_slice(flags);
    pigment(&args)
}

fn pixels(path: &Path) -> Vec<u8> {
    image::open(path).unwrap().to_rgb8().into_raw()
}

fn embedding(name: &str) -> String {
    fixtures()
        .join("prompts/embeddings")
        .join(name)
        .display()
        .to_string()
}

fn assert_ok(run: &Output) {
    assert_eq!(run.status.code(), Some(0), "stderr: {}", stderr(run));
}

#[test]
fn ordinary_prompts_give_the_same_image_in_both_syntaxes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, p) = (dir.path().join("a.png"), dir.path().join("p.png"));
    let prompt = "a red star above a small green square";
    assert_ok(&generate(prompt, &a, &[]));
    assert_ok(&generate(prompt, &p, &["--prompt-syntax", "plain"]));
    assert_eq!(pixels(&a), pixels(&p));
    // Emphasis is read only by the a1111 syntax (the default).
    let (e, ep) = (dir.path().join("e.png"), dir.path().join("ep.png"));
    let emphasised = "a (red star:1.6) above a small green square";
    assert_ok(&generate(emphasised, &e, &[]));
    assert_ok(&generate(emphasised, &ep, &["--prompt-syntax", "plain"]));
    assert_ne!(pixels(&e), pixels(&a));
    assert_ne!(pixels(&e), pixels(&ep));
}

#[test]
fn embeddings_are_used_by_their_trigger_words() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    // diffusers layout: the token is the trigger; both syntaxes place its two vectors alike.
    let diffusers = embedding("learned_embeds.safetensors");
    let run = generate(
        "a photo of <tiny-cat> on a hill",
        &path("d.png"),
        &["--embedding", &diffusers],
    );
    assert_ok(&run);
    assert!(
        stderr(&run).contains("embedding `<tiny-cat>` (2 vectors)"),
        "{}",
        stderr(&run)
    );
    assert_ok(&generate(
        "a photo of <tiny-cat> on a hill",
        &path("dp.png"),
        &["--embedding", &diffusers, "--prompt-syntax", "plain"],
    ));
    assert_ok(&generate(
        "a photo of <tiny-cat> on a hill",
        &path("none.png"),
        &[],
    ));
    assert_eq!(pixels(&path("d.png")), pixels(&path("dp.png")));
    assert_ne!(pixels(&path("d.png")), pixels(&path("none.png")));

    // A1111 layouts: the file stem is the trigger; the same vectors give the same image, from
    // a file or from the embeddings folder.
    let dir_flag = fixtures().join("prompts/embeddings").display().to_string();
    let cat = embedding("tinycat.safetensors");
    assert_ok(&generate(
        "a photo of tinycat on a hill",
        &path("c.png"),
        &["--embedding", &cat],
    ));
    assert_ok(&generate(
        "a photo of tinydog on a hill",
        &path("g.png"),
        &["--embedding-dir", &dir_flag],
    ));
    assert_eq!(pixels(&path("c.png")), pixels(&path("d.png")));
    assert_eq!(pixels(&path("g.png")), pixels(&path("d.png")));
}

#[test]
fn an_unbalanced_bracket_proceeds_with_a_warning_naming_the_column() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("w.png");
    let run = generate("a (red star above a small green square", &out, &[]);
    assert_ok(&run);
    let err = stderr(&run);
    assert!(
        err.contains("warning: prompt, column 3") && err.contains("never closed"),
        "{err}"
    );
    assert!(out.exists());
    let plain = generate(
        "a (red star above a small green square",
        &dir.path().join("p.png"),
        &["--prompt-syntax", "plain"],
    );
    assert_ok(&plain);
    assert!(!stderr(&plain).contains("warning: prompt"));
    let negative = generate(
        "a red star",
        &dir.path().join("n.png"),
        &["--negative", "blurry]"],
    );
    assert_ok(&negative);
    assert!(
        stderr(&negative).contains("warning: --negative, column 7"),
        "{}",
        stderr(&negative)
    );
}

#[test]
fn bad_prompt_flags_are_clean_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.png");
    let prompt = "a red star";
    let run = generate(prompt, &out, &["--prompt-syntax", "comfy"]);
    assert_clean_error(&run, &out, "unknown prompt syntax `comfy`");

    let missing = dir.path().join("missing.pt").display().to_string();
    let run = generate(prompt, &out, &["--embedding", &missing]);
    assert_clean_error(&run, &out, "missing.pt");

    let wide = fixtures()
        .join("prompts/wide.safetensors")
        .display()
        .to_string();
    let run = generate(prompt, &out, &["--embedding", &wide]);
    assert_clean_error(&run, &out, "width 48");
    assert!(stderr(&run).contains("hidden size 32"), "{}", stderr(&run));

    let not_an_embedding = dir.path().join("junk.safetensors");
    std::fs::write(&not_an_embedding, b"not a safetensors file").unwrap();
    let junk = not_an_embedding.display().to_string();
    let run = generate(prompt, &out, &["--embedding", &junk]);
    assert_clean_error(&run, &out, "junk.safetensors");

    let no_dir = dir.path().join("no-such-dir").display().to_string();
    let run = generate(prompt, &out, &["--embedding-dir", &no_dir]);
    assert_clean_error(&run, &out, "no-such-dir");

    // edit reads the same flags, checked before anything loads.
    let image = fixtures().join("image").display().to_string();
    let run = pigment(&[
        "edit",
        &image,
        "make it winter",
        "--out",
        &out.display().to_string(),
        "--prompt-syntax",
        "nope",
    ]);
    assert_clean_error(&run, &out, "unknown prompt syntax `nope`");
}
