//! Checkpoint reading: the tiny SD1/SD2 models as diffusers folders, as LDM single-file
//! safetensors and (SD1) as a .ckpt must give the same family, prediction, configs and the
//! same tensors, bit for bit (exact comparison in f32 of f16-stored weights). The single files
//! were made by tools/reference/make_single_file_fixtures.py and verified there with diffusers'
//! own `from_single_file`. Also: every error a user can cause, and a fuzz-style check that
//! damaged files give errors, never panics. Files for error tests are generated in a tempdir.

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use pigment::unet::PerBlock;
use pigment::weights::{Checkpoint, Component, Family, OpenOptions, Prediction, SourceFormat};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}
fn folder(name: &str) -> PathBuf {
    fixtures().join("models").join(name)
}
fn single(name: &str) -> PathBuf {
    fixtures().join("single_file").join(name)
}
fn open(path: &Path) -> Checkpoint {
    Checkpoint::open(path, &OpenOptions::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
fn open_err(path: &Path) -> String {
    match Checkpoint::open(path, &OpenOptions::default()) {
        Ok(_) => panic!("{} opened but should not", path.display()),
        Err(e) => {
            assert!(
                matches!(e, pigment::Error::Checkpoint { .. }),
                "not a checkpoint error: {e}"
            );
            e.to_string()
        }
    }
}

/// Every config field shapes determine must equal the folder's.
fn assert_same_structure(want: &Checkpoint, got: &Checkpoint) {
    let (w, g) = (&want.unet_config, &got.unet_config);
    assert_eq!(w.in_channels, g.in_channels);
    assert_eq!(w.out_channels, g.out_channels);
    assert_eq!(w.block_out_channels, g.block_out_channels);
    assert_eq!(w.layers_per_block, g.layers_per_block);
    assert_eq!(w.down_block_types, g.down_block_types);
    assert_eq!(w.up_block_types, g.up_block_types);
    assert_eq!(w.mid_block_type, g.mid_block_type);
    assert_eq!(w.cross_attention_dim, g.cross_attention_dim);
    assert_eq!(
        w.transformer_layers_per_block,
        g.transformer_layers_per_block
    );
    assert_eq!(w.use_linear_projection, g.use_linear_projection);
    assert_eq!(w.conv_in_kernel, g.conv_in_kernel);
    let (w, g) = (&want.vae_config, &got.vae_config);
    assert_eq!(w.in_channels, g.in_channels);
    assert_eq!(w.out_channels, g.out_channels);
    assert_eq!(w.block_out_channels, g.block_out_channels);
    assert_eq!(w.layers_per_block, g.layers_per_block);
    assert_eq!(w.latent_channels, g.latent_channels);
    assert_eq!(w.down_block_types, g.down_block_types);
    assert_eq!(w.scaling_factor, g.scaling_factor);
    let (w, g) = (&want.text_config, &got.text_config);
    assert_eq!(w.vocab_size, g.vocab_size);
    assert_eq!(w.hidden_size, g.hidden_size);
    assert_eq!(w.intermediate_size, g.intermediate_size);
    assert_eq!(w.num_hidden_layers, g.num_hidden_layers);
    assert_eq!(w.max_position_embeddings, g.max_position_embeddings);
    assert_eq!(w.hidden_act, g.hidden_act);
}

/// Same internal names and bit-identical values for every tensor of every component.
fn assert_same_tensors(want: &Checkpoint, got: &Checkpoint) {
    for c in Component::ALL {
        let names = want.tensor_names(c);
        assert_eq!(names, got.tensor_names(c), "{c} tensor names");
        assert_eq!(want.parameter_count(c), got.parameter_count(c));
        for name in &names {
            let a = want.tensor(c, name, DType::F32).unwrap();
            let b = got.tensor(c, name, DType::F32).unwrap();
            assert_eq!(a.dims(), b.dims(), "{c} {name}");
            let (a, b) = (a.flatten_all().unwrap(), b.flatten_all().unwrap());
            assert_eq!(
                a.to_vec1::<f32>().unwrap(),
                b.to_vec1::<f32>().unwrap(),
                "{c} {name}"
            );
        }
    }
}

#[test]
fn sd1_folder_safetensors_and_ckpt_agree() {
    let dir = open(&folder("tiny-sd1"));
    let st = open(&single("tiny-sd1.safetensors"));
    let ckpt = open(&single("tiny-sd1.ckpt"));
    assert_eq!(dir.format, SourceFormat::DiffusersFolder);
    assert_eq!(st.format, SourceFormat::SingleFileSafetensors);
    assert_eq!(ckpt.format, SourceFormat::Ckpt);
    for ck in [&dir, &st, &ckpt] {
        assert_eq!(ck.family, Family::Sd1);
        assert_eq!(ck.family.to_string(), "SD1.x");
        assert_eq!(ck.prediction, Prediction::Epsilon);
        assert_eq!(ck.scheduler_config.prediction_type, "epsilon");
        assert_eq!(ck.stored_dtype, DType::F16);
        assert!(ck.unknown_keys.is_empty(), "{:?}", ck.unknown_keys);
    }
    assert_eq!(
        dir.tokenizer_dir,
        Some(folder("tiny-sd1").join("tokenizer"))
    );
    assert_eq!(st.tokenizer_dir, None);
    assert_same_structure(&dir, &st);
    assert_same_structure(&dir, &ckpt);
    assert_same_tensors(&dir, &st);
    assert_same_tensors(&dir, &ckpt);
    // The position_ids buffer (int64 in the safetensors, float in the ckpt) is ignored with a note.
    assert!(
        st.notes.iter().any(|n| n.contains("position_ids")),
        "{:?}",
        st.notes
    );
    assert!(
        ckpt.notes.iter().any(|n| n.contains("position_ids")),
        "{:?}",
        ckpt.notes
    );
    // SD1 VAE attention is stored as 1x1 convs and read as linear weights.
    let q = "encoder.mid_block.attentions.0.to_q.weight";
    assert_eq!(
        st.tensor(Component::Vae, q, DType::F32).unwrap().dims(),
        &[32, 32]
    );
    assert_eq!(
        st.stored_name(Component::Vae, q).as_deref(),
        Some("first_stage_model.encoder.mid.attn_1.q.weight")
    );
}

#[test]
fn sd2_folder_and_safetensors_agree() {
    let dir = open(&folder("tiny-sd2"));
    let st = open(&single("tiny-sd2.safetensors"));
    for ck in [&dir, &st] {
        assert_eq!(ck.family, Family::Sd2);
        assert_eq!(ck.family.to_string(), "SD2.x");
        assert_eq!(ck.prediction, Prediction::VPrediction);
        assert_eq!(ck.scheduler_config.prediction_type, "v_prediction");
        assert!(ck.unknown_keys.is_empty(), "{:?}", ck.unknown_keys);
    }
    assert_same_structure(&dir, &st);
    assert_same_tensors(&dir, &st);
    // OpenCLIP: 4 resblocks in the file, the last dropped; q/k/v are row slices of in_proj.
    assert_eq!(st.text_config.num_hidden_layers, 3);
    assert!(
        st.notes
            .iter()
            .any(|n| n.contains("last OpenCLIP resblock")),
        "{:?}",
        st.notes
    );
    assert_eq!(
        st.stored_name(
            Component::TextEncoder,
            "encoder.layers.1.self_attn.k_proj.bias"
        )
        .as_deref(),
        Some("cond_stage_model.model.transformer.resblocks.1.attn.in_proj_bias")
    );
    assert!(st.unet_config.use_linear_projection);
}

#[test]
fn single_files_with_the_folder_config_match_it_exactly() {
    for (file, dir) in [
        ("tiny-sd1.safetensors", "tiny-sd1"),
        ("tiny-sd1.ckpt", "tiny-sd1"),
        ("tiny-sd2.safetensors", "tiny-sd2"),
    ] {
        let want = open(&folder(dir));
        let got = Checkpoint::open_with_config(
            &single(file),
            &OpenOptions::default(),
            Some(&folder(dir)),
        )
        .unwrap();
        assert_eq!(got.text_config, want.text_config, "{file}");
        assert_eq!(got.unet_config, want.unet_config, "{file}");
        assert_eq!(got.vae_config, want.vae_config, "{file}");
        assert_eq!(got.scheduler_config, want.scheduler_config, "{file}");
        assert_eq!(got.prediction, want.prediction, "{file}");
        assert!(
            !got.notes.iter().any(|n| n.contains("not a standard")),
            "{:?}",
            got.notes
        );
    }
}

#[test]
fn single_file_family_rules_fill_what_shapes_cannot_tell() {
    let sd1 = open(&single("tiny-sd1.safetensors"));
    assert_eq!(sd1.unet_config.attention_head_dim, PerBlock::One(8));
    assert_eq!(sd1.unet_config.norm_num_groups, 32);
    assert_eq!(sd1.text_config.hidden_act, "quick_gelu");
    assert_eq!(
        (sd1.vae_config.sample_size, sd1.unet_config.sample_size),
        (512, 64)
    );
    // 16 channels cannot hold 32 groups: the tiny model is flagged as non-standard.
    assert!(
        sd1.notes
            .iter()
            .any(|n| n.contains("not a standard SD1.x model")),
        "{:?}",
        sd1.notes
    );

    let sd2 = open(&single("tiny-sd2.safetensors"));
    assert_eq!(
        sd2.unet_config.attention_head_dim,
        PerBlock::Each(vec![1, 1, 1])
    );
    assert!(sd2.unet_config.upcast_attention);
    assert_eq!(sd2.text_config.hidden_act, "gelu");
    assert_eq!(
        (sd2.vae_config.sample_size, sd2.unet_config.sample_size),
        (768, 96)
    );

    let eps = Checkpoint::open(
        &single("tiny-sd2.safetensors"),
        &OpenOptions {
            prediction: Some(Prediction::Epsilon),
        },
    )
    .unwrap();
    assert_eq!(eps.prediction, Prediction::Epsilon);
    assert_eq!(eps.scheduler_config.prediction_type, "epsilon");
    assert_eq!(
        eps.unet_config.sample_size, 64,
        "SD2 epsilon (2.x-base) is a 512 model"
    );
    assert_eq!("v".parse::<Prediction>().unwrap(), Prediction::VPrediction);
    assert_eq!(
        "v_prediction".parse::<Prediction>().unwrap(),
        Prediction::VPrediction
    );
    assert_eq!(
        "epsilon".parse::<Prediction>().unwrap(),
        Prediction::Epsilon
    );
    assert!("x0".parse::<Prediction>().is_err());
}

#[test]
fn var_builder_loads_converts_and_checks_shapes() {
    let ck = open(&single("tiny-sd1.safetensors"));
    let name = "down_blocks.0.attentions.0.proj_in.weight";
    let vb = ck
        .var_builder(Component::Unet, DType::F32, &Device::Cpu)
        .unwrap();
    let t = vb
        .pp("down_blocks.0.attentions.0.proj_in")
        .get((16, 16, 1, 1), "weight")
        .unwrap();
    assert_eq!(t.dtype(), DType::F32);
    let direct = ck.tensor(Component::Unet, name, DType::F32).unwrap();
    assert_eq!(
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        direct.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
    let bf16 = ck
        .var_builder(Component::Unet, DType::BF16, &Device::Cpu)
        .unwrap();
    assert_eq!(bf16.get((16, 16, 1, 1), name).unwrap().dtype(), DType::BF16);
    let wrong = vb.get((16, 16), name).unwrap_err().to_string();
    assert!(wrong.contains("expects"), "{wrong}");
    let missing = vb.get(3, "no_such.weight").unwrap_err().to_string();
    assert!(missing.contains("no tensor"), "{missing}");
    let text = ck
        .var_builder(Component::TextEncoder, DType::F32, &Device::Cpu)
        .unwrap();
    assert_eq!(
        text.get((49408, 32), "embeddings.token_embedding.weight")
            .unwrap()
            .dims(),
        &[49408, 32]
    );
    assert!(text.contains_tensor("final_layer_norm.weight"));
}

// ---------- errors ----------

/// Reads a safetensors file into (name -> (dtype, shape, bytes)), sorted.
fn read_st(path: &Path) -> BTreeMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| (k, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect()
}

/// Writes safetensors by hand (the crate's writer refuses the absurd shapes some tests need).
fn write_st(path: &Path, tensors: &BTreeMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)>) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, (dtype, shape, bytes)) in tensors {
        let start = data.len();
        data.extend_from_slice(bytes);
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": format!("{dtype:?}"), "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut json = serde_json::to_vec(&header).unwrap();
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out.extend_from_slice(&data);
    std::fs::write(path, out).unwrap();
}

#[test]
fn missing_path_and_non_diffusers_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let msg = open_err(&tmp.path().join("nope.safetensors"));
    assert!(msg.contains("no such file or folder"), "{msg}");
    let msg = open_err(tmp.path());
    assert!(
        msg.contains("not a diffusers folder") && msg.contains("model_index.json"),
        "{msg}"
    );
}

