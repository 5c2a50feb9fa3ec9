//! The shipped built-in model (models/builtin, trained by `pigment train`): it loads through
//! the ordinary diffusers-folder loader, fits the size budget, and draws what simple prompts ask,
//! as judged by the shapes world's analyser.

mod common;

use pigment::builtin::{analyse, builtin_model_dir, parse_caption, Verdict};
use pigment::image::tensor_to_images;
use pigment::pipelines::{LoadOptions, StableDiffusion, Txt2ImgRequest};
use pigment::samplers::SamplerKind;

/// The whole folder: at most 30 MB (the budget), weights stored as f16.
#[test]
fn shipped_model_fits_the_budget_and_loads_as_a_diffusers_folder() {
    let dir = builtin_model_dir().unwrap();
    let total: u64 = walk(&dir).iter().map(|p| p.metadata().unwrap().len()).sum();
    assert!(total <= 30 << 20, "built-in model is {total} bytes");
    let model = StableDiffusion::load(&dir, &LoadOptions::default()).unwrap();
    let native = model.unet.config().sample_size * model.vae_scale_factor();
    assert!(native >= 64, "native resolution {native}");
}

/// Percent of single-object images whose object has the asked colour (measured: 24 of 24).
const COLOUR_BAR: usize = 80;
/// Percent that show exactly one object, as asked (measured: 20 of 24).
const COUNT_BAR: usize = 70;
/// Percent of images whose background has the asked colour (measured: 7 of 12, the fourth
/// version 9 of 12, in `pigment eval` 62.5% and 51.7%; the third
/// version, trained on SD's own schedule, got 0-11% of backgrounds right in `pigment eval`).
const BACKGROUND_BAR: usize = 50;

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// The analyser's verdict on the shipped model's image for each prompt and seed (native size,
/// the pipeline's defaults otherwise: 20 steps of Euler a, CFG 7.5), printed as it goes.
fn verdicts(prompts: &[&str], seeds: &[u64]) -> Vec<Verdict> {
    verdicts_with(&load_builtin(), SamplerKind::EulerAncestral, prompts, seeds)
}

fn load_builtin() -> StableDiffusion {
    StableDiffusion::load(&builtin_model_dir().unwrap(), &LoadOptions::default()).unwrap()
}

/// As `verdicts`, with a loaded model and another sampler.
fn verdicts_with(
    model: &StableDiffusion,
    sampler: SamplerKind,
    prompts: &[&str],
    seeds: &[u64],
) -> Vec<Verdict> {
    let native = model.unet.config().sample_size * model.vae_scale_factor();
    let mut verdicts = Vec::new();
    for prompt in prompts {
        let query = parse_caption(prompt).expect("the prompt is in the world's grammar");
        for &seed in seeds {
            let request = Txt2ImgRequest {
                prompt: prompt.to_string(),
                seed,
                width: native,
                height: native,
                sampler,
                ..Txt2ImgRequest::default()
            };
            let out = model.txt2img(&request, &mut |_, _| {}).unwrap();
            let image = &tensor_to_images(&out.decoded).unwrap()[0];
            let verdict = analyse(image, &query);
            println!(
                "{} {prompt} seed {seed}: colour {:?} shape {:?} count {:?} background {:?}",
                sampler.cli_name(),
                verdict.colour,
                verdict.shape,
                verdict.count,
                verdict.background
            );
            verdicts.push(verdict);
        }
    }
    verdicts
}

/// How many verdicts have `field` right.
fn right(verdicts: &[Verdict], field: impl Fn(&Verdict) -> Option<bool>) -> usize {
    verdicts.iter().filter(|v| field(v) == Some(true)).count()
}

/// Simple prompts at fixed seeds, judged by the shapes world's analyser. The bars are the
/// shipped model's measured rates with a margin (README, "The built-in model"), so the test
/// fails if the model, the loader or the pipeline regresses; raise them as the model improves.
#[test]
fn shipped_model_draws_what_simple_prompts_ask() {
    let prompts = [
        "a red circle",
        "a blue square",
        "a yellow star",
        "a green triangle",
        "a purple ring",
        "an orange cross",
    ];
    let verdicts = verdicts(&prompts, &[1, 2, 3, 4]);
    let images = verdicts.len();
    let colour_right = right(&verdicts, |v| v.colour);
    let count_right = right(&verdicts, |v| v.count);
    println!("{images} images: colour right {colour_right}, count right {count_right}");
    assert!(
        colour_right * 100 >= images * COLOUR_BAR,
        "colour right in {colour_right} of {images} images"
    );
    assert!(
        count_right * 100 >= images * COUNT_BAR,
        "one object in {count_right} of {images} images"
    );
}

