//! Labelled data sets in the input format of DESIGN §4: safetensors with `response_emb` (or
//! `emb`) `[N, d]` f32, `label` `[N]` i32/f32 (binary or graded), optional `prompt_emb`
//! `[N, d]` and optional `pair_id` `[N]` i32 (rows sharing an id were shown together).

use std::path::Path;

use ndarray::{Array2, Axis};
use safetensors::tensor::{Dtype, SafeTensors};

use crate::error::{Error, Result};
use crate::rng::Rng;

#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub emb: Array2<f32>,
    /// Raw labels as given (binary or graded).
    pub label: Vec<f32>,
    pub prompt_emb: Option<Array2<f32>>,
    pub pair_id: Option<Vec<i64>>,
}

/// Largest data file read into memory (a guard against being handed something absurd).
pub const MAX_DATA_BYTES: u64 = 4 << 30;

fn bad(msg: impl Into<String>) -> Error {
    Error::InvalidData(msg.into())
}

/// A tensor of any supported numeric dtype as f64, with non-finite values rejected.
pub(crate) fn numbers(st: &SafeTensors<'_>, name: &str) -> Result<Option<(Vec<usize>, Vec<f64>)>> {
    let t = match st.tensor(name) {
        Ok(t) => t,
        Err(_) => return Ok(None),
    };
    let d = t.data();
    let values: Vec<f64> = match t.dtype() {
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")) as f64)
            .collect(),
        Dtype::F64 => d
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect(),
        Dtype::I32 => d
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")) as f64)
            .collect(),
        Dtype::I64 => d
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")) as f64)
            .collect(),
        other => {
            return Err(bad(format!(
                "tensor '{name}' has unsupported dtype {other:?}"
            )))
        }
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: format!("tensor '{name}'"),
            index: i,
        });
    }
    Ok(Some((t.shape().to_vec(), values)))
}

fn matrix(st: &SafeTensors<'_>, name: &str) -> Result<Option<Array2<f32>>> {
    match numbers(st, name)? {
        None => Ok(None),
        Some((shape, v)) if shape.len() == 2 => Ok(Some(
            Array2::from_shape_vec(
                (shape[0], shape[1]),
                v.into_iter().map(|x| x as f32).collect(),
            )
            .expect("shape from header"),
        )),
        Some((shape, _)) => Err(bad(format!(
            "tensor '{name}' must be 2-D, has shape {shape:?}"
        ))),
    }
}

fn vector(st: &SafeTensors<'_>, name: &str, n: usize) -> Result<Option<Vec<f64>>> {
    match numbers(st, name)? {
        None => Ok(None),
        Some((shape, v)) if shape == [n] || shape == [n, 1] => Ok(Some(v)),
        Some((shape, _)) => Err(Error::DimMismatch {
            what: format!("tensor '{name}' (shape {shape:?}) rows"),
            expected: n,
            got: shape.first().copied().unwrap_or(0),
        }),
    }
}

impl Dataset {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a readable safetensors file: {e}")))?;
        let emb = match matrix(&st, "response_emb")? {
            Some(m) => m,
            None => matrix(&st, "emb")?
                .ok_or_else(|| bad("needs a 'response_emb' or 'emb' tensor [N, d]"))?,
        };
        let n = emb.nrows();
        if n == 0 || emb.ncols() == 0 {
            return Err(Error::Empty {
                what: "data set embeddings".into(),
            });
        }
        let label = vector(&st, "label", n)?.ok_or_else(|| bad("needs a 'label' tensor [N]"))?;
        let prompt_emb = matrix(&st, "prompt_emb")?;
        if let Some(p) = &prompt_emb {
            if p.nrows() != n {
                return Err(Error::DimMismatch {
                    what: "prompt_emb rows".into(),
                    expected: n,
                    got: p.nrows(),
                });
            }
            if p.ncols() != emb.ncols() {
                return Err(Error::DimMismatch {
                    what: "prompt_emb width".into(),
                    expected: emb.ncols(),
                    got: p.ncols(),
                });
            }
        }
        let pair_id = vector(&st, "pair_id", n)?.map(|v| v.into_iter().map(|x| x as i64).collect());
        let ds = Dataset {
            emb,
            label: label.into_iter().map(|x| x as f32).collect(),
            prompt_emb,
            pair_id,
        };
        if ds.label.iter().all(|&l| l == ds.label[0]) {
            return Err(bad("all labels are equal: nothing to learn or evaluate"));
        }
        Ok(ds)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let len = std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .len();
        if len > MAX_DATA_BYTES {
            return Err(bad(format!(
                "{} is {len} bytes, over the {MAX_DATA_BYTES}-byte limit",
                path.display()
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes)
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

    /// Labels rescaled to [0, 1] (binary labels stay 0/1; graded ones are min–max scaled).
    pub fn scaled_labels(&self) -> Vec<f32> {
        let lo = self.label.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = self.label.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        self.label.iter().map(|&l| (l - lo) / (hi - lo)).collect()
    }

    /// Binary preference: scaled label above one half (ties at exactly 0.5 count as 0).
    pub fn binary_labels(&self) -> Vec<f32> {
        self.scaled_labels()
            .into_iter()
            .map(|l| if l > 0.5 { 1.0 } else { 0.0 })
            .collect()
    }

    /// Groups of rows shown together: by `pair_id` when present, else singletons.
    pub fn groups(&self) -> Vec<Vec<usize>> {
        match &self.pair_id {
            None => (0..self.len()).map(|i| vec![i]).collect(),
            Some(ids) => {
                let order = crate::math::sorted_order(self.len(), &mut |a, b| ids[a].cmp(&ids[b]));
                let mut groups: Vec<Vec<usize>> = Vec::new();
                for i in order {
                    match groups.last_mut() {
                        Some(g) if ids[g[0]] == ids[i] => g.push(i),
                        _ => groups.push(vec![i]),
                    }
                }
                groups
            }
        }
    }

    /// Splits whole groups (never a pair across splits) into fractions `fracs` of the groups,
    /// shuffled by `seed`. Returns row indices per split.
    pub fn split(&self, fracs: &[f64], seed: u64) -> Vec<Vec<usize>> {
        let mut groups = self.groups();
        Rng::new(seed).shuffle(&mut groups);
        let total = groups.len();
        let mut out = Vec::new();
        let mut start = 0;
        for (k, f) in fracs.iter().enumerate() {
            let end = if k + 1 == fracs.len() {
                total
            } else {
                (start + (f * total as f64).round() as usize).min(total)
            };
            out.push(groups[start..end].iter().flatten().copied().collect());
            start = end;
        }
        out
    }

    pub fn select(&self, rows: &[usize]) -> Dataset {
        Dataset {
            emb: self.emb.select(Axis(0), rows),
            label: rows.iter().map(|&i| self.label[i]).collect(),
            prompt_emb: self.prompt_emb.as_ref().map(|p| p.select(Axis(0), rows)),
            pair_id: self
                .pair_id
                .as_ref()
                .map(|p| rows.iter().map(|&i| p[i]).collect()),
        }
    }
}