#[test]
fn truncated_safetensors() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(single("tiny-sd1.safetensors")).unwrap();
    // Header length beyond the file size.
    let p = tmp.path().join("header.safetensors");
    let mut short = 1_000_000u64.to_le_bytes().to_vec();
    short.extend_from_slice(b"{}");
    std::fs::write(&p, &short).unwrap();
    let msg = open_err(&p);
    assert!(
        msg.contains("header claims 1000000 bytes") && msg.contains("truncated"),
        "{msg}"
    );
    // Data offsets beyond the file: cut inside the tensor data.
    let p = tmp.path().join("half.safetensors");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let msg = open_err(&p);
    assert!(
        msg.contains("truncated") && msg.contains("do not end at the end of the file"),
        "{msg}"
    );
    // Too short to hold the length field.
    std::fs::write(&p, &bytes[..5]).unwrap();
    assert!(open_err(&p).contains("too short"));
}

#[test]
fn keys_of_no_known_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let mut t = BTreeMap::new();
    t.insert(
        "foo.weight".to_string(),
        (safetensors::Dtype::F32, vec![2], vec![0u8; 8]),
    );
    t.insert(
        "bar.bias".to_string(),
        (safetensors::Dtype::F32, vec![1], vec![0u8; 4]),
    );
    let p = tmp.path().join("other.safetensors");
    write_st(&p, &t);
    let msg = open_err(&p);
    assert!(
        msg.contains("not a Stable Diffusion 1.x/2.x checkpoint"),
        "{msg}"
    );
    assert!(
        msg.contains("`bar.bias`") && msg.contains("`foo.weight`"),
        "{msg}"
    );
    assert!(
        msg.contains("Pigment supports diffusers folders, LDM single files (.safetensors/.ckpt)"),
        "{msg}"
    );

    // A zip .ckpt whose pickle holds {"foo": 1}: no tensors at all.
    let p = tmp.path().join("other.ckpt");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&p).unwrap());
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", stored).unwrap();
    zip.write_all(b"\x80\x02}q\x00X\x03\x00\x00\x00fooq\x01K\x01s.")
        .unwrap();
    zip.finish().unwrap();
    let msg = open_err(&p);
    assert!(
        msg.contains("not a Stable Diffusion 1.x/2.x checkpoint: found no tensors"),
        "{msg}"
    );

    // An SDXL-like key gets a hint.
    let mut t = BTreeMap::new();
    t.insert(
        "conditioner.embedders.0.transformer.x".to_string(),
        (safetensors::Dtype::F16, vec![1], vec![0u8; 2]),
    );
    let p = tmp.path().join("xl.safetensors");
    write_st(&p, &t);
    assert!(open_err(&p).contains("SDXL"));
}

