//! The built-in model's evaluation: the whole loop on the tiny random SD1 model (whose scores
//! are near 0: this checks the machinery), the rendered ground truth as the "model" (the
//! ceiling: ~100% all-correct), and the CLIP score with a random tiny CLIP.

use std::path::PathBuf;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use pigment::builtin::eval::{
    eval_prompts, evaluate, score_images, ClipScorer, EvalConfig, EvalReport, Pairs,
};
use pigment::builtin::{render, Category};
use pigment::pipelines::{LoadOptions, StableDiffusion};
use pigment::text::ClipTextConfig;
use pigment::vision::{ClipConfig, ClipModel, ClipVisionConfig};

fn tiny_sd1() -> StableDiffusion {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models/tiny-sd1");
    StableDiffusion::load(&path, &LoadOptions::default()).unwrap()
}

/// A random CLIP small enough for a test, with the full CLIP vocabulary.
fn random_clip_parts() -> (VarMap, ClipConfig, ClipScorer) {
    let config = ClipConfig {
        text_config: ClipTextConfig {
            hidden_size: 16,
            intermediate_size: 32,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            max_position_embeddings: 24,
            projection_dim: 8,
            ..ClipTextConfig::default()
        },
        vision_config: ClipVisionConfig {
            hidden_size: 16,
            intermediate_size: 32,
            projection_dim: 8,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            image_size: 32,
            patch_size: 8,
            ..ClipVisionConfig::default()
        },
        projection_dim: 8,
        ..ClipConfig::default()
    };
    let dev = Device::Cpu;
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &dev);
    let scorer = ClipScorer::new(ClipModel::new(vb, &config).unwrap(), &config, &dev).unwrap();
    (map, config, scorer)
}

fn random_clip() -> ClipScorer {
    random_clip_parts().2
}

fn assert_percentages_in_range(report: &EvalReport) {
    for g in &report.groups {
        let t = &g.tally;
        let values = t
            .all_correct_percent()
            .into_iter()
            .chain((0..6).filter_map(|k| t.attribute_percent(k)));
        for v in values {
            assert!((0.0..=100.0).contains(&v), "{:?}: {v}", g.category);
        }
    }
}

#[test]
fn evaluates_the_tiny_model_over_every_category() {
    let model = tiny_sd1();
    let cfg = EvalConfig {
        prompts_per_category: 1,
        seeds: vec![3],
        steps: 2,
        ..EvalConfig::default()
    };
    let clip = random_clip();
    let mut calls = 0;
    let report = evaluate(&model, Some(&clip), &cfg, &mut |step| {
        calls += 1;
        assert_eq!((step.done, step.total), (calls, 12));
        assert_eq!(step.image.dimensions(), (64, 64));
        Ok(())
    })
    .unwrap();
    assert_eq!(calls, 12);
    assert_eq!(report.overall.images, 12);
    for category in Category::ALL {
        for pairs in Pairs::ALL {
            let g = report.group(category, pairs).unwrap();
            assert_eq!(g.tally.images, 1, "{category:?} {pairs:?}");
            assert!(g
                .tally
                .clip_score()
                .is_some_and(|s| (0.0..=100.0).contains(&s)));
        }
    }
    assert_percentages_in_range(&report);
    assert!(report.images_per_second() > 0.0);
    let table = report.to_table();
    for category in Category::ALL {
        assert!(table.contains(category.name()), "{table}");
    }
    println!("{table}");
}

#[test]
fn progress_errors_stop_the_evaluation() {
    let model = tiny_sd1();
    let cfg = EvalConfig {
        prompts_per_category: 1,
        seeds: vec![0],
        steps: 1,
        ..EvalConfig::default()
    };
    let err = evaluate(&model, None, &cfg, &mut |_| {
        Err(pigment::Error::invalid("disk full"))
    })
    .err()
    .unwrap();
    assert!(err.to_string().contains("disk full"));
}

#[test]
fn rendered_ground_truth_scores_nearly_everything_correct() {
    let prompts = eval_prompts(8).unwrap();
    let images: Vec<_> = prompts.iter().map(|p| render(&p.scene, 64)).collect();
    let items: Vec<_> = prompts
        .iter()
        .zip(&images)
        .map(|(p, i)| (p, 0, i))
        .collect();
    let clip = random_clip();
    let report = score_images(&items, Some(&clip)).unwrap();
    println!("{}", report.to_table());
    assert_eq!(report.overall.images, 8 * 12);
    assert_percentages_in_range(&report);
    // The analyser's accuracy on clean renders (measured: see the report table).
    let all = report.overall.all_correct_percent().unwrap();
    assert!(all >= 95.0, "ground truth all-correct only {all:.1}%");
    for g in &report.groups {
        let p = g.tally.all_correct_percent().unwrap();
        assert!(p >= 75.0, "{:?} {:?}: {p:.1}%", g.category, g.pairs);
    }
    // Every image got a CLIP score; a random CLIP's cosine is anywhere in [-1, 1].
    assert!(report
        .results
        .iter()
        .all(|r| r.clip_score.is_some_and(|s| s.abs() <= 100.0 + 1e-3)));
    let json = report.to_json();
    assert_eq!(json["results"].as_array().unwrap().len(), 96);
    assert!(json["overall"]["clip_score"].is_number());
}

#[test]
fn clip_folder_loads_and_scores_as_in_memory() {
    let (map, config, in_memory) = random_clip_parts();
    let dir = tempfile::tempdir().unwrap();
    map.save(dir.path().join("model.safetensors")).unwrap();
    let t = &config.text_config;
    let v = &config.vision_config;
    // transformers' CLIPConfig field names.
    let json = serde_json::json!({
        "text_config": {
            "hidden_size": t.hidden_size, "intermediate_size": t.intermediate_size,
            "num_hidden_layers": t.num_hidden_layers,
            "num_attention_heads": t.num_attention_heads,
            "max_position_embeddings": t.max_position_embeddings,
            "projection_dim": t.projection_dim,
        },
        "vision_config": {
            "hidden_size": v.hidden_size, "intermediate_size": v.intermediate_size,
            "projection_dim": v.projection_dim, "num_hidden_layers": v.num_hidden_layers,
            "num_attention_heads": v.num_attention_heads, "image_size": v.image_size,
            "patch_size": v.patch_size,
        },
        "projection_dim": config.projection_dim,
        "logit_scale_init_value": 2.6592,
    });
    std::fs::write(dir.path().join("config.json"), json.to_string()).unwrap();
    let loaded = ClipScorer::load(dir.path(), &Device::Cpu).unwrap();

    let prompts = eval_prompts(1).unwrap();
    let image = render(&prompts[0].scene, 64);
    let expected = in_memory.score(&prompts[0].caption, &image).unwrap();
    let got = loaded.score(&prompts[0].caption, &image).unwrap();
    // The in-memory model holds variables, which take the training kernels (flattened Linear,
    // unfused attention); the loaded one takes the inference kernels: f32 rounding apart.
    assert!((got - expected).abs() < 1e-3, "{got} vs {expected}");
    assert!(got.abs() <= 100.0 + 1e-3);
    // A different caption gives a different score (the text reaches the features).
    let other = loaded.score("a blue circle", &image).unwrap();
    assert_ne!(other, got);

    let missing = ClipScorer::load(&dir.path().join("nope"), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(missing.contains("config.json"), "{missing}");
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let no_weights = ClipScorer::load(dir.path(), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(no_weights.contains("model.safetensors"), "{no_weights}");
}