/// The background follows the prompt. The versions trained on SD's own schedule could not do
/// this: x_T kept 6.8% of the image, they learnt to take the background colour from the
/// starting noise's mean, and from pure noise drew the all-zero latent's colour (cyan-grey)
/// whatever was asked; the recipe now trains to zero terminal SNR (`recipe::scheduler_config`).
#[test]
fn shipped_model_paints_the_asked_background() {
    let prompts = [
        "a red circle on a yellow background",
        "a blue square on a white background",
        "a yellow star on a black background",
        "a white ring on a purple background",
    ];
    let verdicts = verdicts(&prompts, &[1, 2, 3]);
    let images = verdicts.len();
    let background_right = right(&verdicts, |v| v.background);
    println!("{images} images: background right {background_right}");
    assert!(
        background_right * 100 >= images * BACKGROUND_BAR,
        "background right in {background_right} of {images} images"
    );
}

/// Every sampler but LCM (which needs an LCM-distilled model) draws the asked colours from the
/// shipped scheduler config. Until it said `"clip_sample": false`, its `null` read as "class
/// default" and DDIM and DDPM clamped the predicted latents to [-1, 1]: `pigment eval --sampler
/// ddim` got colour right in 11% of images instead of 50%, background in 3% instead of 78%.
#[test]
fn every_sampler_draws_the_asked_colours_with_the_shipped_scheduler_config() {
    let prompts = [
        "a red circle on a yellow background",
        "a blue square on a white background",
    ];
    let model = load_builtin();
    for &sampler in SamplerKind::all() {
        if sampler == SamplerKind::Lcm {
            continue;
        }
        let verdicts = verdicts_with(&model, sampler, &prompts, &[1, 2]);
        let colour_right = right(&verdicts, |v| v.colour);
        let background_right = right(&verdicts, |v| v.background);
        assert!(
            colour_right + background_right >= 5,
            "{}: colour right in {colour_right} and background in {background_right} of 4 images",
            sampler.cli_name()
        );
    }
}

/// What the UNet sees at generation is what it trained on: the training stage's token ids
/// (`ClipTokenizer::embedded`, padded to `recipe::TEXT_TOKENS`) and the text tower's last
/// hidden states, through both prompt paths of the pipeline (plain and A1111 syntax), for
/// plain, long and empty (the dropped-caption) prompts.
#[test]
fn pipeline_conditions_exactly_as_training_did() {
    use candle_core::Tensor;
    use pigment::builtin::recipe::TEXT_TOKENS;
    use pigment::text::ClipTokenizer;

    let model = load_builtin();
    let training_tokenizer = ClipTokenizer::embedded().unwrap();
    for caption in [
        "a red star",
        "a small cyan cross below a white circle, green and orange background",
        "",
    ] {
        let ids = training_tokenizer
            .encode_padded(caption, TEXT_TOKENS)
            .unwrap();
        assert_eq!(
            model.tokenizer.encode_padded(caption, TEXT_TOKENS).unwrap(),
            ids,
            "{caption:?}: token ids differ"
        );
        let ids = Tensor::from_vec(ids, (1, TEXT_TOKENS), &model.device).unwrap();
        let trained_on = model.text_encoder.forward(&ids).unwrap();
        let plain = model.encode_prompts(&[caption], 1).unwrap();
        let a1111 = model.encode_prompts_a1111(&[caption], 1).unwrap().remove(0);
        for (path, got) in [("plain", plain), ("a1111", a1111)] {
            assert_eq!(got.dims(), trained_on.dims(), "{path} {caption:?}");
            let diff = common::max_abs_diff(&got, &trained_on);
            assert_eq!(
                diff, 0.0,
                "{path} prompt path for {caption:?} differs by {diff}"
            );
        }
    }
}
