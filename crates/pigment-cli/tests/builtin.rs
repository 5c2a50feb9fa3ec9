//! `pigment generate PROMPT` with no --model uses the built-in model, from any working folder.

#[test]
fn generate_without_a_model_uses_the_builtin_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("star.png");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_pigment"))
        .args(["generate", "a yellow star", "--seed", "3", "--out"])
        .arg(&out)
        .current_dir(dir.path())
        .env_remove("PIGMENT_MODEL")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let image = image::open(&out).unwrap();
    assert_eq!((image.width(), image.height()), (64, 64));
    let text = std::fs::read(&out).unwrap();
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("Model: pigment-builtin"),
        "the PNG names the built-in model"
    );
}
