//! The personal part of a two-part model (`src/personal.rs`): stored bit for bit with the
//! weights, never in a sync delta, kept across a rebase and an import of a global file,
//! trained so that it holds the user's taste, forgotten in one call, refused when corrupt.
#![cfg(not(target_arch = "wasm32"))]

use std::ops::ControlFlow;

use tacit_rm::backend::Device;
use tacit_rm::feedback::events::{Event, Shown};
use tacit_rm::feedback::log::LoggedObservation;
use tacit_rm::head::{Head, HeadConfig};
use tacit_rm::model::{ModelSpec, Parts, RewardModel, TrainJob, TrainOptions, TrainOutcome};
use tacit_rm::objective::ObjectiveKind;
use tacit_rm::personal::{Personal, Personalization, BLEND_CANDIDATES};
use tacit_rm::rng::Rng;
use tacit_rm::store::{self, Weights};
use tacit_rm::sync::protocol::{META_BASE_VERSION, META_N_EXAMPLES};
use tacit_rm::sync::Delta;

const DIM: usize = 8;

fn personal_weights() -> Weights {
    let head = Head::init(&HeadConfig::new(DIM, &[4]), 3).unwrap();
    let mut p = Personal::new(Personalization::Residual, &head.config).unwrap();
    let mut r = Rng::new(9);
    for t in p.head.tensors_mut() {
        t.iter_mut().for_each(|v| *v = r.normal() as f32 * 0.3);
    }
    p.blend = 0.5;
    p.blend_loss = vec![1.25, 0.75, 3.0e-7];
    p.examples = 123;
    p.share = 0.4375;
    Weights {
        personal: Some(p),
        objective: Some(ObjectiveKind::Pairwise),
        version: 7,
        ..Weights::new(head)
    }
}

#[test]
fn the_personal_part_round_trips_bit_for_bit() {
    let w = personal_weights();
    let bytes = store::to_bytes(&w).unwrap();
    let back = store::from_bytes(&bytes).unwrap();
    assert_eq!(back, w);
    let (a, b) = (back.personal.unwrap(), w.personal.unwrap());
    for (x, y) in a.head.tensors().iter().zip(b.head.tensors()) {
        assert!(x
            .iter()
            .zip(y.iter())
            .all(|(p, q)| p.to_bits() == q.to_bits()));
    }
    assert_eq!(a.blend_loss[2].to_bits(), 3.0e-7f64.to_bits());
    // The same weights give the same bytes.
    assert_eq!(
        store::to_bytes(&store::from_bytes(&bytes).unwrap()).unwrap(),
        bytes
    );
}

#[test]
fn blend_losses_of_every_magnitude_reload_with_the_same_bits() {
    // Held-out losses as training accumulates them: arbitrary doubles. A decimal parser that
    // is only within an ulp (serde_json's default) changes some of them on every reload.
    let mut w = personal_weights();
    let mut rng = tacit_rm::rng::Rng::new(17);
    for _ in 0..200 {
        let losses: Vec<f64> = (0..3)
            .map(|_| rng.uniform() * 10f64.powi((rng.uniform() * 12.0) as i32 - 6))
            .collect();
        w.personal.as_mut().unwrap().blend_loss = losses.clone();
        let back = store::from_bytes(&store::to_bytes(&w).unwrap()).unwrap();
        let got = back.personal.unwrap().blend_loss;
        for (g, l) in got.iter().zip(&losses) {
            assert_eq!(g.to_bits(), l.to_bits(), "{l:e} reloaded as {g:e}");
        }
    }
}

