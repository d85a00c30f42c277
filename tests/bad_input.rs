//! Bad input to every public entry point returns a clear, typed error (never a panic).
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::ops::ControlFlow;

use ndarray::Array2;
use tacit_rm::backend::cpu;
use tacit_rm::backend::cpu::score;
use tacit_rm::data::Dataset;
use tacit_rm::eval::{self, EvalConfig, Method};
use tacit_rm::featurize::featurize;
use tacit_rm::feedback::flip::{estimate_flip_rates, FlipRates};
use tacit_rm::feedback::propensity::PropensityModel;
use tacit_rm::feedback::{Examples, Pair};
use tacit_rm::head::{Activation, Head, HeadConfig};
use tacit_rm::objective::{ObjectiveConfig, ObjectiveKind, Prepared};
use tacit_rm::sim::{Protocol, SimConfig, Simulator};
use tacit_rm::trainer::{train, TrainConfig, TrainRequest};
use tacit_rm::Error;

fn code<T: std::fmt::Debug>(r: Result<T, Error>) -> &'static str {
    r.expect_err("should be rejected").code().as_str()
}

fn small() -> Examples {
    let mut ex = Examples::implicit_only(
        common::random_matrix(8, 4, 1),
        vec![1., 0., 1., 0., 0., 1., 0., 0.],
    );
    ex.feedback = vec![1.0; 8];
    ex
}

fn quiet() -> impl FnMut(&tacit_rm::trainer::EpochReport) -> ControlFlow<()> {
    |_| ControlFlow::Continue(())
}

#[test]
fn unknown_names() {
    assert_eq!(code(ObjectiveKind::parse("ipss")), "unknown_name");
    assert_eq!(code(Method::parse("best")), "unknown_name");
    assert_eq!(code(Method::parse_list("naive,bogus")), "unknown_name");
    assert_eq!(code(Protocol::parse("random")), "unknown_name");
    assert_eq!(code(Activation::parse("gelu")), "unknown_name");
    let e = ObjectiveKind::parse("ipss").unwrap_err().to_string();
    assert!(
        e.contains("ipss") && e.contains("noise-ips"),
        "the message lists the valid names: {e}"
    );
}

#[test]
fn scoring_rejects_wrong_dims_and_non_finite_values() {
    let head = Head::init(&HeadConfig::new(4, &[3]), 1).unwrap();
    assert_eq!(
        code(score(&head, Array2::zeros((2, 5)).view())),
        "dim_mismatch"
    );
    let mut x = Array2::<f32>::zeros((2, 4));
    x[[1, 3]] = f32::INFINITY;
    assert_eq!(code(score(&head, x.view())), "non_finite_input");
    assert!(
        score(&head, Array2::zeros((0, 4)).view())
            .unwrap()
            .is_empty(),
        "scoring nothing gives nothing"
    );
    assert_eq!(
        code(cpu::forward(&head, Array2::zeros((1, 3)).view())),
        "dim_mismatch"
    );
}

