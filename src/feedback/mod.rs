//! Feedback → examples: what the app saw the user do, as training examples.
//!
//! An *exposure* is one answer shown to the user. For each, the app knows the embedding, how
//! it was shown (position, number of candidates, length, dwell), whether the user reacted at
//! all (`feedback`, the mask `m`), whether the reaction was positive (`observed`, the implicit
//! positive `o = m·ỹ`: copy, thumbs-up) and, where it reacted, the explicit label `ỹ`
//! (thumbs up = 1, thumbs down / regenerate = 0), which may be noisy.

pub mod events;
pub mod flip;
pub mod log;
pub mod propensity;

use ndarray::Array2;

use crate::error::{check, Error, Result};

/// The rows `rows` of `a`, in that order: `a.select(Axis(0), rows)` as one copy per row
/// (ndarray's `select` concatenates a view per row, a tenth of a 100-step training call on
/// the CPU path in the browser).
pub(crate) fn select_rows(a: &Array2<f32>, rows: &[usize]) -> Array2<f32> {
    let d = a.ncols();
    let mut out = Vec::with_capacity(rows.len() * d);
    match a.as_slice() {
        Some(flat) => {
            for &r in rows {
                out.extend_from_slice(&flat[r * d..(r + 1) * d]);
            }
        }
        None => {
            for &r in rows {
                out.extend(a.row(r).iter());
            }
        }
    }
    Array2::from_shape_vec((rows.len(), d), out).expect("rows × d values")
}

/// Two rows shown together where the user chose `winner` over `loser`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    pub winner: usize,
    pub loser: usize,
    /// Optional log-probabilities of each response under the current and the logging policy
    /// (`[winner, loser]`), for OCRM importance weights; `None` = weight 1.
    pub logp_new: Option<[f32; 2]>,
    pub logp_old: Option<[f32; 2]>,
}

impl Pair {
    pub fn new(winner: usize, loser: usize) -> Self {
        Pair {
            winner,
            loser,
            logp_new: None,
            logp_old: None,
        }
    }
}

/// Names of the exposure features, in column order, as produced by the simulator and by
/// [`events::exposure_features`].
pub const EXPOSURE_FEATURES: [&str; 4] = ["position", "inv_candidates", "length", "log_dwell"];

/// A set of exposures ready for an objective. All per-row vectors have `len() == n`.
#[derive(Debug, Clone, PartialEq)]
pub struct Examples {
    /// `[n, dim]` response embeddings.
    pub emb: Array2<f32>,
    /// `o ∈ {0,1}`: a positive implicit action was seen.
    pub observed: Vec<f32>,
    /// `m ∈ {0,1}`: the user reacted at all, so `explicit` is meaningful.
    pub feedback: Vec<f32>,
    /// `ỹ ∈ {0,1}` where `feedback == 1` (ignored elsewhere).
    pub explicit: Vec<f32>,
    /// Estimated propensity `π̂ = P(feedback | exposure)`; 1.0 when unknown.
    pub propensity: Vec<f32>,
    /// `[n, k]` exposure features (k may be 0), standardised by the producer.
    pub exposure: Array2<f32>,
    /// Choices among candidates shown together (row indices into this set).
    pub pairs: Vec<Pair>,
    /// A fixed logit added to the head's first output on each row, or empty for none: the
    /// other part of a two-part model (`crate::personal`), held constant while this part
    /// trains. Its gradient is not taken.
    pub offset: Vec<f32>,
}

impl Examples {
    /// Exposures with only implicit positives known (no explicit labels, no propensities).
    pub fn implicit_only(emb: Array2<f32>, observed: Vec<f32>) -> Self {
        let n = emb.nrows();
        Examples {
            emb,
            feedback: observed.clone(),
            explicit: observed.clone(),
            observed,
            propensity: vec![1.0; n],
            exposure: Array2::zeros((n, 0)),
            pairs: Vec::new(),
            offset: Vec::new(),
        }
    }

