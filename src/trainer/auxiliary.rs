//! The auxiliary heads some objectives fit before the main run, with the same loop on the
//! same device as the main run: a noisy-label head whose anchor quantiles estimate the flip
//! rates, and the imputation head of `dr`.

use std::ops::ControlFlow;

use crate::backend::Device;
use crate::error::{Error, Result};
use crate::feedback::flip::{estimate_flip_rates, FlipRates};
use crate::feedback::Examples;
use crate::head::{Head, HeadConfig};
use crate::math::sigmoid;
use crate::objective::{ObjectiveConfig, ObjectiveKind};
use crate::rng::Rng;

use super::{train_async, TrainConfig, TrainRequest};

/// `σ(z)` of the head's first output for every row, scored on `device`.
async fn probabilities(device: &Device, head: &Head, ex: &Examples) -> Result<Vec<f32>> {
    Ok(device
        .score_async(head, ex.emb.view())
        .await?
        .into_iter()
        .map(|z| sigmoid(z as f64) as f32)
        .collect())
}

/// Out-of-fold predictions `σ(z)` of a one-output auxiliary head (the noisy-label head of
/// the flip-rate anchors, the `dr` imputation head), by 2-fold cross-fitting: each half is
/// scored by a head fitted on the other half, early-stopped on the half it scores. In-sample
/// predictions would let a flexible head memorise the labels it is meant to smooth (anchors
/// at exactly 0 and 1, so flip rates estimated as 0). Also returns the mean of both heads'
/// predictions on each of `others`.
pub(super) async fn cross_fit(
    device: &Device,
    like: &TrainRequest<'_>,
    kind: ObjectiveKind,
    flip: FlipRates,
    others: &[&Examples],
) -> Result<(Vec<f32>, Vec<Vec<f32>>)> {
    let (train_set, config) = (like.train, like.config);
    let n = train_set.len();
    if n < 2 {
        return Err(Error::InvalidData(
            "cross-fitting an auxiliary head needs at least 2 examples".into(),
        ));
    }
    let mut order: Vec<usize> = (0..n).collect();
    Rng::new(config.seed ^ 0xC5).shuffle(&mut order);
    let folds = [&order[..n / 2], &order[n / 2..]];
    let aux_cfg = HeadConfig {
        outputs: 1,
        ..like.head.config.clone()
    };
    let objective = ObjectiveConfig {
        kind,
        flip: Some(flip),
        ..like.objective.clone()
    };
    let mut out_of_fold = vec![0.0f32; n];
    let mut on_others: Vec<Vec<f32>> = others.iter().map(|o| vec![0.0; o.len()]).collect();
    for (k, fold) in folds.iter().enumerate() {
        let held_out = folds[1 - k];
        let (fit_set, check_set) = (train_set.select(fold), train_set.select(held_out));
        let init = Head::init(&aux_cfg, config.seed ^ (0xA0 + k as u64))?;
        let cfg = TrainConfig {
            seed: config.seed ^ (0xA1 + k as u64),
            ..config.clone()
        };
        let request = TrainRequest::new(&init, &objective, &fit_set, &cfg).with_val(&check_set);
        // Boxed: the auxiliary run is a training run, so this future contains its own kind.
        let head = Box::pin(train_async(
            device,
            &request,
            &mut |_| ControlFlow::Continue(()),
            || std::future::ready(()),
        ))
        .await?
        .head;
        for (p, &row) in probabilities(device, &head, &check_set)
            .await?
            .into_iter()
            .zip(held_out)
        {
            out_of_fold[row] = p;
        }
        for (acc, other) in on_others.iter_mut().zip(others) {
            for (a, p) in acc
                .iter_mut()
                .zip(probabilities(device, &head, other).await?)
            {
                *a += 0.5 * p;
            }
        }
    }
    Ok((out_of_fold, on_others))
}

/// Flip rates from the anchor quantiles of a noisy-label head fitted to the explicit labels
/// (inverse-propensity weighted, so that the anchors see the whole exposure distribution),
/// with out-of-fold predictions.
pub(super) async fn estimate_flips(
    device: &Device,
    request: &TrainRequest<'_>,
) -> Result<FlipRates> {
    let labelled = request.train.feedback.iter().filter(|&&m| m > 0.5).count();
    if labelled == 0 {
        return Err(Error::InvalidData(
            "flip-rate estimation needs explicit labels (no exposure has feedback)".into(),
        ));
    }
    let (probs, _) = cross_fit(
        device,
        request,
        ObjectiveKind::NoiseIps,
        FlipRates::NONE,
        &[],
    )
    .await?;
    let (lo, hi) = request.objective.anchor_quantiles;
    estimate_flip_rates(&probs, lo, hi)
}
