//! How far apart the conditioning encoder puts captions that differ in one word: colour,
//! shape, count, relation. The UNet can only follow words whose hidden states differ.
//!
//! cargo run --release -p pigment --example text_probe [MODEL_DIR]
mod common;

use candle_core::Tensor;

fn main() -> anyhow::Result<()> {
    let model = common::model_from_args()?;
    let enc = |s: &str| model.encode_prompts(&[s], 1);
    let dist = |a: &Tensor, b: &Tensor| -> anyhow::Result<f32> {
        Ok((a - b)?.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?)
    };
    let pairs = [
        ("a red star", "a blue star", "colour"),
        ("a red star", "a green star", "colour"),
        ("a red star", "a red circle", "shape"),
        ("a red square", "a red triangle", "shape"),
        ("a red ring", "a red cross", "shape"),
        ("a large red star", "a small red star", "size"),
        ("two red stars", "three red stars", "count"),
        (
            "a red star to the left of a blue ring",
            "a red star to the right of a blue ring",
            "relation",
        ),
        (
            "a red star to the left of a blue ring",
            "a blue star to the left of a red ring",
            "binding",
        ),
        ("a red star", "", "vs empty"),
    ];
    for (a, b, what) in pairs {
        println!("{what:9} {:.3}  {a:?} / {b:?}", dist(&enc(a)?, &enc(b)?)?);
    }
    Ok(())
}