#[test]
fn a_shape_contradicting_the_derived_config() {
    let tmp = tempfile::tempdir().unwrap();
    let mut t = read_st(&single("tiny-sd1.safetensors"));
    // conv2 of the first resnet: [16, 16, 3, 3] -> [16, 16, 1, 1]; its siblings still say 3x3.
    let key = "model.diffusion_model.input_blocks.1.0.out_layers.3.weight";
    let entry = t.get_mut(key).unwrap();
    entry.1 = vec![16, 16, 1, 1];
    entry.2.truncate(16 * 16 * 2);
    let p = tmp.path().join("bad.safetensors");
    write_st(&p, &t);
    let msg = open_err(&p);
    assert!(
        msg.contains(key) && msg.contains("[16, 16, 1, 1]") && msg.contains("[16, 16, 3, 3]"),
        "{msg}"
    );

    // A tensor missing altogether.
    let mut t = read_st(&single("tiny-sd1.safetensors"));
    t.remove("first_stage_model.decoder.up.0.block.1.norm2.bias");
    write_st(&p, &t);
    let msg = open_err(&p);
    assert!(
        msg.contains("VAE is incomplete")
            && msg.contains("decoder.up_blocks.3.resnets.1.norm2.bias"),
        "{msg}"
    );
}

#[test]
fn absurd_shapes_and_layer_numbers_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("absurd.safetensors");
    let base = read_st(&single("tiny-sd1.safetensors"));
    let huge = 1usize << 60;
    let cases: Vec<(&str, Vec<usize>)> = vec![
        // Zero elements, so the file is valid safetensors, but the dims overflow any product.
        ("model.diffusion_model.input_blocks.1.0.in_layers.2.weight", vec![huge, 0, huge, huge]),
        ("model.diffusion_model.input_blocks.0.0.weight", vec![huge, huge, 0, 3]),
        ("cond_stage_model.transformer.text_model.encoder.layers.18446744073709551615.mlp.fc1.weight", vec![0]),
        ("model.diffusion_model.input_blocks.18446744073709551615.0.in_layers.0.weight", vec![0]),
        ("first_stage_model.decoder.up.18446744073709551615.block.0.conv1.bias", vec![0]),
    ];
    for (key, shape) in cases {
        let mut t = base.clone();
        t.insert(
            key.to_string(),
            (safetensors::Dtype::F16, shape, Vec::new()),
        );
        write_st(&p, &t);
        let opened = Checkpoint::open(&p, &OpenOptions::default());
        match opened {
            Err(e) => assert!(matches!(e, pigment::Error::Checkpoint { .. }), "{key}: {e}"),
            Ok(ck) => assert!(
                ck.unknown_keys.contains(&key.to_string()),
                "{key} opened silently"
            ),
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn a_folder_config_contradicting_its_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny-sd1");
    copy_dir(&folder("tiny-sd1"), &dir);
    let cfg = dir.join("unet/config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("\"layers_per_block\": 2", "\"layers_per_block\": 1"),
    )
    .unwrap();
    let msg = open_err(&dir);
    assert!(
        msg.contains("unet/config.json")
            && msg.contains("layers_per_block: config [1, 1, 1], weights [2, 2, 2]"),
        "{msg}"
    );

    // A single file opened with another model's configs.
    let err = Checkpoint::open_with_config(
        &single("tiny-sd1.safetensors"),
        &OpenOptions::default(),
        Some(&folder("tiny-sd2")),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("does not match the weights") && err.contains("layers_per_block"),
        "{err}"
    );

    // No weights in a component folder.
    std::fs::remove_file(dir.join("vae/diffusion_pytorch_model.safetensors")).unwrap();
    let msg = open_err(&dir);
    assert!(
        msg.contains("no VAE weights") && msg.contains("diffusion_pytorch_model.fp16.safetensors"),
        "{msg}"
    );
}

