//! The built-in model's training path end to end, at a few steps per stage: every stage runs
//! through the CLI, resumes, exports a diffusers folder, and that folder generates an image
//! through the ordinary loader and pipeline.

use std::path::Path;
use std::process::Command;

fn pigment(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pigment"))
        .args(args)
        .env_remove("PIGMENT_MODEL")
        .output()
        .expect("run pigment")
}

fn ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn losses(log: &Path) -> Vec<f64> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

#[test]
fn stages_train_resume_export_and_generate() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let work_s = work.display().to_string();
    let common = ["--work", &work_s, "--batch", "2", "--checkpoint-every", "1"];

    // Unet before its inputs exist: a clear error.
    let early = pigment(&[&["train", "unet", "--steps", "1"], &common[..]].concat());
    assert_eq!(early.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&early.stderr).contains("train the earlier stage first"));
    // Micro-batches must split the batch evenly, and CLIP's contrastive loss cannot be split.
    for (stage, parts, needle) in [
        ("vae", "3", "does not split into --micro-batches 3"),
        ("clip", "2", "contrastive loss"),
    ] {
        let out = pigment(
            &[
                &["train", stage, "--steps", "1", "--micro-batches", parts],
                &common[..],
            ]
            .concat(),
        );
        assert_eq!(
            out.status.code(),
            Some(1),
            "{stage} --micro-batches {parts}"
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains(needle));
    }
    // The hard-negative share is a share of the batch.
    for share in ["1.5", "NaN"] {
        let out = pigment(
            &[
                &["train", "clip", "--steps", "1", "--hard-negatives", share],
                &common[..],
            ]
            .concat(),
        );
        assert_eq!(out.status.code(), Some(1), "--hard-negatives {share}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("not a share of the batch"));
    }
    assert!(
        !work.join("clip").exists() && !work.join("vae").exists(),
        "nothing written on a refused run"
    );

    for stage in ["clip", "vae", "unet"] {
        let out = pigment(
            &[
                &["train", stage, "--steps", "2", "--profile-steps"],
                &common[..],
            ]
            .concat(),
        );
        ok(&out);
        let log = work.join(stage).join("loss.jsonl");
        assert_eq!(losses(&log).len(), 2, "{stage}: one log line per step");
        assert!(losses(&log).iter().all(|l| l.is_finite()));
        // --profile-steps: where the steps' time went, printed and kept beside the log. CLIP
        // runs one batch (forward and backward apart); the VAE and UNet two micro-batches in
        // parallel on the CPU; only the UNet keeps an EMA.
        let report = std::fs::read_to_string(work.join(stage).join("step_profile.txt")).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("{stage} step profile: {report}")),
            "{stderr}"
        );
        assert!(
            report.starts_with("2 steps, ms per step: prepare "),
            "{report}"
        );
        let split = stage != "clip";
        for (phase, expected) in [
            (" forward ", !split),
            (" backward ", !split),
            (" forward+backward ", split),
            (" clip ", true),
            (" optimizer ", true),
            (" ema ", stage == "unet"),
        ] {
            assert_eq!(report.contains(phase), expected, "{stage}: {report}");
        }
    }
    // Resuming to a longer run continues the log instead of restarting it.
    ok(&pigment(
        &[&["train", "clip", "--steps", "3"], &common[..]].concat(),
    ));
    assert_eq!(losses(&work.join("clip/loss.jsonl")).len(), 3);

    // Growing: a UNet file without one of the recipe's attention blocks (as if trained before
    // the block was added) seeds the full recipe only with --grow.
    let unet_file = work.join("unet/diffusion_pytorch_model.safetensors");
    let smaller = dir.path().join("smaller-unet.safetensors");
    let kept = without_tensors(&unet_file, &smaller, "down_blocks.2.attentions.");
    let grown = dir.path().join("grown");
    std::fs::create_dir_all(&grown).unwrap();
    for stage in ["clip", "vae"] {
        std::fs::create_dir_all(grown.join(stage)).unwrap();
        for entry in std::fs::read_dir(work.join(stage)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, grown.join(stage).join(path.file_name().unwrap())).unwrap();
            }
        }
    }
    let grown_s = grown.display().to_string();
    let smaller_s = smaller.display().to_string();
    let grow_args = [
        "train", "unet", "--work", &grown_s, "--steps", "1", "--batch", "2", "--init", &smaller_s,
    ];
    let refused = pigment(&grow_args);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("does not fit this model") && stderr.contains("add --grow"),
        "{stderr}"
    );
    let grew = pigment(&[&grow_args[..], &["--grow"]].concat());
    ok(&grew);
    let stderr = String::from_utf8_lossy(&grew.stderr);
    assert!(stderr.contains("grew the model from"), "{stderr}");
    let grown_unet = std::fs::read(grown.join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    let grown_unet = safetensors::SafeTensors::deserialize(&grown_unet).unwrap();
    assert!(
        grown_unet.len() > kept,
        "the grown UNet has the dropped block back"
    );
    let no_init = pigment(&["train", "unet", "--work", &grown_s, "--grow"]);
    assert_eq!(no_init.status.code(), Some(2), "--grow needs --init");

    let model = dir.path().join("model");
    let model_s = model.display().to_string();
    ok(&pigment(&[
        "train", "export", "--work", &work_s, "--out", &model_s,
    ]));
    for file in [
        "model_index.json",
        "text_encoder/model.safetensors",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "scheduler/scheduler_config.json",
        "clip/model.safetensors",
    ] {
        assert!(model.join(file).is_file(), "{file} missing from the export");
    }

    let png = dir.path().join("out.png");
    let png_s = png.display().to_string();
    ok(&pigment(&[
        "generate",
        "a red star",
        "--model",
        &model_s,
        "--steps",
        "2",
        "--seed",
        "1",
        "--out",
        &png_s,
    ]));
    let image = image::open(&png).unwrap();
    assert_eq!((image.width(), image.height()), (64, 64));
}

/// Copies the safetensors file `from` to `to` without the tensors whose names contain
/// `dropped`; returns how many it kept (and checks some were dropped).
fn without_tensors(from: &Path, to: &Path, dropped: &str) -> usize {
    let bytes = std::fs::read(from).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<_> = file
        .tensors()
        .into_iter()
        .filter(|(name, _)| !name.contains(dropped))
        .collect();
    assert!(kept.len() < file.len(), "no tensor named *{dropped}*");
    std::fs::write(to, safetensors::serialize(kept.clone(), None).unwrap()).unwrap();
    kept.len()
}