#[test]
fn training_rejects_bad_batches_and_configs() {
    let head = Head::init(&HeadConfig::new(4, &[]), 1).unwrap();
    let obj = ObjectiveConfig::new(ObjectiveKind::Ips);
    let cfg = TrainConfig {
        epochs: 2,
        ..Default::default()
    };
    let ok = small();
    assert!(train(&TrainRequest::new(&head, &obj, &ok, &cfg), &mut quiet()).is_ok());

    let empty = Examples::implicit_only(Array2::zeros((0, 4)), vec![]);
    assert_eq!(
        code(train(
            &TrainRequest::new(&head, &obj, &empty, &cfg),
            &mut quiet()
        )),
        "empty_input"
    );
    let wide = Examples::implicit_only(Array2::zeros((3, 5)), vec![0.0; 3]);
    assert_eq!(
        code(train(
            &TrainRequest::new(&head, &obj, &wide, &cfg),
            &mut quiet()
        )),
        "dim_mismatch"
    );
    let mut nan = small();
    nan.emb[[2, 1]] = f32::NAN;
    assert_eq!(
        code(train(
            &TrainRequest::new(&head, &obj, &nan, &cfg),
            &mut quiet()
        )),
        "non_finite_input"
    );
    let mut short = small();
    short.observed.pop();
    assert_eq!(
        code(train(
            &TrainRequest::new(&head, &obj, &short, &cfg),
            &mut quiet()
        )),
        "dim_mismatch"
    );
    let mut not_binary = small();
    not_binary.observed[0] = 0.5;
    assert_eq!(
        code(train(
            &TrainRequest::new(&head, &obj, &not_binary, &cfg),
            &mut quiet()
        )),
        "invalid_data"
    );
    let mut bad_pi = small();
    bad_pi.propensity[0] = 0.0;
    assert_eq!(
        code(train(
            &TrainRequest::new(&head, &obj, &bad_pi, &cfg),
            &mut quiet()
        )),
        "invalid_data"
    );
    let mut bad_pair = small();
    bad_pair.pairs = vec![Pair::new(0, 99)];
    assert_eq!(
        code(train(
            &TrainRequest::new(&head, &obj, &bad_pair, &cfg),
            &mut quiet()
        )),
        "invalid_data"
    );

    // Pairwise with no pairs, beta with a one-output head, nonsense hyper-parameters.
    assert_eq!(
        code(train(
            &TrainRequest::new(
                &head,
                &ObjectiveConfig::new(ObjectiveKind::Pairwise),
                &ok,
                &cfg
            ),
            &mut quiet()
        )),
        "empty_input"
    );
    assert_eq!(
        code(train(
            &TrainRequest::new(&head, &ObjectiveConfig::new(ObjectiveKind::Beta), &ok, &cfg),
            &mut quiet()
        )),
        "dim_mismatch"
    );
    assert_eq!(
        code(train(
            &TrainRequest::new(
                &head,
                &obj,
                &ok,
                &TrainConfig {
                    epochs: 0,
                    ..cfg.clone()
                }
            ),
            &mut quiet()
        )),
        "invalid_config"
    );
    assert_eq!(
        code(train(
            &TrainRequest::new(
                &head,
                &obj,
                &ok,
                &TrainConfig {
                    batch_size: 0,
                    ..cfg.clone()
                }
            ),
            &mut quiet()
        )),
        "invalid_config"
    );
    let mut lr = cfg.clone();
    lr.optimizer.lr = f64::NAN;
    assert_eq!(
        code(train(
            &TrainRequest::new(&head, &obj, &ok, &lr),
            &mut quiet()
        )),
        "invalid_config"
    );
    assert_eq!(
        code(train(
            &TrainRequest::new(
                &head,
                &ObjectiveConfig {
                    propensity_clip: 0.0,
                    ..obj.clone()
                },
                &ok,
                &cfg
            ),
            &mut quiet()
        )),
        "invalid_config"
    );
    let noisy = ObjectiveConfig {
        flip: Some(FlipRates {
            rho10: 0.7,
            rho01: 0.0,
        }),
        ..ObjectiveConfig::new(ObjectiveKind::Noise)
    };
    assert_eq!(
        code(train(
            &TrainRequest::new(&head, &noisy, &ok, &cfg),
            &mut quiet()
        )),
        "invalid_config"
    );
    // Validation set of another width.
    let val = Examples::implicit_only(Array2::zeros((3, 5)), vec![0.0; 3]);
    assert_eq!(
        code(train(
            &TrainRequest::new(&head, &obj, &ok, &cfg).with_val(&val),
            &mut quiet()
        )),
        "dim_mismatch"
    );
}

#[test]
fn objective_batches_reject_bad_outputs() {
    let ex = small();
    let p = Prepared::new(
        &ObjectiveConfig::new(ObjectiveKind::Ips),
        &ex,
        FlipRates::NONE,
        None,
    )
    .unwrap();
    assert_eq!(
        code(p.batch_loss(&[], &[], Array2::zeros((0, 1)).view(), None)),
        "empty_input"
    );
    assert_eq!(
        code(p.batch_loss(&[0, 1], &[], Array2::zeros((3, 1)).view(), None)),
        "dim_mismatch"
    );
    assert_eq!(
        code(p.batch_loss(&[0], &[], Array2::from_elem((1, 1), f32::NAN).view(), None)),
        "non_finite_input"
    );
    assert_eq!(
        code(Prepared::new(
            &ObjectiveConfig::new(ObjectiveKind::Dr),
            &ex,
            FlipRates::NONE,
            None
        )),
        "invalid_config"
    );
    assert_eq!(
        code(Prepared::new(
            &ObjectiveConfig::new(ObjectiveKind::Dr),
            &ex,
            FlipRates::NONE,
            Some(&[0.5; 3])
        )),
        "dim_mismatch"
    );
}