#[test]
fn unknown_keys_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let mut t = read_st(&single("tiny-sd1.safetensors"));
    let f16 = |n: usize| (safetensors::Dtype::F16, vec![n], vec![0u8; 2 * n]);
    t.insert("model.diffusion_model.extra_head.weight".into(), f16(4));
    t.insert("some_tool.metadata_tensor".into(), f16(1));
    t.insert(
        "model_ema.decay".into(),
        (safetensors::Dtype::F32, vec![], vec![0u8; 4]),
    );
    let p = tmp.path().join("extra.safetensors");
    write_st(&p, &t);
    let ck = open(&p);
    assert_eq!(
        ck.unknown_keys,
        vec![
            "model.diffusion_model.extra_head.weight",
            "some_tool.metadata_tensor"
        ]
    );
    assert!(ck.notes.iter().any(|n| n.contains("EMA")), "{:?}", ck.notes);
    assert_same_tensors(&open(&single("tiny-sd1.safetensors")), &ck);
}

// ---------- damaged files: errors, never panics ----------

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Opens a possibly damaged file; if it opens, reads every tensor. Neither may panic.
fn open_and_read(path: &Path) -> bool {
    match Checkpoint::open(path, &OpenOptions::default()) {
        Ok(ck) => {
            for c in Component::ALL {
                for name in ck.tensor_names(c) {
                    let _ = ck.tensor(c, &name, DType::F32);
                }
            }
            true
        }
        Err(_) => false,
    }
}