#[test]
fn corrupt_personal_metadata_is_refused() {
    let good = store::to_bytes(&personal_weights()).unwrap();
    let (_, meta) = store::parse(&good, store::Values::Finite).unwrap();
    assert_eq!(meta["personal"], "residual");
    for (key, value) in [
        ("personal", "telepathy"),
        ("personal_blend", "0.3"),
        ("personal_blend", "NaN"),
        ("personal_blend_loss", "[1, 2]"),
        ("personal_blend_loss", "[1, 2, -4]"),
        ("personal_blend_loss", "[NaN, 1, 2]"),
        ("personal_blend_loss", "1, 2, 3"),
        ("personal_blend_loss", "[1, 2, 3e999]"),
        ("personal_share", "1.5"),
        ("personal_examples", "-1"),
    ] {
        let text = String::from_utf8_lossy(&good).into_owned();
        let needle = format!("\"{key}\":\"{}\"", meta[key].replace('"', "\\\""));
        assert!(text.contains(&needle), "{needle}");
        let patched = text.replacen(&needle, &format!("\"{key}\":\"{value}\""), 1);
        // Keep the header length: safetensors offsets depend on it.
        let bytes = resize_header(patched.into_bytes(), &good);
        let err = store::from_bytes(&bytes).unwrap_err();
        assert_eq!(
            err.code().as_str(),
            "corrupt_weights",
            "{key} = {value}: {err}"
        );
    }
}

/// Re-pads a patched header to the original header length (spaces, as safetensors pads).
fn resize_header(mut patched: Vec<u8>, original: &[u8]) -> Vec<u8> {
    let len = u64::from_le_bytes(original[..8].try_into().unwrap()) as usize;
    let grown = patched.len() as isize - original.len() as isize;
    let header_end = 8 + len as isize + grown;
    let mut header: Vec<u8> = patched[8..header_end as usize].to_vec();
    while header.last() == Some(&b' ') && header.len() > len {
        header.pop();
    }
    if header.len() > len {
        // Longer than the original: move the data instead.
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend(&header);
        out.extend(&patched[header_end as usize..]);
        return out;
    }
    header.resize(len, b' ');
    let tail = patched.split_off(header_end as usize);
    let mut out = original[..8].to_vec();
    out.extend(header);
    out.extend(tail);
    out
}

#[test]
fn a_delta_never_carries_a_personal_part() {
    let w = personal_weights();
    let bytes = store::to_bytes_with_metadata(
        &w,
        &[
            (META_BASE_VERSION, "7".into()),
            (META_N_EXAMPLES, "10".into()),
        ],
    )
    .unwrap();
    let err = Delta::from_bytes(&bytes).unwrap_err();
    assert_eq!(err.code().as_str(), "corrupt_weights", "{err}");
    // And a delta's extra metadata may not smuggle personal keys either.
    let err =
        store::to_bytes_with_metadata(&w.shared(), &[("personal_blend", "1".into())]).unwrap_err();
    assert_eq!(err.code().as_str(), "invalid_config");
}

/// A turn of four answers: the user copies the one whose first embedding coordinate has the
/// sign of `taste`.
fn turns(taste: f32, n_turns: usize, seed: u64) -> Vec<LoggedObservation> {
    let mut r = Rng::new(seed);
    let mut out = Vec::new();
    for t in 0..n_turns {
        let emb: Vec<Vec<f32>> = (0..4)
            .map(|_| (0..DIM).map(|_| r.normal() as f32).collect())
            .collect();
        let best = (0..4)
            .max_by(|&a, &b| (taste * emb[a][0]).total_cmp(&(taste * emb[b][0])))
            .unwrap();
        for (p, e) in emb.into_iter().enumerate() {
            out.push(LoggedObservation {
                seq: 0,
                id: format!("{t}-{p}"),
                turn: Some(format!("t{t}")),
                embedding: e,
                shown: Shown {
                    position: p as u32,
                    candidates: 4,
                },
                events: if p == best { vec![Event::Copy] } else { vec![] },
                dwell_ms: 1000.0,
                length: 0.0,
                propensity: None,
            });
        }
    }
    out
}

fn model(personalization: Personalization) -> RewardModel {
    RewardModel::new(
        &ModelSpec {
            dim: DIM,
            hidden: vec![],
            objective: ObjectiveKind::Pairwise,
            personalization,
            ..ModelSpec::default()
        },
        Device::Cpu,
    )
    .unwrap()
}

