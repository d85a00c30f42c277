//! The dev multi-user fixture `tests/data/users_dev.safetensors` (`tacit eval --protocol users`)
//! and its construction, which this test reruns: the committed file must be exactly what the
//! construction builds from `tests/data/hh_harmless_dev512.{jsonl,safetensors}`. To rebuild it
//! after changing the construction: `TACIT_WRITE_FIXTURE=1 cargo test --test users_fixture`.
//!
//! Construction (documented in `tests/data/README.md`): 40 users; user v's utility of answer n
//! is `0.8·quality(n) + taste_v · attributes(n) + 0.3·ε(v, n)`, where
//! - `quality` is the standardised HH-RLHF preference label (1 = the answer people chose), the
//!   part everyone shares;
//! - `attributes` are six measurable properties of the answer's text, each standardised over
//!   the answers: log word count, friendly words, question marks, hedges, first-person words,
//!   digits;
//! - `taste_v` is one of five archetypes (terse coder, friendly explainer, inquisitive,
//!   confident, plain personal: user v gets archetype v mod 5) at a strength drawn in
//!   [0.8, 1.2], plus N(0, 0.25) per attribute: users of one archetype agree, not exactly;
//! - `ε` is N(0, 1) noise per user and answer: the part of a taste no model can learn.
//!
//! `group` puts the four answers of two consecutive dialogues together (pair ids 2g, 2g+1).
#![cfg(not(target_arch = "wasm32"))]
// The linear algebra below indexes as the formulas do.
#![allow(clippy::needless_range_loop)]

use std::path::PathBuf;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use tacit_rm::rng::Rng;

const USERS: usize = 40;
const QUALITY_WEIGHT: f64 = 0.6;
const NOISE: f64 = 0.3;

/// Attribute weights of the five archetypes, in the order of [`attributes`].
const ARCHETYPES: [[f64; 6]; 5] = [
    // terse coder: short, unadorned, on the first topic axis
    [-1.0, -0.5, 0.0, 0.0, 0.8, 0.0],
    // friendly explainer: long and warm, the other end of that axis
    [1.0, 1.0, 0.0, 0.3, -0.8, 0.0],
    // inquisitive: likes answers that ask back, on the second topic axis
    [0.0, 0.3, 1.0, 0.0, 0.0, 0.8],
    // down to earth: the other end of the second axis
    [0.0, 0.0, -0.3, 0.0, 0.0, -1.0],
    // plain personal: first person, somewhat short
    [-0.3, 0.0, 0.0, 1.0, 0.5, 0.5],
];

const FRIENDLY: [&str; 11] = [
    "sorry", "please", "thank", "thanks", "glad", "happy", "hope", "great", "love", "welcome",
    "sure",
];
const FIRST_PERSON: [&str; 6] = ["i", "i'm", "i've", "i'd", "me", "my"];

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// The four raw text attributes of an answer (the two topic axes come from the embeddings).
fn attributes(text: &str) -> [f64; 4] {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .collect();
    let count = |set: &[&str]| words.iter().filter(|w| set.contains(w)).count() as f64;
    [
        (1.0 + words.len() as f64).ln(),
        (1.0 + count(&FRIENDLY) + text.matches('!').count() as f64).ln(),
        (1.0 + text.matches('?').count() as f64).ln(),
        (1.0 + count(&FIRST_PERSON)).ln(),
    ]
}

