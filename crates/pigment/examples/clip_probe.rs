//! Zero-shot accuracy of a CLIP folder on single-object renders of the built-in world, for
//! seen and for held-out colour-shape pairs: for each image, which of "a {colour} {shape}"
//! (true colour, every shape) and of "a {colour} {true shape}" (every colour) scores highest.
//! The text tower, the UNet's conditioning, can only learn the words its vision tower tells
//! apart. Also: does the vision tower alone group images by shape (nearest image of the same
//! colour, seen pairs)?
//!
//! cargo run --release -p pigment --example clip_probe [CLIP_DIR] [IMAGES]
use candle_core::{Device, Tensor};
use pigment::builtin::eval::ClipScorer;
use pigment::builtin::{Category, Colour, Dataset, Object, Shape};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = match args.next() {
        Some(dir) => std::path::PathBuf::from(dir),
        None => pigment::builtin::builtin_model_dir()?.join("clip"),
    };
    let count: u64 = args.next().map(|n| n.parse()).transpose()?.unwrap_or(300);
    let scorer = ClipScorer::load(&dir, &Device::Cpu)?;
    // Seed 7: images the training (seed recipe::DATA_SEED) never drew.
    for (name, data) in [("seen", Dataset::train(7)), ("held-out", Dataset::eval(7))] {
        let data = data.with_categories(&[Category::Single])?;
        let mut images = Vec::new();
        for index in 0..count {
            let sample = data.get(index);
            let image = scorer.image_features(&sample.image)?;
            images.push((image, sample.scene.objects[0].clone()));
        }
        report(&scorer, name, &images)?;
    }
    Ok(())
}

fn report(scorer: &ClipScorer, split: &str, images: &[(Tensor, Object)]) -> anyhow::Result<()> {
    let best = |image: &Tensor, captions: &[String]| -> anyhow::Result<usize> {
        let texts: Vec<Tensor> = captions
            .iter()
            .map(|c| scorer.text_features(c))
            .collect::<Result<_, _>>()?;
        let scores = Tensor::cat(&texts, 0)?.matmul(&image.t()?)?.flatten_all()?;
        Ok(scores.argmax(0)?.to_scalar::<u32>()? as usize)
    };
    let (mut shape_right, mut colour_right) = (0, 0);
    let mut confusion = [[0u32; Shape::ALL.len()]; Shape::ALL.len()];
    for (image, object) in images {
        let shapes: Vec<String> = Shape::ALL
            .iter()
            .map(|s| format!("a {} {}", object.colour.name(), s.name()))
            .collect();
        let guess = best(image, &shapes)?;
        let truth = Shape::ALL.iter().position(|&s| s == object.shape).unwrap();
        confusion[truth][guess] += 1;
        shape_right += usize::from(guess == truth);
        let colours: Vec<String> = Colour::ALL
            .iter()
            .map(|c| format!("a {} {}", c.name(), object.shape.name()))
            .collect();
        colour_right += usize::from(Colour::ALL[best(image, &colours)?] == object.colour);
    }
    // Each image's nearest other image of the same colour: is it the same shape? Chance: the
    // share of the other same-colour images that are (1 for held-out pairs, one shape a colour).
    let (mut nearest_same, mut judged, mut chance) = (0, 0, 0.0);
    for (i, (a, oa)) in images.iter().enumerate() {
        let mut best: Option<(f32, Shape)> = None;
        let (mut others, mut same) = (0, 0);
        for (j, (b, ob)) in images.iter().enumerate() {
            if i != j && ob.colour == oa.colour {
                let cosine = (a * b)?.sum_all()?.to_scalar::<f32>()?;
                if best.is_none_or(|(c, _)| cosine > c) {
                    best = Some((cosine, ob.shape));
                }
                others += 1;
                same += usize::from(ob.shape == oa.shape);
            }
        }
        if let Some((_, shape)) = best {
            judged += 1;
            nearest_same += usize::from(shape == oa.shape);
            chance += same as f64 / others as f64;
        }
    }
    let percent = |n: usize, of: usize| n as f64 * 100.0 / of.max(1) as f64;
    println!(
        "{split}: {} single-object images: zero-shot shape right {:.1}% (chance {:.1}%), colour \
         right {:.1}%; nearest image of the same colour has the same shape {:.1}% (chance {:.1}%)",
        images.len(),
        percent(shape_right, images.len()),
        100.0 / Shape::ALL.len() as f64,
        percent(colour_right, images.len()),
        percent(nearest_same, judged),
        chance * 100.0 / judged.max(1) as f64,
    );
    println!(
        "  shape confusion (row: drawn, column: chosen; {:?}):",
        Shape::ALL
    );
    for (shape, row) in Shape::ALL.iter().zip(confusion) {
        println!("  {:>9} {row:?}", shape.name());
    }
    Ok(())
}