#[test]
fn other_entry_points() {
    assert_eq!(code(featurize("hello", 0)), "invalid_config");
    assert_eq!(code(estimate_flip_rates(&[], 0.03, 0.97)), "empty_input");
    assert_eq!(
        code(estimate_flip_rates(&[0.2, f32::NAN], 0.03, 0.97)),
        "non_finite_input"
    );
    assert_eq!(
        code(estimate_flip_rates(&[0.2], 0.6, 0.97)),
        "invalid_config"
    );
    assert_eq!(
        code(PropensityModel::fit(
            Array2::zeros((2, 1)).view(),
            &[1.0],
            1.0
        )),
        "dim_mismatch"
    );
    assert_eq!(
        code(Head::init(
            &HeadConfig {
                outputs: 0,
                ..HeadConfig::new(4, &[])
            },
            1
        )),
        "invalid_config"
    );
    assert_eq!(
        code(Dataset::from_bytes(b"not safetensors")),
        "invalid_data"
    );
    assert_eq!(
        code(Dataset::load(std::path::Path::new(
            "/nonexistent/tacit.safetensors"
        ))),
        "io"
    );
    let emb = common::random_matrix(4, 3, 1);
    assert_eq!(
        code(Simulator::new(
            SimConfig::default(),
            emb.view(),
            &[1.0; 4],
            1
        )),
        "invalid_data"
    );
    assert_eq!(
        code(Simulator::new(
            SimConfig {
                obs_rate: 0.0,
                ..SimConfig::default()
            },
            emb.view(),
            &[1., 0., 1., 0.],
            1
        )),
        "invalid_config"
    );
    let sim = Simulator::new(SimConfig::default(), emb.view(), &[1., 0., 1., 0.], 1).unwrap();
    let groups = vec![vec![0, 1], vec![2, 3]];
    let mut rng = tacit_rm::rng::Rng::new(1);
    assert_eq!(
        code(sim.simulate(emb.view(), &[1., 0., 2., 0.], &groups, &mut rng)),
        "invalid_data"
    );
    assert_eq!(
        code(sim.simulate(
            emb.view(),
            &[1., 0., 1., 0.],
            &[vec![0, 1], vec![1, 2, 3]],
            &mut rng
        )),
        "invalid_data"
    );
    let ds = Dataset::load(&common::fixture()).unwrap();
    let cfg = EvalConfig {
        seeds: 0,
        ..EvalConfig::default()
    };
    assert_eq!(
        code(eval::run(&ds, &cfg, &mut |_, _, _| {})),
        "invalid_config"
    );
    let cfg = EvalConfig {
        methods: vec![],
        ..EvalConfig::default()
    };
    assert_eq!(code(eval::run(&ds, &cfg, &mut |_, _, _| {})), "empty_input");
}

/// Training a model with an objective whose head has another number of outputs (`beta`'s
/// two on a one-output model) is a configuration mistake, said as one: which objective the
/// model was made for and which ones it can train with; nothing changes.
#[test]
fn an_objective_for_another_head_shape_names_the_fix() {
    use tacit_rm::model::{ModelSpec, RewardModel, TrainOptions};
    let m = RewardModel::new(
        &ModelSpec {
            dim: 4,
            objective: ObjectiveKind::Pairwise,
            ..ModelSpec::default()
        },
        tacit_rm::backend::Device::Cpu,
    )
    .unwrap();
    let before = m.weights().clone();
    let err = m
        .prepare_training(&TrainOptions {
            objective: Some(ObjectiveKind::Beta),
            ..TrainOptions::default()
        })
        .err()
        .expect("refused");
    assert_eq!(err.code().as_str(), "invalid_config", "{err}");
    let text = err.to_string();
    for needle in ["beta", "2 outputs", "pairwise", "implicit"] {
        assert!(text.contains(needle), "{needle:?} missing from: {text}");
    }
    assert_eq!(m.weights(), &before);
}