fn standardise(column: &mut [f64]) {
    let n = column.len() as f64;
    let mean = column.iter().sum::<f64>() / n;
    let sd = (column.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    let sd = if sd > 1e-12 { sd } else { 1.0 };
    column.iter_mut().for_each(|v| *v = (*v - mean) / sd);
}

/// The centred embedding rows (plain loops in f64 throughout: the same bits on every machine,
/// unlike a BLAS that picks its kernels at run time).
fn centred(emb: &[f32], n: usize, d: usize) -> Vec<Vec<f64>> {
    let mut mean = vec![0.0; d];
    for i in 0..n {
        for j in 0..d {
            mean[j] += emb[i * d + j] as f64 / n as f64;
        }
    }
    (0..n)
        .map(|i| (0..d).map(|j| emb[i * d + j] as f64 - mean[j]).collect())
        .collect()
}

/// The first `k` principal axes of `x` (power iteration with deflation), each with the sign
/// that makes its largest coordinate positive.
fn principal_axes(x: &[Vec<f64>], k: usize) -> Vec<Vec<f64>> {
    let d = x[0].len();
    let mut cov = vec![vec![0.0; d]; d];
    for row in x {
        for a in 0..d {
            for b in 0..d {
                cov[a][b] += row[a] * row[b];
            }
        }
    }
    let mut axes: Vec<Vec<f64>> = Vec::new();
    for _ in 0..k {
        let mut v: Vec<f64> = (0..d).map(|j| 1.0 + (j % 7) as f64 / 7.0).collect();
        for _ in 0..300 {
            let mut w: Vec<f64> = (0..d)
                .map(|a| (0..d).map(|b| cov[a][b] * v[b]).sum())
                .collect();
            for u in &axes {
                let p: f64 = w.iter().zip(u).map(|(a, b)| a * b).sum();
                w.iter_mut().zip(u).for_each(|(a, b)| *a -= p * b);
            }
            let norm = w.iter().map(|a| a * a).sum::<f64>().sqrt();
            v = w.into_iter().map(|a| a / norm).collect();
        }
        let big = v
            .iter()
            .copied()
            .fold(0.0f64, |m, a| if a.abs() > m.abs() { a } else { m });
        if big < 0.0 {
            v.iter_mut().for_each(|a| *a = -*a);
        }
        axes.push(v);
    }
    axes
}

/// The ridge (λ = 1) linear probe of `y` on the centred rows `x`: its fitted values.
fn ridge_fit(x: &[Vec<f64>], y: &[f64]) -> Vec<f64> {
    let d = x[0].len();
    let mut a = vec![vec![0.0; d]; d];
    let mut rhs = vec![0.0; d];
    for (row, &t) in x.iter().zip(y) {
        for p in 0..d {
            rhs[p] += row[p] * t;
            for q in 0..d {
                a[p][q] += row[p] * row[q];
            }
        }
    }
    for (p, r) in a.iter_mut().enumerate() {
        r[p] += 1.0;
    }
    // Gaussian elimination (the matrix is symmetric positive definite: no pivoting needed).
    for p in 0..d {
        for r in p + 1..d {
            let f = a[r][p] / a[p][p];
            for c in p..d {
                a[r][c] -= f * a[p][c];
            }
            rhs[r] -= f * rhs[p];
        }
    }
    let mut w = vec![0.0; d];
    for p in (0..d).rev() {
        let s: f64 = (p + 1..d).map(|c| a[p][c] * w[c]).sum();
        w[p] = (rhs[p] - s) / a[p][p];
    }
    x.iter()
        .map(|row| row.iter().zip(&w).map(|(a, b)| a * b).sum())
        .collect()
}

fn f32_le(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// What both constructions read from the single-user dev set: its embeddings (bytes and as
/// centred rows), labels and pair ids.
struct Source {
    emb_shape: Vec<usize>,
    emb_bytes: Vec<u8>,
    x: Vec<Vec<f64>>,
    labels: Vec<f64>,
    pair_id: Vec<i32>,
}

impl Source {
    fn read() -> Source {
        let bytes = std::fs::read(data_dir().join("hh_harmless_dev512.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let i32s = |name: &str| -> Vec<i32> {
            st.tensor(name)
                .unwrap()
                .data()
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes(b.try_into().unwrap()))
                .collect()
        };
        let emb = st.tensor("response_emb").unwrap();
        let (n, d) = (emb.shape()[0], emb.shape()[1]);
        let floats: Vec<f32> = emb
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        Source {
            emb_shape: emb.shape().to_vec(),
            emb_bytes: emb.data().to_vec(),
            x: centred(&floats, n, d),
            labels: i32s("label").into_iter().map(f64::from).collect(),
            pair_id: i32s("pair_id"),
        }
    }

    fn n(&self) -> usize {
        self.emb_shape[0]
    }

    /// The multi-user file: the embeddings, `utility` `[users, n]` and the groups (pairs
    /// shown together, two pairs to a group).
    fn serialize(&self, users: usize, utility: &[f32]) -> Vec<u8> {
        let utility_bytes = f32_le(utility);
        let group_bytes: Vec<u8> = self
            .pair_id
            .iter()
            .flat_map(|p| (p / 2).to_le_bytes())
            .collect();
        let tensors = vec![
            (
                "response_emb",
                TensorView::new(Dtype::F32, self.emb_shape.clone(), &self.emb_bytes).unwrap(),
            ),
            (
                "utility",
                TensorView::new(Dtype::F32, vec![users, self.n()], &utility_bytes).unwrap(),
            ),
            (
                "group",
                TensorView::new(Dtype::I32, vec![self.n()], &group_bytes).unwrap(),
            ),
        ];
        safetensors::serialize(tensors, None).unwrap()
    }
}

/// Builds the fixture's bytes.
fn build() -> Vec<u8> {
    let source = Source::read();
    let n = source.n();
    let texts: Vec<String> = std::fs::read_to_string(data_dir().join("hh_harmless_dev512.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["response"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(texts.len(), n);

    let x = &source.x;
    // The shared quality: the standardised label plus its linear probe on the embeddings at
    // twice the weight, so that the crowd's part is learnable from embeddings.
    let mut label = source.labels.clone();
    standardise(&mut label);
    let mut probe = ridge_fit(x, &label);
    standardise(&mut probe);
    let mut quality: Vec<f64> = label.iter().zip(&probe).map(|(l, p)| l + 2.0 * p).collect();
    standardise(&mut quality);
    let raw: Vec<[f64; 4]> = texts.iter().map(|t| attributes(t)).collect();
    let mut attrs = vec![vec![0.0; n]; 6];
    for (j, column) in attrs.iter_mut().enumerate().take(4) {
        for (i, r) in raw.iter().enumerate() {
            column[i] = r[j];
        }
    }
    for (k, axis) in principal_axes(x, 2).iter().enumerate() {
        for i in 0..n {
            attrs[4 + k][i] = x[i].iter().zip(axis).map(|(a, b)| a * b).sum();
        }
    }
    for column in attrs.iter_mut() {
        standardise(column);
    }

    let mut rng = Rng::new(0x05E75);
    let mut utility = Vec::with_capacity(USERS * n);
    for v in 0..USERS {
        let archetype = ARCHETYPES[v % ARCHETYPES.len()];
        let norm = archetype.iter().map(|a| a * a).sum::<f64>().sqrt();
        let strength = 0.8 + 0.4 * rng.uniform();
        let taste: Vec<f64> = archetype
            .iter()
            .map(|a| strength * a / norm + 0.25 * rng.normal())
            .collect();
        for i in 0..n {
            let personal: f64 = (0..6).map(|j| taste[j] * attrs[j][i]).sum();
            let u = QUALITY_WEIGHT * quality[i] + personal + NOISE * rng.normal();
            utility.push(u as f32);
        }
    }
    source.serialize(USERS, &utility)
}

#[test]
fn the_committed_multi_user_fixture_is_what_its_construction_builds() {
    let path = data_dir().join("users_dev.safetensors");
    let built = build();
    if std::env::var_os("TACIT_WRITE_FIXTURE").is_some() {
        std::fs::write(&path, &built).unwrap();
    }
    let committed = std::fs::read(&path).expect("tests/data/users_dev.safetensors is committed");
    assert!(
        committed == built,
        "tests/data/users_dev.safetensors differs from its construction (rebuild with TACIT_WRITE_FIXTURE=1)"
    );
    // And it reads as a multi-user data set: 40 users × 1024 answers, groups of four.
    let data = tacit_rm::eval::users::UsersData::from_bytes(&committed).unwrap();
    assert_eq!(
        (data.users(), data.emb.nrows(), data.emb.ncols()),
        (40, 1024, 384)
    );
    let group = data.group.unwrap();
    assert!((0..256).all(|g| group.iter().filter(|&&x| x == g).count() == 4));
}

/// The construction gives users of one archetype similar tastes and users of opposite
/// archetypes (terse coder, friendly explainer) opposite ones beyond the shared quality term:
/// the property the protocol exists to measure.
#[test]
fn archetypes_agree_within_and_disagree_across() {
    let data = tacit_rm::eval::users::UsersData::from_bytes(&build()).unwrap();
    let corr = |a: usize, b: usize| {
        let (x, y) = (data.utility.row(a), data.utility.row(b));
        let n = x.len() as f64;
        let (mx, my) = (x.sum() as f64 / n, y.sum() as f64 / n);
        let cov: f64 = x
            .iter()
            .zip(y)
            .map(|(&p, &q)| (p as f64 - mx) * (q as f64 - my))
            .sum();
        let vx: f64 = x.iter().map(|&p| (p as f64 - mx).powi(2)).sum();
        let vy: f64 = y.iter().map(|&q| (q as f64 - my).powi(2)).sum();
        cov / (vx * vy).sqrt()
    };
    // Users 0 and 5 are terse coders, 1 and 6 friendly explainers.
    assert!(corr(0, 5) > 0.5, "{}", corr(0, 5));
    assert!(corr(1, 6) > 0.5, "{}", corr(1, 6));
    assert!(corr(0, 1) < 0.1, "{}", corr(0, 1));
}

/// A second multi-user data set of another construction, to check that a result on the dev
/// fixture is not a property of its construction: written (not committed) to the path in
/// `TACIT_LATENT_FIXTURE` by `cargo test --test users_fixture -- --ignored`.
///
/// The same 1024 answers and groups; 48 users with continuous tastes (no archetypes, no text
/// attributes): user v's utility of answer n is `0.4·label(n) + Σ_k c_vk·p_k(n) +
/// c_v4·(|p_0(n)| − mean) + 0.5·ε(v, n)`, where the `p_k` are four projections of the
/// centred embeddings on random directions (seeded), each standardised, `c_v ~ N(0, 0.5²)`
/// per user and coordinate (the last one weights a non-linear taste: answers far from the
/// middle of the first direction, either way), and `ε` is N(0, 1) noise.
fn build_latent() -> Vec<u8> {
    const LATENT_USERS: usize = 48;
    let source = Source::read();
    let (n, x) = (source.n(), &source.x);
    let d = source.emb_shape[1];
    let mut label = source.labels.clone();
    standardise(&mut label);
    let mut rng = Rng::new(0x1A7E);
    let mut p: Vec<Vec<f64>> = (0..4)
        .map(|_| {
            let dir: Vec<f64> = (0..d).map(|_| rng.normal()).collect();
            x.iter()
                .map(|row| row.iter().zip(&dir).map(|(a, b)| a * b).sum())
                .collect()
        })
        .collect();
    for column in p.iter_mut() {
        standardise(column);
    }
    let mut far: Vec<f64> = p[0].iter().map(|v| v.abs()).collect();
    standardise(&mut far);
    let mut utility = Vec::with_capacity(LATENT_USERS * n);
    for _ in 0..LATENT_USERS {
        let c: Vec<f64> = (0..5).map(|_| 0.5 * rng.normal()).collect();
        for i in 0..n {
            let taste: f64 = (0..4).map(|k| c[k] * p[k][i]).sum::<f64>() + c[4] * far[i];
            let u = 0.4 * label[i] + taste + 0.5 * rng.normal();
            utility.push(u as f32);
        }
    }
    source.serialize(LATENT_USERS, &utility)
}

#[test]
#[ignore = "writes the second fixture to $TACIT_LATENT_FIXTURE"]
fn write_the_latent_fixture() {
    let path = std::env::var_os("TACIT_LATENT_FIXTURE").expect("TACIT_LATENT_FIXTURE names a path");
    let bytes = build_latent();
    let data = tacit_rm::eval::users::UsersData::from_bytes(&bytes).unwrap();
    assert_eq!((data.users(), data.emb.nrows()), (48, 1024));
    std::fs::write(path, bytes).unwrap();
}
