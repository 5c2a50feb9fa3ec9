//! Names, option checks and schedule shapes. Numerical agreement with diffusers is checked by
//! tests/sampler_parity.rs.

use super::*;

fn sd() -> SchedulerConfig {
    SchedulerConfig::default()
}

fn opts(steps: usize) -> SamplerOptions {
    SamplerOptions::with_steps(steps)
}

fn invalid_message<T>(result: Result<T>) -> String {
    match result {
        Err(Error::InvalidArgument(m)) => m,
        Err(e) => panic!("expected InvalidArgument, got {e}"),
        Ok(_) => panic!("expected an error"),
    }
}

#[test]
fn cli_names_round_trip() {
    for &kind in SamplerKind::all() {
        assert_eq!(kind.cli_name().parse::<SamplerKind>().unwrap(), kind);
        assert_eq!(kind.a1111_name().parse::<SamplerKind>().unwrap(), kind);
        assert_eq!(kind.to_string(), kind.cli_name());
    }
    assert_eq!(SamplerKind::all().len(), 8);
}

#[test]
fn aliases_and_case() {
    for name in [
        "euler-ancestral",
        "euler_ancestral",
        "EULER_A",
        "Euler a",
        " euler a ",
    ] {
        assert_eq!(
            name.parse::<SamplerKind>().unwrap(),
            SamplerKind::EulerAncestral,
            "{name}"
        );
    }
    assert_eq!(
        "dpm++ 2m sde".parse::<SamplerKind>().unwrap(),
        SamplerKind::DpmPp2MSde
    );
    assert_eq!(
        "DPM++ 2M".parse::<SamplerKind>().unwrap(),
        SamplerKind::DpmPp2M
    );
    assert_eq!("Lcm".parse::<SamplerKind>().unwrap(), SamplerKind::Lcm);
}

#[test]
fn unknown_name_lists_valid_ones() {
    let message = invalid_message("plms".parse::<SamplerKind>());
    assert!(message.contains("'plms'"));
    for &kind in SamplerKind::all() {
        assert!(message.contains(kind.cli_name()), "{message}");
    }
}

#[test]
fn karras_suffix() {
    assert_eq!(
        SamplerKind::parse_with_schedule("DPM++ 2M Karras").unwrap(),
        (SamplerKind::DpmPp2M, true)
    );
    assert_eq!(
        SamplerKind::parse_with_schedule("Euler a").unwrap(),
        (SamplerKind::EulerAncestral, false)
    );
    assert!(SamplerKind::parse_with_schedule("Euler a Karras").is_err());
    // Plain parsing does not silently drop the schedule.
    let message = invalid_message("DPM++ 2M Karras".parse::<SamplerKind>());
    assert!(
        message.contains("dpmpp_2m") && message.contains("Karras"),
        "{message}"
    );
}

#[test]
fn karras_support() {
    let with: Vec<_> = SamplerKind::all()
        .iter()
        .filter(|k| k.supports_karras())
        .map(|k| k.cli_name())
        .collect();
    assert_eq!(with, ["euler", "heun", "dpmpp_2m", "dpmpp_2m_sde"]);
}

#[test]
fn option_errors() {
    for &kind in SamplerKind::all() {
        let m = invalid_message(build_sampler(kind, &sd(), &opts(0)));
        assert!(m.contains("steps is 0"), "{m}");
        let m = invalid_message(build_sampler(kind, &sd(), &opts(1001)));
        assert!(m.contains("1000 training timesteps"), "{m}");
        let o = SamplerOptions {
            timestep_spacing: Some("evenly".into()),
            ..opts(10)
        };
        let m = invalid_message(build_sampler(kind, &sd(), &o));
        assert!(m.contains("evenly") && m.contains("trailing"), "{m}");
        let o = SamplerOptions {
            karras: true,
            ..opts(10)
        };
        let built = build_sampler(kind, &sd(), &o);
        if kind.supports_karras() {
            assert!(built.is_ok(), "{kind}");
        } else {
            let m = invalid_message(built);
            assert!(
                m.contains("no Karras schedule") && m.contains(kind.cli_name()),
                "{m}"
            );
        }
    }
    let o = SamplerOptions {
        eta: -1.0,
        ..opts(10)
    };
    assert!(invalid_message(build_sampler(SamplerKind::Ddim, &sd(), &o)).contains("eta"));
    let m = invalid_message(build_sampler(SamplerKind::Lcm, &sd(), &opts(51)));
    assert!(m.contains("at most 50"), "{m}");
    let m = invalid_message(build_sampler(SamplerKind::Ddim, &sd(), &opts(1000)));
    assert!(m.contains("timestep 1000"), "{m}");
}

#[test]
fn bad_config_values_are_config_errors() {
    let cfg = SchedulerConfig {
        timestep_spacing: Some("sideways".into()),
        ..sd()
    };
    assert!(matches!(
        build_sampler(SamplerKind::Euler, &cfg, &opts(10)),
        Err(Error::Config(_))
    ));
    let cfg = SchedulerConfig {
        prediction_type: "noise".into(),
        ..sd()
    };
    assert!(matches!(
        build_sampler(SamplerKind::Euler, &cfg, &opts(10)),
        Err(Error::Config(_))
    ));
    let o = SamplerOptions {
        prediction_type: Some("sample".into()),
        ..opts(10)
    };
    assert!(
        invalid_message(build_sampler(SamplerKind::EulerAncestral, &sd(), &o)).contains("sample")
    );
}

#[test]
fn schedule_lengths() {
    for &kind in SamplerKind::all() {
        let sampler = build_sampler(kind, &sd(), &opts(7)).unwrap();
        let expected = if kind == SamplerKind::Heun { 13 } else { 7 };
        assert_eq!(sampler.timesteps().len(), expected, "{kind}");
        // Descending (Heun repeats entries).
        assert!(
            sampler.timesteps().windows(2).all(|w| w[0] >= w[1]),
            "{kind}"
        );
    }
}

#[test]
fn out_of_range_index_is_an_error() {
    let sampler = build_sampler(SamplerKind::Euler, &sd(), &opts(4)).unwrap();
    let x = Tensor::zeros(
        (1, 4, 2, 2),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert!(invalid_message(sampler.scale_model_input(&x, 4)).contains("out of range"));
}

#[test]
fn heun_correction_needs_its_euler_step() {
    let mut sampler = build_sampler(SamplerKind::Heun, &sd(), &opts(4)).unwrap();
    let x = Tensor::zeros(
        (1, 4, 2, 2),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let mut rng = TorchGenerator::new(0);
    assert!(invalid_message(sampler.step(&x, 1, &x, &mut rng)).contains("take that step first"));
    sampler.step(&x, 0, &x, &mut rng).unwrap();
    sampler.step(&x, 1, &x, &mut rng).unwrap();
}