/// Runs a prepared training call to its end, with no progress callback and no yielding.
fn run_to_end(job: TrainJob) -> TrainOutcome {
    pollster::block_on(job.run(
        &mut |_| ControlFlow::Continue(()),
        || std::future::ready(()),
    ))
    .unwrap()
}

fn train(m: &mut RewardModel, obs: &[LoggedObservation], opts: &TrainOptions) {
    for o in obs {
        m.observe(o.clone()).unwrap();
    }
    let job = m.prepare_training(opts).unwrap();
    let out = run_to_end(job);
    m.apply(&out);
}

fn agreement(m: &RewardModel, taste: f32) -> f64 {
    let mut r = Rng::new(4242);
    let x: Vec<f32> = (0..200 * DIM).map(|_| r.normal() as f32).collect();
    let view = ndarray::ArrayView2::from_shape((200, DIM), &x).unwrap();
    let s = pollster::block_on(m.score(view, false)).unwrap();
    let truth: Vec<f32> = (0..200).map(|i| taste * x[i * DIM]).collect();
    tacit_rm::eval::users::pairwise_accuracy(&s, &truth)
}

/// The user's taste lives in the personal part: after the shared head is replaced by a
/// global of the opposite taste (a sync), the user's scores still follow its own taste,
/// and the shared score alone does not.
#[test]
fn the_taste_survives_a_global_that_disagrees() {
    let opts = TrainOptions {
        epochs: 30,
        ..TrainOptions::default()
    };
    let mut user = model(Personalization::Residual);
    train(&mut user, &turns(1.0, 60, 1), &opts);
    let before = agreement(&user, 1.0);
    assert!(before > 0.8, "local training learned the taste: {before}");
    let mut crowd = model(Personalization::None);
    train(&mut crowd, &turns(-1.0, 60, 2), &opts);
    let personal_before = user.weights().personal.clone();
    user.replace_weights(crowd.weights().clone()).unwrap();
    assert_eq!(
        user.weights().personal,
        personal_before,
        "kept across the rebase"
    );
    let after = agreement(&user, 1.0);
    assert!(
        after > 0.7,
        "the personal part keeps the taste: {after} (before {before})"
    );
    let stats = user.stats().personal.unwrap();
    assert!(stats.share > 0.3 && stats.trained_examples > 0, "{stats:?}");
    let mut r = Rng::new(5);
    let x: Vec<f32> = (0..50 * DIM).map(|_| r.normal() as f32).collect();
    let view = ndarray::ArrayView2::from_shape((50, DIM), &x).unwrap();
    let shared = pollster::block_on(user.score(view, true)).unwrap();
    let want = Device::Cpu.score(&crowd.weights().head, view).unwrap();
    assert_eq!(shared, want, "sharedOnly is the shared head's score");
}

#[test]
fn forget_leaves_a_zero_personal_part_and_no_log() {
    let mut m = model(Personalization::Residual);
    train(&mut m, &turns(1.0, 20, 3), &TrainOptions::default());
    for o in turns(1.0, 2, 4) {
        m.observe(o).unwrap();
    }
    m.forget().unwrap();
    let p = m.weights().personal.as_ref().unwrap();
    assert!(p.head.tensors().iter().all(|t| t.iter().all(|&v| v == 0.0)));
    assert_eq!((p.examples, p.blend, m.pending().len()), (0, 1.0, 0));
    assert_eq!(m.stats().trained_examples, 0);
}

