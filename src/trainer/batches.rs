//! The minibatches of one epoch: a shuffle of the examples (or of the pairs, for `pairwise`),
//! cut into batches. Deterministic under the run's generator.

use std::collections::HashMap;

use crate::backend::Batch;
use crate::objective::Prepared;
use crate::rng::Rng;

/// Minibatches of one epoch over `n` examples. Pairwise batches hold the rows their pairs
/// touch, each once, with the pairs indexed into them.
pub(crate) fn make_batches(
    prepared: &Prepared,
    n: usize,
    batch_size: usize,
    rng: &mut Rng,
) -> Vec<Batch> {
    if prepared.kind().is_pairwise() {
        let mut order: Vec<usize> = (0..prepared.pairs.len()).collect();
        rng.shuffle(&mut order);
        order
            .chunks(batch_size)
            .map(|chunk| {
                let mut rows = Vec::new();
                let mut local = HashMap::new();
                let mut index = |r: usize, rows: &mut Vec<usize>| {
                    *local.entry(r).or_insert_with(|| {
                        rows.push(r);
                        rows.len() - 1
                    })
                };
                let pairs = chunk
                    .iter()
                    .map(|&p| {
                        let (w, l, wt) = prepared.pairs[p];
                        (index(w, &mut rows), index(l, &mut rows), wt)
                    })
                    .collect();
                (rows, pairs)
            })
            .collect()
    } else {
        let mut order: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut order);
        order
            .chunks(batch_size)
            .map(|c| (c.to_vec(), Vec::new()))
            .collect()
    }
}
