//! A training run on the CPU: the reference engine every other one is checked against. The
//! weights and AdamW moments live in ndarray; each batch is one forward, one objective
//! gradient, one backward and one optimizer step.

use ndarray::Array2;

use crate::backend::engine::{Batch, EpochOutcome, RunData};
use crate::error::Result;
use crate::feedback::{select_rows, Examples};
use crate::head::Head;
use crate::objective::{LossGrad, Prepared};
use crate::optim::AdamW;

use super::{backward, forward, forward_train};

pub(crate) struct CpuEngine<'a> {
    data: RunData<'a>,
    head: Head,
    exposure: Option<Head>,
    opt: AdamW,
    opt_exposure: Option<AdamW>,
}

impl<'a> CpuEngine<'a> {
    pub fn new(data: RunData<'a>, head: Head, exposure: Option<Head>) -> Self {
        let opt = AdamW::new(data.optimizer, &head);
        let opt_exposure = exposure.as_ref().map(|e| AdamW::new(data.optimizer, e));
        CpuEngine {
            data,
            head,
            exposure,
            opt,
            opt_exposure,
        }
    }

    pub fn epoch(&mut self, batches: &[Batch], validate: bool) -> Result<EpochOutcome> {
        let (train, prepared) = (self.data.train, self.data.prepared);
        let mut loss_sum = 0.0;
        let mut weight_sum = 0.0;
        for (rows, pairs) in batches {
            let x = select_rows(&train.emb, rows);
            let (mut out, cache) = forward_train(&self.head, x.view());
            add_offsets(&mut out, train, rows);
            let aux_in = self
                .exposure
                .as_ref()
                .map(|_| select_rows(&train.exposure, rows));
            let aux_fwd = self
                .exposure
                .as_ref()
                .zip(aux_in.as_ref())
                .map(|(e, a)| forward_train(e, a.view()));
            let LossGrad { loss, d_out, d_aux } = prepared.batch_loss(
                rows,
                pairs,
                out.view(),
                aux_fwd.as_ref().map(|(o, _)| o.view()),
            )?;
            let grads = backward(&self.head, &cache, d_out.view());
            self.opt.step(&mut self.head, &grads);
            if let (Some(e), Some(o), Some((_, c)), Some(d)) = (
                self.exposure.as_mut(),
                self.opt_exposure.as_mut(),
                aux_fwd.as_ref(),
                d_aux,
            ) {
                let g = backward(e, c, d.view());
                o.step(e, &g);
            }
            let weight = if prepared.kind().is_pairwise() {
                pairs.len()
            } else {
                rows.len()
            } as f64;
            loss_sum += loss * weight;
            weight_sum += weight;
        }
        let val_loss = match (validate, self.data.prepared_val, self.data.val) {
            (true, Some(pv), Some(v)) => {
                Some(full_loss(&self.head, self.exposure.as_ref(), pv, v)?)
            }
            _ => None,
        };
        Ok(EpochOutcome {
            train_loss: loss_sum / weight_sum,
            val_loss,
            head: self.head.clone(),
            exposure: self.exposure.clone(),
        })
    }
}

/// Adds the examples' fixed logit offsets (if any) of `rows` to the first output column of
/// `out` (row `i` of `out` is example `rows[i]`). The offset is a constant of the loss: the
/// backward pass, which reads the forward cache, does not see it.
pub(crate) fn add_offsets(out: &mut Array2<f32>, ex: &Examples, rows: &[usize]) {
    if ex.offset.is_empty() {
        return;
    }
    for (i, &r) in rows.iter().enumerate() {
        out[[i, 0]] += ex.offset[r];
    }
}

/// The objective's loss over a whole set (no gradients used).
pub fn full_loss(
    head: &Head,
    exposure: Option<&Head>,
    prepared: &Prepared,
    ex: &Examples,
) -> Result<f64> {
    let rows: Vec<usize> = (0..ex.len()).collect();
    let mut out = forward(head, ex.emb.view())?;
    add_offsets(&mut out, ex, &rows);
    let aux = exposure
        .map(|e| forward(e, ex.exposure.view()))
        .transpose()?;
    Ok(prepared
        .batch_loss(
            &rows,
            &prepared.pairs,
            out.view(),
            aux.as_ref().map(|a| a.view()),
        )?
        .loss)
}
