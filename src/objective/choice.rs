//! The objective for the signals an app actually sends, when it did not name one
//! (`RewardModel.open({objective: "auto"})`, the package's default). The rule follows the
//! README's measured tables (three simulated-user protocols on the dev fixture):
//!
//! - answers shown together and the user picks one (a turn id shared by several answers,
//!   one of them copied, clicked or liked): `pairwise`, the best or level with the best on
//!   every protocol (+0.050 to +0.165 AUROC over `naive`);
//! - reactions with a sign (a thumbs-down or a regenerate besides the positives):
//!   `noise-ips`, which uses the sign and the exposure (+0.044 to +0.121);
//! - positives only: `implicit`, which models exposure-driven silence (+0.055 where silence
//!   follows exposure; no worse than `naive` where it does not).
//!
//! The choice is made per training call from the pending observations, so an app that
//! starts showing several answers per turn moves to `pairwise` without a setting.

use crate::feedback::events::Observation;
use crate::objective::ObjectiveKind;

/// Share of the observations that must belong to a choice turn (several answers of one turn,
/// one of them reacted to positively) for the pairwise objective: below it most rows would
/// be single answers, which pairs do not use.
pub const CHOICE_SHARE: f64 = 0.5;

/// The objective for `log` (see the module documentation). An empty log gives `implicit`
/// (training then refuses the empty batch anyway).
pub fn for_signals(log: &[Observation]) -> ObjectiveKind {
    use std::collections::HashMap;
    let mut turns: HashMap<&str, (usize, bool)> = HashMap::new();
    let mut signed = false;
    for o in log {
        let positive = o.events.last().is_some_and(|e| e.is_positive());
        signed |= o.events.iter().any(|e| !e.is_positive());
        if let Some(t) = &o.turn {
            let entry = turns.entry(t.as_str()).or_default();
            entry.0 += 1;
            entry.1 |= positive;
        }
    }
    let in_choice_turns: usize = turns
        .values()
        .filter(|(n, liked)| *n >= 2 && *liked)
        .map(|(n, _)| n)
        .sum();
    if !log.is_empty() && in_choice_turns as f64 >= CHOICE_SHARE * log.len() as f64 {
        ObjectiveKind::Pairwise
    } else if signed {
        ObjectiveKind::NoiseIps
    } else {
        ObjectiveKind::Implicit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feedback::events::{Event, Shown};

    fn obs(turn: Option<&str>, events: &[Event]) -> Observation {
        Observation {
            seq: 0,
            id: "a".into(),
            turn: turn.map(str::to_string),
            embedding: vec![0.0],
            shown: Shown {
                position: 0,
                candidates: 2,
            },
            events: events.to_vec(),
            dwell_ms: 0.0,
            length: 0.0,
            propensity: None,
        }
    }

    #[test]
    fn each_kind_of_signal_gets_its_measured_best() {
        use Event::*;
        let choices = [
            obs(Some("t1"), &[Copy]),
            obs(Some("t1"), &[]),
            obs(Some("t2"), &[]),
            obs(Some("t2"), &[ThumbsUp]),
        ];
        assert_eq!(for_signals(&choices), ObjectiveKind::Pairwise);
        let signed = [obs(None, &[Copy]), obs(None, &[ThumbsDown]), obs(None, &[])];
        assert_eq!(for_signals(&signed), ObjectiveKind::NoiseIps);
        let positives = [obs(None, &[Copy]), obs(None, &[]), obs(None, &[Click])];
        assert_eq!(for_signals(&positives), ObjectiveKind::Implicit);
        assert_eq!(for_signals(&[]), ObjectiveKind::Implicit);
    }

    #[test]
    fn a_few_choice_turns_among_many_single_answers_are_not_enough() {
        // 2 of 6 observations in a choice turn (a third): below the half.
        let mut log = vec![obs(Some("t"), &[Event::Copy]), obs(Some("t"), &[])];
        log.extend((0..4).map(|_| obs(None, &[])));
        assert_eq!(for_signals(&log), ObjectiveKind::Implicit);
        // Turns whose answers got no positive reaction are no choice either.
        let silent = [obs(Some("t"), &[]), obs(Some("t"), &[Event::Regenerate])];
        assert_eq!(for_signals(&silent), ObjectiveKind::NoiseIps);
    }
}

#[cfg(test)]
mod model_tests {
    use super::*;
    use crate::backend::Device;
    use crate::feedback::events::{Event, Shown};
    use crate::model::{ModelSpec, RewardModel, TrainOptions};

    /// A model made with `auto_objective` trains what its pending signals call for; an
    /// objective named in the call, or a model made without `auto`, is not second-guessed.
    #[test]
    fn a_model_under_auto_chooses_per_call() {
        let spec = ModelSpec {
            dim: 2,
            hidden: vec![],
            auto_objective: true,
            personalization: crate::personal::Personalization::default_for(&[]),
            ..ModelSpec::default()
        };
        let mut m = RewardModel::new(&spec, Device::Cpu).unwrap();
        let default = TrainOptions::default();
        assert_eq!(m.objective_for(&default), ObjectiveKind::Implicit, "empty");
        for (i, copied) in [(0, true), (1, false), (2, false), (3, true)] {
            m.observe(Observation {
                seq: 0,
                id: format!("a{i}"),
                turn: Some(format!("t{}", i / 2)),
                embedding: vec![i as f32, 1.0],
                shown: Shown {
                    position: i % 2,
                    candidates: 2,
                },
                events: if copied { vec![Event::Copy] } else { vec![] },
                dwell_ms: 0.0,
                length: 0.0,
                propensity: None,
            })
            .unwrap();
        }
        assert_eq!(m.objective_for(&default), ObjectiveKind::Pairwise);
        let job = m.prepare_training(&default).unwrap();
        let out = pollster::block_on(job.run(&mut |_| std::ops::ControlFlow::Continue(()), || {
            std::future::ready(())
        }))
        .unwrap();
        assert_eq!(out.objective(), ObjectiveKind::Pairwise);
        let named = TrainOptions {
            objective: Some(ObjectiveKind::Naive),
            ..TrainOptions::default()
        };
        assert_eq!(m.objective_for(&named), ObjectiveKind::Naive);
        m.set_auto_objective(false);
        assert_eq!(m.objective_for(&default), ObjectiveKind::Implicit);
    }
}
