//! Outpainting through the library API with both kinds of model: tiny-sd1 (4 channels, latent
//! blending) and tiny-sd1 with the 9-channel inpainting fixture UNet. The canvas grows by the
//! padding, the old image is kept exactly in every image of a batch (no mask blur: it is
//! composited back), and the padded request is the inpainting request the docs describe.

mod common;
use common::*;

use pigment::image::{load_image, tensor_to_images};
use pigment::pipelines::{
    LoadOptions, OutpaintPadding, OutpaintRequest, StableDiffusion, Txt2ImgRequest,
};
use pigment::samplers::SamplerKind;

fn request() -> OutpaintRequest {
    let init = load_image(&fixtures().join("inpaint/init.png")).unwrap();
    let base = Txt2ImgRequest {
        prompt: "a red star above a small green square".into(),
        steps: 4,
        sampler: SamplerKind::Euler,
        seed: 3,
        ..Txt2ImgRequest::default()
    };
    let padding: OutpaintPadding = "right=16,top=8".parse().unwrap();
    OutpaintRequest::new(base, init, padding, 1.0)
}

fn check(model: &StableDiffusion, batch_size: usize) {
    let mut req = request();
    req.base.batch_size = batch_size;
    let inpaint = req.inpaint_request();
    assert_eq!(inpaint.image.init_image.dimensions(), (80, 72));
    assert_eq!(inpaint.mask.get_pixel(79, 40).0[0], 255);
    assert_eq!(inpaint.mask.get_pixel(10, 4).0[0], 255);
    assert_eq!(inpaint.mask.get_pixel(10, 40).0[0], 0);

    let out = model.outpaint(&req, &mut |_, _| {}).unwrap();
    let images = tensor_to_images(&out.decoded).unwrap();
    assert_eq!(images.len(), batch_size);
    for image in images {
        check_image(&req, &inpaint, &image);
    }
}

fn check_image(
    req: &OutpaintRequest,
    inpaint: &pigment::pipelines::InpaintRequest,
    image: &::image::RgbImage,
) {
    assert_eq!(image.dimensions(), (80, 72));
    // The old image sits at (0, 8), unchanged (composited back; bar 0 levels).
    for y in 0..64 {
        for x in 0..64 {
            assert_eq!(
                image.get_pixel(x, y + 8),
                req.init_image.get_pixel(x, y),
                "({x}, {y})"
            );
        }
    }
    // The new area differs from the edge fill somewhere.
    let fill = &inpaint.image.init_image;
    assert!((64..80).any(|x| image.get_pixel(x, 40) != fill.get_pixel(x, 40)));
}

#[test]
fn outpaint_with_an_ordinary_model() {
    let model = StableDiffusion::load(&fixtures().join("models/tiny-sd1"), &LoadOptions::default())
        .unwrap();
    check(&model, 2);
}

#[test]
fn outpaint_with_a_nine_channel_inpainting_model() {
    let model = load_tiny_sd1_with_unet("inpaint/unet9");
    assert_eq!(model.unet.config().in_channels, 9);
    check(&model, 1);
}

#[test]
fn a_size_that_is_not_a_multiple_of_eight_is_refused_with_the_fix() {
    let model = StableDiffusion::load(&fixtures().join("models/tiny-sd1"), &LoadOptions::default())
        .unwrap();
    let mut req = request();
    req.padding.top = 6;
    req.base.height = 70;
    let Err(err) = model.outpaint(&req, &mut |_, _| {}) else {
        panic!("a 64x70 canvas was accepted");
    };
    let err = err.to_string();
    assert!(
        err.contains("height 64 + 6 = 70") && err.contains("add 2 more"),
        "{err}"
    );
}
