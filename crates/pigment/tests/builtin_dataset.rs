//! The built-in synthetic dataset and its analyser: determinism, captions that match the
//! pixels, corruptions that the judge catches, held-out pairs, robustness. Accuracies are
//! printed (run with `--nocapture` to see them).

use std::time::Instant;

use image::{imageops, Rgb, RgbImage};
use pigment::builtin::{
    analyse, degrade, is_held_out, parse_caption, render, Category, Colour, Dataset, Degradation,
    Relation, Sample, Shape, SplitMix64,
};

const SAMPLES: u64 = 500;

fn judged_correct(sample: &Sample, image: &RgbImage) -> bool {
    let query = parse_caption(&sample.caption).expect("every caption parses");
    analyse(image, &query).all_correct()
}

fn accuracy(dataset: &Dataset, n: u64, degradation: Option<Degradation>) -> f64 {
    let scale = dataset.size() as f32 / 64.0;
    let correct = (0..n)
        .filter(|&i| {
            let sample = dataset.get(i);
            let image = match degradation {
                // The same relative blur at every resolution.
                Some(d) => degrade(
                    &sample.image,
                    &Degradation {
                        blur_sigma: d.blur_sigma * scale,
                        ..d
                    },
                    i,
                ),
                None => sample.image.clone(),
            };
            judged_correct(&sample, &image)
        })
        .count();
    correct as f64 / n as f64
}

#[test]
fn samples_are_a_pure_function_of_seed_and_index() {
    let a = Dataset::train(11);
    let b = Dataset::train(11);
    let forward: Vec<_> = (0..20).map(|i| a.sample(i)).collect();
    for i in (0..20).rev() {
        let (image, caption, scene) = b.sample(i);
        let (fi, fc, fs) = &forward[i as usize];
        assert_eq!(image.as_raw(), fi.as_raw(), "pixels of sample {i}");
        assert_eq!(&caption, fc);
        assert_eq!(&scene, fs);
    }
    let other = Dataset::train(12);
    let differing = (0..20)
        .filter(|&i| other.sample(i).0.as_raw() != forward[i as usize].0.as_raw())
        .count();
    assert!(
        differing >= 19,
        "different seeds gave {differing}/20 different images"
    );
    let eval = Dataset::eval(11);
    assert_ne!(
        eval.sample(0).1,
        forward[0].1,
        "eval and train streams must differ"
    );
}

#[test]
fn captions_match_what_is_drawn() {
    for size in [64, 128] {
        let dataset = Dataset::train(1).with_size(size).unwrap();
        let acc = accuracy(&dataset, SAMPLES, None);
        println!("clean train accuracy at {size}x{size}: {:.1}%", 100.0 * acc);
        assert!(acc >= 0.98, "{size}: {acc}");
    }
    let eval = Dataset::eval(2);
    let acc = accuracy(&eval, 200, None);
    println!(
        "clean eval (held-out pairs) accuracy at 64x64: {:.1}%",
        100.0 * acc
    );
    assert!(acc >= 0.98, "eval: {acc}");
}

#[test]
fn analyser_tolerates_blur_and_colour_noise() {
    let moderate = Degradation::default();
    let strong = Degradation {
        blur_sigma: 1.0,
        noise: 12.0,
        cast: 20.0,
    };
    for size in [64, 128] {
        let dataset = Dataset::train(3).with_size(size).unwrap();
        let acc = accuracy(&dataset, SAMPLES, Some(moderate));
        let acc_strong = accuracy(&dataset, SAMPLES, Some(strong));
        println!(
            "degraded accuracy at {size}x{size}: {:.1}% ({moderate:?}), {:.1}% ({strong:?})",
            100.0 * acc,
            100.0 * acc_strong
        );
        assert!(acc >= 0.9, "{size}: {acc}");
        assert!(acc_strong >= 0.8, "{size} strong: {acc_strong}");
    }
}

