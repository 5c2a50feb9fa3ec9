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
    // Text features of "a {colour} {shape}" for every pair, encoded once: row colour * shapes
    // + shape of [colours * shapes, D].
    let mut captions = Vec::new();
    for colour in Colour::ALL {
        for shape in Shape::ALL {
            captions.push(scorer.text_features(&format!(
                "a {} {}",
                colour.name(),
                shape.name()
            ))?);
        }
    }
    let captions = Tensor::cat(&captions, 0)?;
    // Seed 7: images the training (seed recipe::DATA_SEED) never drew.
    for (name, data) in [("seen", Dataset::train(7)), ("held-out", Dataset::eval(7))] {
        let data = data.with_categories(&[Category::Single])?;
        let mut images = Vec::new();
        let mut objects = Vec::new();
        for index in 0..count {
            let sample = data.get(index);
            images.push(scorer.image_features(&sample.image)?);
            objects.push(sample.scene.objects[0].clone());
        }
        report(name, &Tensor::cat(&images, 0)?, &objects, &captions)?;
    }
    Ok(())
}

/// `images` [N, D] and `captions` [colours * shapes, D] are L2-normalised features.
fn report(
    split: &str,
    images: &Tensor,
    objects: &[Object],
    captions: &Tensor,
) -> anyhow::Result<()> {
    let shapes = Shape::ALL.len();
    let index = |o: &Object| {
        let colour = Colour::ALL.iter().position(|&c| c == o.colour).unwrap();
        let shape = Shape::ALL.iter().position(|&s| s == o.shape).unwrap();
        (colour, shape)
    };
    // Cosine of every image with every caption, and with every other image.
    let to_caption = images.matmul(&captions.t()?)?.to_vec2::<f32>()?;
    let to_image = images.matmul(&images.t()?)?.to_vec2::<f32>()?;
    let (mut shape_right, mut colour_right) = (0, 0);
    let mut confusion = [[0u32; Shape::ALL.len()]; Shape::ALL.len()];
    for (scores, object) in to_caption.iter().zip(objects) {
        let (colour, shape) = index(object);
        // "a {true colour} {each shape}" and "a {each colour} {true shape}".
        let guess = argmax(
            scores[colour * shapes..(colour + 1) * shapes]
                .iter()
                .copied(),
        );
        confusion[shape][guess] += 1;
        shape_right += usize::from(guess == shape);
        let guess = argmax(scores.iter().skip(shape).step_by(shapes).copied());
        colour_right += usize::from(guess == colour);
    }
    // Each image's nearest other image of the same colour: is it the same shape? Chance: the
    // share of the other same-colour images that are (1 for held-out pairs, one shape a colour).
    let (mut nearest_same, mut judged, mut chance) = (0, 0, 0.0);
    for (i, (row, oa)) in to_image.iter().zip(objects).enumerate() {
        let others: Vec<usize> = (0..objects.len())
            .filter(|&j| j != i && objects[j].colour == oa.colour)
            .collect();
        let Some(&nearest) = others.iter().max_by(|&&a, &&b| row[a].total_cmp(&row[b])) else {
            continue;
        };
        let same = others
            .iter()
            .filter(|&&j| objects[j].shape == oa.shape)
            .count();
        judged += 1;
        nearest_same += usize::from(objects[nearest].shape == oa.shape);
        chance += same as f64 / others.len() as f64;
    }
    let percent = |n: usize, of: usize| n as f64 * 100.0 / of.max(1) as f64;
    println!(
        "{split}: {} single-object images: zero-shot shape right {:.1}% (chance {:.1}%), colour \
         right {:.1}%; nearest image of the same colour has the same shape {:.1}% (chance {:.1}%)",
        objects.len(),
        percent(shape_right, objects.len()),
        100.0 / shapes as f64,
        percent(colour_right, objects.len()),
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

/// Index of the largest score (the first of equals).
fn argmax(scores: impl Iterator<Item = f32>) -> usize {
    scores
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, s)| {
            if s > best.1 {
                (i, s)
            } else {
                best
            }
        })
        .0
}