/// Mutates 1-4 bytes inside `region` of `original`, writes them over a copy, opens it; then
/// restores the bytes.
fn fuzz_region(
    original: &[u8],
    path: &Path,
    region: std::ops::Range<usize>,
    rng: &mut XorShift,
    rounds: usize,
) -> usize {
    std::fs::write(path, original).unwrap();
    assert!(
        open_and_read(path) != path.ends_with("fuzz.pt"),
        "the unmutated file"
    );
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let mut opened = 0;
    for _ in 0..rounds {
        let mut touched = Vec::new();
        for _ in 0..1 + rng.below(4) {
            let at = region.start + rng.below(region.len());
            let byte = match rng.below(3) {
                0 => rng.next() as u8,
                1 => original[at] ^ (1 << rng.below(8)),
                _ => *b"0129{}[]\",:.eE-".get(rng.below(15)).unwrap(),
            };
            file.seek(SeekFrom::Start(at as u64)).unwrap();
            file.write_all(&[byte]).unwrap();
            touched.push(at);
        }
        file.flush().unwrap();
        opened += open_and_read(path) as usize;
        for at in touched {
            file.seek(SeekFrom::Start(at as u64)).unwrap();
            file.write_all(&original[at..at + 1]).unwrap();
        }
    }
    opened
}