/// Share of the samples whose corrupted image fails `attribute`; samples the corruption does
/// not apply to are skipped.
fn failure_rate(
    attribute: &str,
    corrupt: impl Fn(&Sample, &mut SplitMix64) -> Option<RgbImage>,
) -> f64 {
    let dataset = Dataset::train(5);
    let mut rng = SplitMix64::new(99);
    let (mut tried, mut caught) = (0, 0);
    for i in 0..2 * SAMPLES {
        let sample = dataset.get(i);
        let Some(image) = corrupt(&sample, &mut rng) else {
            continue;
        };
        let verdict = analyse(&image, &parse_caption(&sample.caption).unwrap());
        tried += 1;
        if verdict.failures().contains(&attribute) {
            caught += 1;
        }
        if tried == SAMPLES {
            break;
        }
    }
    assert!(tried >= 100, "only {tried} samples for {attribute}");
    let rate = caught as f64 / tried as f64;
    println!(
        "{attribute} corruption caught in {:.1}% of {tried}",
        100.0 * rate
    );
    rate
}

#[test]
fn recoloured_objects_fail_colour() {
    let rate = failure_rate("colour", |s, rng| {
        let mut scene = s.scene.clone();
        let k = rng.below(scene.objects.len());
        let old = scene.objects[k].colour;
        let choices: Vec<Colour> = Colour::ALL
            .into_iter()
            .filter(|&c| c != old && scene.background.contrasts_with(c))
            .collect();
        scene.objects[k].colour = *rng.pick(&choices)?;
        Some(render(&scene, 64))
    });
    assert!(rate >= 0.95);
}

#[test]
fn deleted_objects_fail_count() {
    let rate = failure_rate("count", |s, rng| {
        let mut scene = s.scene.clone();
        scene.objects.remove(rng.below(scene.objects.len()));
        Some(render(&scene, 64))
    });
    assert!(rate >= 0.95);
}

#[test]
fn mirrored_relations_fail_relation() {
    let rate = failure_rate("relation", |s, _| {
        let query = parse_caption(&s.caption)?;
        Some(match query.relation?.relation {
            Relation::LeftOf | Relation::RightOf => imageops::flip_horizontal(&s.image),
            Relation::Above | Relation::Below => imageops::flip_vertical(&s.image),
        })
    });
    assert!(rate >= 0.95);
}

#[test]
fn replaced_shapes_fail_shape() {
    let rate = failure_rate("shape", |s, rng| {
        let mut scene = s.scene.clone();
        let k = rng.below(scene.objects.len());
        let old = scene.objects[k].shape;
        let others: Vec<Shape> = Shape::ALL.into_iter().filter(|&x| x != old).collect();
        scene.objects[k].shape = *rng.pick(&others)?;
        Some(render(&scene, 64))
    });
    assert!(rate >= 0.95);
}

#[test]
fn swapped_sizes_fail_size() {
    let rate = failure_rate("size", |s, _| {
        if s.category != Category::Sized {
            return None;
        }
        let mut scene = s.scene.clone();
        let o = &mut scene.objects[0];
        let ratio = o.diameter / o.size.diameter();
        o.size = match o.size {
            pigment::builtin::Size::Small => pigment::builtin::Size::Large,
            pigment::builtin::Size::Large => pigment::builtin::Size::Small,
        };
        o.diameter = o.size.diameter() * ratio;
        o.x = o.x.clamp(0.25, 0.75);
        o.y = o.y.clamp(0.25, 0.75);
        Some(render(&scene, 64))
    });
    assert!(rate >= 0.95);
}

#[test]
fn training_split_never_shows_held_out_pairs() {
    let train = Dataset::train(123);
    for i in 0..20_000 {
        let (scene, _, _) = train.describe(i);
        for o in &scene.objects {
            assert!(!is_held_out(o.colour, o.shape), "sample {i}: {o:?}");
        }
    }
    let eval = Dataset::eval(123);
    for i in 0..2_000 {
        let (scene, caption, _) = eval.describe(i);
        let first = &scene.objects[0];
        assert!(
            is_held_out(first.colour, first.shape),
            "eval {i}: {caption}"
        );
    }
}