#[test]
fn bad_personal_options_are_typed_errors_and_change_nothing() {
    let mut m = model(Personalization::None);
    for o in turns(1.0, 5, 6) {
        m.observe(o).unwrap();
    }
    let before = m.export_weights().unwrap();
    let err = m
        .prepare_training(&TrainOptions {
            parts: Parts::Personal,
            ..TrainOptions::default()
        })
        .err()
        .unwrap();
    assert_eq!(err.code().as_str(), "invalid_config");
    for pull in [-1.0, f64::NAN, f64::INFINITY, 1.5] {
        let err = m
            .prepare_training(&TrainOptions {
                personal_pull: pull,
                ..TrainOptions::default()
            })
            .err()
            .unwrap();
        assert_eq!(err.code().as_str(), "invalid_config", "{pull}");
    }
    assert_eq!(m.export_weights().unwrap(), before);
    assert_eq!(
        Personalization::parse("nope").unwrap_err().code().as_str(),
        "invalid_config"
    );
    assert!(BLEND_CANDIDATES.contains(&1.0));
}

/// `basis`: the personal head reads the shared head's last hidden layer, and folding it into
/// the shared output layer gives the combined score (the identity the shared step relies on:
/// the output layer is linear), checked against a float64 computation of `h(x)` by hand.
#[test]
fn a_basis_part_reads_the_hidden_layer_and_folds_into_the_output_layer() {
    let shared = Head::init(&HeadConfig::new(DIM, &[5]), 11).unwrap();
    let mut p = Personal::new(Personalization::Basis, &shared.config).unwrap();
    assert_eq!(p.head.config.dim, 5);
    let mut r = Rng::new(12);
    for t in p.head.tensors_mut() {
        t.iter_mut().for_each(|v| *v = r.normal() as f32);
    }
    let x: Vec<f32> = (0..6 * DIM).map(|_| r.normal() as f32).collect();
    let view = ndarray::ArrayView2::from_shape((6, DIM), &x).unwrap();
    let residual = p.residual(&shared, view).unwrap();
    let folded = Device::Cpu.score(&p.fold(&shared), view).unwrap();
    let plain = Device::Cpu.score(&shared, view).unwrap();
    for i in 0..6 {
        let l0 = &shared.layers[0];
        let h: Vec<f64> = (0..5)
            .map(|j| {
                let a: f64 = (0..DIM)
                    .map(|k| l0.weight[[j, k]] as f64 * x[i * DIM + k] as f64)
                    .sum::<f64>()
                    + l0.bias[j] as f64;
                a.max(0.0)
            })
            .collect();
        let c = &p.head.layers[0];
        let want: f64 =
            (0..5).map(|j| c.weight[[0, j]] as f64 * h[j]).sum::<f64>() + c.bias[0] as f64;
        assert!(
            (residual[i] as f64 - want).abs() < 1e-4,
            "{} vs {want}",
            residual[i]
        );
        assert!(((plain[i] + residual[i]) - folded[i]).abs() < 1e-4);
    }
    let back = p.unfold(&p.fold(&shared));
    assert!(back
        .to_flat()
        .iter()
        .zip(shared.to_flat())
        .all(|(a, b)| (a - b).abs() < 1e-6));
    // A linear shared head has no hidden layer to read.
    let linear = HeadConfig::new(DIM, &[]);
    assert_eq!(
        Personal::new(Personalization::Basis, &linear)
            .unwrap_err()
            .code()
            .as_str(),
        "invalid_config"
    );
}

#[test]
fn an_import_keeps_the_users_part_unless_it_brings_one_of_its_own_kind() {
    let mut m = model(Personalization::Residual);
    train(&mut m, &turns(1.0, 30, 4), &TrainOptions::default());
    let mine = m.weights().personal.clone().unwrap();
    assert!(mine.head.to_flat().iter().any(|&v| v != 0.0), "trained");
    // A global from the server has no personal part: the user's stays, the shared head moves.
    let global = model(Personalization::None);
    let global_bytes = store::to_bytes(global.weights()).unwrap();
    m.import_weights(&global_bytes).unwrap();
    assert_eq!(m.weights().personal.as_ref(), Some(&mine));
    assert_eq!(m.weights().head, global.weights().head);
    // A part of another kind is refused, and so is any part for a model without one.
    let ditto = store::to_bytes(model(Personalization::Ditto).weights()).unwrap();
    let before = m.weights().clone();
    assert_eq!(
        m.import_weights(&ditto).unwrap_err().code().as_str(),
        "incompatible_weights"
    );
    assert_eq!(m.weights(), &before);
    let mut plain = model(Personalization::None);
    let with_part = store::to_bytes(&before).unwrap();
    assert_eq!(
        plain
            .import_weights(&with_part)
            .unwrap_err()
            .code()
            .as_str(),
        "incompatible_weights"
    );
    assert!(plain.weights().personal.is_none());
}