fn assert_truncations_fail(original: &[u8], path: &Path, cuts: &[usize]) {
    for &n in cuts {
        std::fs::write(path, &original[..n.min(original.len() - 1)]).unwrap();
        assert!(
            !open_and_read(path),
            "{} truncated to {n} bytes opened",
            path.display()
        );
    }
}

#[test]
fn damaged_safetensors_give_errors_not_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("fuzz.safetensors");
    let original = std::fs::read(single("tiny-sd2.safetensors")).unwrap();
    let header = u64::from_le_bytes(original[..8].try_into().unwrap()) as usize + 8;
    let mut cuts: Vec<usize> = (0..12).collect();
    cuts.extend([
        header - 1,
        header,
        header + 1,
        original.len() / 2,
        original.len() - 1,
    ]);
    assert_truncations_fail(&original, &p, &cuts);
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let opened = fuzz_region(&original, &p, 0..header, &mut rng, 300);
    // Most header mutations break the JSON, an offset, a shape or a name.
    assert!(opened < 150, "{opened} of 300 mutated headers opened");
}

#[test]
fn damaged_ckpt_give_errors_not_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("fuzz.ckpt");
    let original = std::fs::read(single("tiny-sd1.ckpt")).unwrap();
    let len = original.len();
    assert_truncations_fail(
        &original,
        &p,
        &[0, 1, 3, 4, 30, 1000, 100_000, len / 2, len - 100, len - 1],
    );
    let mut rng = XorShift(0x1234_5678_9abc_def1);
    // The pickle (first zip entry) and the zip central directory at the end.
    fuzz_region(&original, &p, 0..110_000, &mut rng, 250);
    fuzz_region(&original, &p, len - 80_000..len, &mut rng, 100);

    let p = tmp.path().join("fuzz.pt");
    let original = std::fs::read(single("legacy-small.pt")).unwrap();
    let cuts: Vec<usize> = (0..original.len()).step_by(7).collect();
    assert_truncations_fail(&original, &p, &cuts);
    fuzz_region(&original, &p, 0..original.len(), &mut rng, 300);
}