    /// Fully labelled examples (`o = m = ỹ = y` everywhere): the oracle's view.
    pub fn fully_labelled(emb: Array2<f32>, labels: Vec<f32>) -> Self {
        let n = emb.nrows();
        Examples {
            emb,
            observed: labels.clone(),
            feedback: vec![1.0; n],
            explicit: labels,
            propensity: vec![1.0; n],
            exposure: Array2::zeros((n, 0)),
            pairs: Vec::new(),
            offset: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.emb.nrows()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dim(&self) -> usize {
        self.emb.ncols()
    }

    /// Checks lengths, value ranges and finiteness of every field.
    pub fn validate(&self) -> Result<()> {
        let n = self.len();
        check::finite_array("embeddings", self.emb.view())?;
        for (name, v) in [
            ("observed", &self.observed),
            ("feedback", &self.feedback),
            ("explicit", &self.explicit),
            ("propensity", &self.propensity),
        ] {
            check::len(name, n, v.len())?;
            check::finite(name, v)?;
        }
        check::len("exposure rows", n, self.exposure.nrows())?;
        if !self.offset.is_empty() {
            check::len("logit offsets", n, self.offset.len())?;
            check::finite("logit offsets", &self.offset)?;
        }
        check::finite_array("exposure", self.exposure.view())?;
        for (name, v) in [
            ("observed", &self.observed),
            ("feedback", &self.feedback),
            ("explicit", &self.explicit),
        ] {
            if let Some(i) = v.iter().position(|&x| x != 0.0 && x != 1.0) {
                return Err(Error::InvalidData(format!(
                    "{name}[{i}] = {} is not 0 or 1",
                    v[i]
                )));
            }
        }
        if let Some(i) = self.propensity.iter().position(|&p| !(p > 0.0 && p <= 1.0)) {
            return Err(Error::InvalidData(format!(
                "propensity[{i}] = {} is outside (0, 1]",
                self.propensity[i]
            )));
        }
        if let Some(i) = (0..n).find(|&i| self.observed[i] > self.feedback[i]) {
            return Err(Error::InvalidData(format!(
                "row {i} has a positive action but no feedback"
            )));
        }
        if let Some(p) = self
            .pairs
            .iter()
            .find(|p| p.winner >= n || p.loser >= n || p.winner == p.loser)
        {
            return Err(Error::InvalidData(format!(
                "pair {p:?} does not name two distinct rows of {n}"
            )));
        }
        for p in &self.pairs {
            for lp in p.logp_new.iter().chain(p.logp_old.iter()) {
                check::finite("pair log-probabilities", lp)?;
            }
        }
        Ok(())
    }

    /// The rows at `idx` (pairs kept only when both ends are selected, re-indexed).
    pub fn select(&self, idx: &[usize]) -> Examples {
        let mut position = vec![usize::MAX; self.len()];
        for (new, &old) in idx.iter().enumerate() {
            position[old] = new;
        }
        let pick = |v: &Vec<f32>| idx.iter().map(|&i| v[i]).collect::<Vec<f32>>();
        Examples {
            emb: select_rows(&self.emb, idx),
            observed: pick(&self.observed),
            feedback: pick(&self.feedback),
            explicit: pick(&self.explicit),
            propensity: pick(&self.propensity),
            exposure: select_rows(&self.exposure, idx),
            pairs: self
                .pairs
                .iter()
                .filter(|p| position[p.winner] != usize::MAX && position[p.loser] != usize::MAX)
                .map(|p| Pair {
                    winner: position[p.winner],
                    loser: position[p.loser],
                    ..*p
                })
                .collect(),
            offset: if self.offset.is_empty() {
                Vec::new()
            } else {
                pick(&self.offset)
            },
        }
    }

    /// These examples with `offset` as every row's fixed logit offset (empty = none).
    pub fn with_offset(mut self, offset: Vec<f32>) -> Examples {
        self.offset = offset;
        self
    }

    /// The offset of row `i` (0 without offsets).
    pub fn offset_of(&self, i: usize) -> f32 {
        self.offset.get(i).copied().unwrap_or(0.0)
    }
}

/// Tensor names of a feedback file (what an app exports for `tacit train`).
pub mod file {
    use ndarray::Array2;
    use safetensors::tensor::{Dtype, SafeTensors, TensorView};

    use super::{Examples, Pair};
    use crate::error::{Error, Result};

    /// A tensor as f32 (any dtype the data reader accepts), through the one decoder of
    /// `crate::data`.
    fn floats(st: &SafeTensors<'_>, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        Ok(crate::data::numbers(st, name)?
            .map(|(shape, v)| (shape, v.into_iter().map(|x| x as f32).collect())))
    }

    /// Whether the bytes look like a feedback file (they hold an `observed` tensor).
    /// Whether a feedback file carries the reaction mask `feedback` (needed by the objectives
    /// that use reaction signs or self-normalise by the mask).
    pub fn has_reaction_mask(bytes: &[u8]) -> bool {
        SafeTensors::deserialize(bytes)
            .map(|st| st.tensor("feedback").is_ok())
            .unwrap_or(false)
    }

    pub fn is_feedback_file(bytes: &[u8]) -> bool {
        SafeTensors::deserialize(bytes)
            .map(|st| st.tensor("observed").is_ok())
            .unwrap_or(false)
    }

    /// Reads `emb` [N,d], `observed` [N], optional `feedback`, `explicit`, `propensity` [N],
    /// `exposure` [N,k], `pair_winner`/`pair_loser` [P] (I32 row indices).
    pub fn read(bytes: &[u8]) -> Result<Examples> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| Error::InvalidData(format!("not a readable safetensors file: {e}")))?;
        let (shape, emb) = floats(&st, "emb")?
            .ok_or_else(|| Error::InvalidData("feedback file needs 'emb' [N, d]".into()))?;
        if shape.len() != 2 {
            return Err(Error::InvalidData(format!(
                "'emb' must be 2-D, has shape {shape:?}"
            )));
        }
        let n = shape[0];
        let emb = Array2::from_shape_vec((shape[0], shape[1]), emb).expect("shape from header");
        let vector = |name: &str| -> Result<Option<Vec<f32>>> {
            match floats(&st, name)? {
                None => Ok(None),
                Some((s, v)) if s == [n] => Ok(Some(v)),
                Some((s, _)) => Err(Error::DimMismatch {
                    what: format!("'{name}' (shape {s:?}) length"),
                    expected: n,
                    got: s.first().copied().unwrap_or(0),
                }),
            }
        };
        let observed = vector("observed")?
            .ok_or_else(|| Error::InvalidData("feedback file needs 'observed' [N]".into()))?;
        let mut ex = Examples::implicit_only(emb, observed);
        if let Some(m) = vector("feedback")? {
            ex.feedback = m;
        }
        if let Some(y) = vector("explicit")? {
            ex.explicit = y;
        }
        if let Some(p) = vector("propensity")? {
            ex.propensity = p;
        }
        if let Some((s, v)) = floats(&st, "exposure")? {
            if s.len() != 2 || s[0] != n {
                return Err(Error::InvalidData(format!(
                    "'exposure' must be [{n}, k], has shape {s:?}"
                )));
            }
            ex.exposure = Array2::from_shape_vec((s[0], s[1]), v).expect("shape from header");
        }
        let (winners, losers) = (floats(&st, "pair_winner")?, floats(&st, "pair_loser")?);
        if winners.is_some() != losers.is_some() {
            return Err(Error::InvalidData(
                "'pair_winner' and 'pair_loser' come together".into(),
            ));
        }
        if let (Some(w), Some(l)) = (winners, losers) {
            let index = |v: f32| -> Result<usize> {
                if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && (v as usize) < n {
                    Ok(v as usize)
                } else {
                    Err(Error::InvalidData(format!(
                        "pair index {v} is not a row of {n}"
                    )))
                }
            };
            if w.1.len() != l.1.len() {
                return Err(Error::DimMismatch {
                    what: "pair_loser length".into(),
                    expected: w.1.len(),
                    got: l.1.len(),
                });
            }
            ex.pairs =
                w.1.iter()
                    .zip(&l.1)
                    .map(|(&a, &b)| Ok(Pair::new(index(a)?, index(b)?)))
                    .collect::<Result<Vec<_>>>()?;
        }
        ex.validate()?;
        Ok(ex)
    }

    /// Writes examples in the format [`read`] accepts.
    pub fn write(ex: &Examples) -> Result<Vec<u8>> {
        let f = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let i = |v: Vec<i32>| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let n = ex.len();
        let mut owned: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = vec![
            (
                "emb",
                Dtype::F32,
                vec![n, ex.dim()],
                f(ex.emb.as_standard_layout().as_slice().expect("standard")),
            ),
            ("observed", Dtype::F32, vec![n], f(&ex.observed)),
            ("feedback", Dtype::F32, vec![n], f(&ex.feedback)),
            ("explicit", Dtype::F32, vec![n], f(&ex.explicit)),
            ("propensity", Dtype::F32, vec![n], f(&ex.propensity)),
            (
                "exposure",
                Dtype::F32,
                vec![n, ex.exposure.ncols()],
                f(ex.exposure
                    .as_standard_layout()
                    .as_slice()
                    .expect("standard")),
            ),
        ];
        if !ex.pairs.is_empty() {
            owned.push((
                "pair_winner",
                Dtype::I32,
                vec![ex.pairs.len()],
                i(ex.pairs.iter().map(|p| p.winner as i32).collect()),
            ));
            owned.push((
                "pair_loser",
                Dtype::I32,
                vec![ex.pairs.len()],
                i(ex.pairs.iter().map(|p| p.loser as i32).collect()),
            ));
        }
        let views: Vec<(String, TensorView<'_>)> = owned
            .iter()
            .map(|(n, d, s, b)| {
                (
                    n.to_string(),
                    TensorView::new(*d, s.clone(), b).expect("sizes match"),
                )
            })
            .collect();
        safetensors::serialize(views, None).map_err(|e| Error::InvalidData(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Axis, ShapeBuilder};

    #[test]
    fn select_rows_is_ndarray_select() {
        let a = Array2::from_shape_fn((7, 5), |(i, j)| (i * 10 + j) as f32);
        for rows in [vec![], vec![3], vec![6, 0, 0, 2, 5]] {
            assert_eq!(select_rows(&a, &rows), a.select(Axis(0), &rows));
            // Column-major (not one slice in row order): the row-by-row path.
            let f = Array2::from_shape_fn((7, 5).f(), |(i, j)| a[[i, j]]);
            assert!(f.as_slice().is_none());
            assert_eq!(select_rows(&f, &rows), a.select(Axis(0), &rows));
        }
    }
}