/// One progress scale for a call that trains both parts: the personal runs (one per
/// candidate blend, as held-out turns exist) report first, then the shared run, and the
/// fraction climbs to 1 over all of them.
#[test]
fn progress_runs_through_the_personal_phase_then_the_shared_one() {
    use tacit_rm::trainer::TrainedPart;
    let mut m = model(Personalization::Residual);
    for o in turns(1.0, 40, 11) {
        m.observe(o).unwrap();
    }
    let opts = TrainOptions {
        epochs: 4,
        patience: 100,
        ..TrainOptions::default()
    };
    let job = m.prepare_training(&opts).unwrap();
    let mut seen = Vec::new();
    let out = pollster::block_on(job.run(
        &mut |e| {
            seen.push((e.part, e.fraction));
            ControlFlow::Continue(())
        },
        || std::future::ready(()),
    ))
    .unwrap();
    let personal = seen
        .iter()
        .filter(|(p, _)| *p == TrainedPart::Personal)
        .count();
    assert_eq!(personal, 4 * BLEND_CANDIDATES.len(), "{seen:?}");
    assert_eq!(
        seen.len(),
        personal + 4,
        "then four shared epochs: {seen:?}"
    );
    assert!(
        seen[..personal]
            .iter()
            .all(|(p, _)| *p == TrainedPart::Personal),
        "personal first: {seen:?}"
    );
    assert!(
        seen.windows(2).all(|w| w[1].1 > w[0].1) && seen[0].1 > 0.0,
        "increasing: {seen:?}"
    );
    let last = seen.last().unwrap().1;
    assert!((last - 1.0).abs() < 1e-12, "ends at 1: {last}");
    let expected = personal as f64 / seen.len() as f64;
    assert!(
        (seen[personal - 1].1 - expected).abs() < 1e-12,
        "the personal phase's share of the bar is its share of the epochs: {seen:?}"
    );
    assert!(!out.report.cancelled);
    let reported: Vec<f64> = out.report.epochs.iter().map(|e| e.fraction).collect();
    let heard: Vec<f64> = seen[personal..].iter().map(|(_, f)| *f).collect();
    assert_eq!(
        reported, heard,
        "the report lists the shared epochs as progress heard them"
    );
}