#[test]
fn every_category_appears_with_its_caption_form() {
    let dataset = Dataset::train(8);
    let mut seen = std::collections::HashMap::new();
    for i in 0..600 {
        let (scene, caption, category) = dataset.describe(i);
        let query = parse_caption(&caption).expect(&caption);
        assert_eq!(query.total_objects(), scene.objects.len(), "{caption}");
        let form_ok = match category {
            Category::Count => query.objects.len() == 1 && query.objects[0].count >= 2,
            Category::Relation => query.relation.is_some(),
            Category::Sized => query.objects[0].size.is_some(),
            Category::Background => query.background.is_some(),
            Category::Single => query.objects[0].size.is_none(),
            Category::Composition => query.objects.len() >= 2,
        };
        assert!(form_ok, "{category:?}: {caption}");
        *seen.entry(category).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), Category::ALL.len(), "{seen:?}");
}

#[test]
fn analyser_survives_degenerate_images() {
    let queries: Vec<_> = [
        "a red star",
        "three small yellow stars on a black and white background",
        "a large green ring to the left of a small yellow triangle",
        "a blue background",
    ]
    .iter()
    .map(|t| parse_caption(t).unwrap())
    .collect();
    let mut rng = SplitMix64::new(4);
    let mut images = vec![
        RgbImage::new(0, 0),
        RgbImage::new(1, 1),
        RgbImage::new(2, 3),
        RgbImage::new(50, 20),
        RgbImage::from_pixel(64, 64, Rgb([255, 255, 255])),
        RgbImage::from_pixel(64, 64, Rgb([0, 0, 0])),
        RgbImage::from_fn(64, 64, |x, y| Rgb([((x ^ y) & 1) as u8 * 255; 3])),
        RgbImage::from_fn(64, 64, |x, _| Rgb([(x * 4) as u8, 0, 255 - (x * 4) as u8])),
    ];
    for size in [7, 64, 128] {
        images.push(RgbImage::from_fn(size, size, |_, _| {
            Rgb([
                rng.below(256) as u8,
                rng.below(256) as u8,
                rng.below(256) as u8,
            ])
        }));
    }
    for image in &images {
        for query in &queries {
            let verdict = analyse(image, query);
            if image.width() == 64 && image.pixels().all(|p| p.0 == [0, 0, 0]) {
                assert!(!verdict.all_correct());
            }
        }
    }
}

#[test]
fn invalid_dataset_settings_are_errors() {
    assert!(Dataset::train(0).with_size(8).is_err());
    assert!(Dataset::train(0).with_size(100_000).is_err());
    assert!(Dataset::train(0).with_categories(&[]).is_err());
    let only = Dataset::train(0)
        .with_categories(&[Category::Count])
        .unwrap();
    assert!((0..20).all(|i| only.describe(i).2 == Category::Count));
}

#[test]
fn rendering_a_128_sample_is_fast() {
    let dataset = Dataset::train(9).with_size(128).unwrap();
    let scenes: Vec<_> = (0..200).map(|i| dataset.describe(i).0).collect();
    let start = Instant::now();
    for scene in &scenes {
        std::hint::black_box(render(scene, 128));
    }
    let per_image = start.elapsed().as_secs_f64() * 1000.0 / scenes.len() as f64;
    println!("render 128x128: {per_image:.3} ms per image");
    // Generous bound (the machine is shared); the brief asks for well under 5 ms.
    assert!(per_image < 5.0, "{per_image} ms");
}

#[test]
fn captions_use_only_the_vocabulary() {
    let words = pigment::builtin::vocabulary();
    let dataset = Dataset::train(21);
    for i in 0..2000 {
        let caption = dataset.describe(i).1;
        for word in caption
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            assert!(words.contains(&word), "{word:?} in {caption:?}");
        }
    }
}