/// A stop asked for while the personal part trains ends the call there: the personal part
/// keeps what it learned, the shared head is untouched, and the report says cancelled.
#[test]
fn a_stop_in_the_personal_phase_leaves_the_shared_head_as_it_was() {
    let mut m = model(Personalization::Residual);
    for o in turns(1.0, 40, 12) {
        m.observe(o).unwrap();
    }
    let shared_before = m.weights().head.clone();
    let personal_before = m.weights().personal.clone().unwrap();
    let opts = TrainOptions {
        epochs: 4,
        patience: 100,
        ..TrainOptions::default()
    };
    let job = m.prepare_training(&opts).unwrap();
    let mut calls = 0;
    let out = pollster::block_on(job.run(
        &mut |_| {
            calls += 1;
            if calls == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
        || std::future::ready(()),
    ))
    .unwrap();
    assert_eq!(calls, 2, "no epoch after the stop");
    assert!(out.report.cancelled);
    m.apply(&out);
    assert_eq!(m.weights().head, shared_before, "shared head untouched");
    let after = m.weights().personal.clone().unwrap();
    assert_ne!(after.head, personal_before.head, "the personal part moved");
}

fn replay_model(replay_turns: usize) -> RewardModel {
    RewardModel::new(
        &ModelSpec {
            dim: DIM,
            hidden: vec![],
            objective: ObjectiveKind::Pairwise,
            personalization: Personalization::default_for(&[]),
            replay_turns,
            ..ModelSpec::default()
        },
        Device::Cpu,
    )
    .unwrap()
}

fn turn_names(obs: &[LoggedObservation]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for o in obs {
        let t = o.turn.clone().unwrap();
        if names.last() != Some(&t) {
            names.push(t);
        }
    }
    names
}

/// The replay window: a call trains on the pending turns plus, where they leave room among
/// `replay_turns`, the newest turns trained on before; afterwards the window holds the last
/// `replay_turns` turns. What `stats()` and the sync count as trained is the new observations
/// only; the window is not in the weights (an export carries none).
#[test]
fn a_replay_window_keeps_the_last_turns_and_trains_on_them_again() {
    let mut m = replay_model(5);
    let all = turns(1.0, 10, 21);
    let opts = TrainOptions {
        validation_fraction: 0.0,
        ..TrainOptions::default()
    };
    // 3 turns: nothing to replay yet; the window then holds those 3.
    for o in &all[..12] {
        m.observe(o.clone()).unwrap();
    }
    let job = m.prepare_training(&opts).unwrap();
    assert_eq!((job.examples(), job.replayed()), (12, 0));
    let out = run_to_end(job);
    assert_eq!(turn_names(out.replay()), ["t0", "t1", "t2"]);
    m.apply(&out);
    assert_eq!((m.stats().replay, m.stats().pending), (12, 0));
    // 4 more: room for 1 replayed turn (the newest, t2); the window is then t2..t6.
    for o in &all[12..28] {
        m.observe(o.clone()).unwrap();
    }
    let job = m.prepare_training(&opts).unwrap();
    assert_eq!((job.examples(), job.replayed()), (16, 4));
    let out = run_to_end(job);
    m.apply(&out);
    assert_eq!(turn_names(m.replay()), ["t2", "t3", "t4", "t5", "t6"]);
    assert_eq!(
        m.stats().trained_examples,
        28,
        "replays are not counted as new"
    );
    // 3 pending turns (t7..t9) leave room for 2 replayed ones (t5, t6); a job not applied
    // leaves the window as it was.
    for o in &all[28..] {
        m.observe(o.clone()).unwrap();
    }
    let job = m.prepare_training(&opts).unwrap();
    assert_eq!((job.examples(), job.replayed()), (12, 8));
    drop(job);
    assert_eq!(turn_names(m.replay()), ["t2", "t3", "t4", "t5", "t6"]);
    // A window of 1 turn with 3 pending ones: the pending ones all train, none replayed.
    m.set_replay_turns(1).unwrap();
    let job = m.prepare_training(&opts).unwrap();
    assert_eq!((job.examples(), job.replayed()), (12, 0));
    drop(job);
    m.set_replay_turns(5).unwrap();
    assert_eq!(
        turn_names(m.replay()),
        ["t6"],
        "a smaller window dropped the rest"
    );
    // The window is the device's own: not in the exported weights.
    let exported = m.export_weights().unwrap();
    let mut other = replay_model(5);
    other.import_weights(&exported).unwrap();
    assert!(other.replay().is_empty());
    // Forget empties it.
    m.forget().unwrap();
    assert!(m.replay().is_empty() && m.pending().is_empty());
    assert_eq!(m.stats().replay, 0);
}

/// A call with a window trains on more than the pending turns: its weights differ from the
/// same call without one.
#[test]
fn replayed_turns_change_what_a_call_learns() {
    let all = turns(1.0, 12, 22);
    let run = |replay: usize| {
        let mut m = replay_model(replay);
        train(&mut m, &all[..24], &TrainOptions::default());
        train(&mut m, &all[24..], &TrainOptions::default());
        m.export_weights().unwrap()
    };
    let none = run(0);
    assert_ne!(
        run(12),
        none,
        "the second call trained on the first call's turns too"
    );
}

/// Bad window sizes and stored windows are typed errors, and change nothing.
#[test]
fn bad_replay_options_are_typed_errors_and_change_nothing() {
    let err = RewardModel::new(
        &ModelSpec {
            dim: DIM,
            replay_turns: tacit_rm::model::MAX_REPLAY_TURNS + 1,
            ..ModelSpec::default()
        },
        Device::Cpu,
    )
    .err()
    .unwrap();
    assert_eq!(err.code().as_str(), "invalid_config");
    let mut m = replay_model(4);
    train(&mut m, &turns(1.0, 6, 23), &TrainOptions::default());
    let window = m.replay().to_vec();
    assert_eq!(turn_names(&window).len(), 4);
    let err = m.set_replay_turns(usize::MAX).unwrap_err();
    assert_eq!(err.code().as_str(), "invalid_config");
    let mut wrong = window.clone();
    wrong[1].embedding.pop();
    let err = m.restore_replay(wrong).unwrap_err();
    assert_eq!(err.code().as_str(), "dim_mismatch");
    let mut nan = window.clone();
    nan[0].embedding[0] = f32::NAN;
    assert_eq!(
        m.restore_replay(nan).unwrap_err().code().as_str(),
        "non_finite_input"
    );
    assert_eq!(m.replay(), &window[..], "unchanged");
    // A stored window larger than the model's is trimmed to its newest turns, and the next
    // sequence number moves past it.
    let mut small = replay_model(2);
    small.restore_replay(window.clone()).unwrap();
    assert_eq!(turn_names(small.replay()), ["t4", "t5"]);
    let seq = small.observe(turns(1.0, 1, 24)[0].clone()).unwrap().seq;
    assert!(seq > window.last().unwrap().seq);
    // A spec stored before the window (or the personal part) existed reads as what it opened
    // with then: no window and a residual part, not the defaults of a new model (40, basis).
    let spec: ModelSpec = serde_json::from_str(r#"{"dim": 8}"#).unwrap();
    assert_eq!(spec.replay_turns, 0);
    assert_eq!(spec.personalization, Personalization::Residual);
    assert_eq!(ModelSpec::default().replay_turns, 40);
    assert_eq!(ModelSpec::default().personalization, Personalization::Basis);
    assert_eq!(
        Personalization::default_for(&[]),
        Personalization::Residual,
        "a linear head has no basis to read"
    );
    assert_eq!(Personalization::default_for(&[16]), Personalization::Basis);
}

/// The users protocol's replay window (`UsersConfig::replay_turns`, `--replay-turns`) is the
/// model's own option on every per-user model: on a tiny run a window of 8 turns changes what
/// the local models learn from the same feedback, and bad sizes are typed errors.
#[test]
fn the_users_protocol_replays_through_the_models_window() {
    use tacit_rm::eval::users::{self, System, UsersConfig, UsersData};
    let data = UsersData::load(
        &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/users_dev.safetensors"),
    )
    .unwrap();
    let cfg = |replay_turns: usize| UsersConfig {
        seeds: 1,
        users: Some(2),
        new_users: 1,
        turns: 16,
        rounds: 2,
        new_user_turns: vec![0],
        systems: vec![System::Local, System::Personal],
        replay_turns,
        ..UsersConfig::default()
    };
    let acc = |c: &UsersConfig| {
        let r = users::run_on(&Device::Cpu, &data, c, &mut |_| {}).unwrap();
        r.system(System::Local).unwrap().per_seed.clone()
    };
    assert_ne!(
        acc(&cfg(0)),
        acc(&cfg(16)),
        "the second round trains on the first too"
    );
    for bad in [
        UsersConfig {
            basis_width: 0,
            ..cfg(0)
        },
        cfg(tacit_rm::model::MAX_REPLAY_TURNS + 1),
    ] {
        let err = users::run_on(&Device::Cpu, &data, &bad, &mut |_| {}).unwrap_err();
        assert_eq!(err.code().as_str(), "invalid_config");
    }
}
