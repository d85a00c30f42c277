//! Weights as safetensors, with a `__metadata__` block that makes a file self-describing:
//! schema version, dims, hidden sizes, activation, outputs, objective and model version.
//! The sync server and the browser package read and write this same format.
//!
//! Reading never trusts the file: truncated or corrupt bytes, missing tensors, wrong shapes,
//! non-finite values and unknown schema versions are typed errors, never panics. Nor does it
//! accept what a writer never produces ([`strict`]): repeated keys, tensors the metadata does
//! not describe, counts in a non-canonical spelling.

pub use strict::parse_count;

mod strict;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use ndarray::{Array1, Array2};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::{Error, Result};
use crate::head::{Activation, Head, HeadConfig, Linear};
use crate::objective::ObjectiveKind;
use crate::personal::{Personal, Personalization};

/// Bumped on any incompatible change of the layout below.
pub const SCHEMA_VERSION: u32 = 1;
/// Name of the format, in the metadata, to tell our files from any other safetensors.
pub const FORMAT: &str = "tacit-rm";

/// A head and the facts stored beside it.
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    pub head: Head,
    /// `implicit`'s exposure head, saved so that training can resume.
    pub exposure_head: Option<Head>,
    pub objective: Option<ObjectiveKind>,
    /// Model version (the sync server's global version this derives from; 0 = fresh).
    pub version: u64,
    /// The user's personal part (`crate::personal`): stored and exported with the weights,
    /// never in a sync request (a delta refuses it).
    pub personal: Option<Personal>,
}

impl Weights {
    pub fn new(head: Head) -> Self {
        Weights {
            head,
            exposure_head: None,
            objective: None,
            version: 0,
            personal: None,
        }
    }

    /// The shared part alone: what a sync may see.
    pub fn shared(&self) -> Weights {
        Weights {
            personal: None,
            ..self.clone()
        }
    }
}

/// Metadata keys of the personal part (reserved: a delta's extra keys may not use them).
const PERSONAL_KEYS: [&str; 5] = [
    "personal",
    "personal_blend",
    "personal_blend_loss",
    "personal_examples",
    "personal_share",
];

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn head_tensors(prefix: &str, head: &Head) -> Vec<(String, Vec<usize>, Vec<u8>)> {
    head.layers
        .iter()
        .enumerate()
        .flat_map(|(i, l)| {
            [
                (
                    format!("{prefix}layers.{i}.weight"),
                    l.weight.shape().to_vec(),
                    f32_bytes(l.weight.as_slice().expect("standard layout")),
                ),
                (
                    format!("{prefix}layers.{i}.bias"),
                    vec![l.bias.len()],
                    f32_bytes(l.bias.as_slice().expect("contiguous")),
                ),
            ]
        })
        .collect()
}

/// The tensor names [`head_tensors`] writes for a head of `config`.
fn tensor_names<'a>(prefix: &'a str, config: &HeadConfig) -> impl Iterator<Item = String> + 'a {
    (0..config.layer_shapes().len()).flat_map(move |i| {
        [
            format!("{prefix}layers.{i}.weight"),
            format!("{prefix}layers.{i}.bias"),
        ]
    })
}

/// Serialises weights to safetensors bytes.
pub fn to_bytes(w: &Weights) -> Result<Vec<u8>> {
    to_bytes_with_metadata(w, &[])
}

/// Like [`to_bytes`], with extra `__metadata__` entries beside the standard ones (the sync
/// protocol's `base_version` and `n_examples` ride on a delta this way). An extra key that
/// names a standard entry is refused: it would silently change what the file describes.
pub fn to_bytes_with_metadata(w: &Weights, extra: &[(&str, String)]) -> Result<Vec<u8>> {
    if !w.head.is_finite()
        || w.exposure_head.as_ref().is_some_and(|e| !e.is_finite())
        || w.personal.as_ref().is_some_and(|p| !p.head.is_finite())
    {
        return Err(Error::NonFinite {
            what: "weights to save".into(),
            index: 0,
        });
    }
    let c = &w.head.config;
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), FORMAT.to_string());
    meta.insert("schema_version".to_string(), SCHEMA_VERSION.to_string());
    meta.insert("dim".to_string(), c.dim.to_string());
    meta.insert(
        "hidden".to_string(),
        serde_json::to_string(&c.hidden).expect("a list of integers serialises"),
    );
    meta.insert("activation".to_string(), c.activation.name().to_string());
    meta.insert("outputs".to_string(), c.outputs.to_string());
    meta.insert("version".to_string(), w.version.to_string());
    if let Some(o) = w.objective {
        meta.insert("objective".to_string(), o.name().to_string());
    }
    for (key, value) in extra {
        if meta.insert(key.to_string(), value.clone()).is_some()
            || *key == "exposure_dim"
            || PERSONAL_KEYS.contains(key)
        {
            return Err(Error::InvalidConfig(format!(
                "extra metadata key '{key}' is reserved"
            )));
        }
    }
    let mut tensors = head_tensors("", &w.head);
    if let Some(e) = &w.exposure_head {
        meta.insert("exposure_dim".to_string(), e.config.dim.to_string());
        tensors.extend(head_tensors("exposure.", e));
    }
    if let Some(p) = &w.personal {
        // Floats as Rust's shortest round-trip decimal: a reload gives the same bits.
        meta.insert("personal".to_string(), p.kind.name().to_string());
        meta.insert("personal_blend".to_string(), p.blend.to_string());
        meta.insert(
            "personal_blend_loss".to_string(),
            serde_json::to_string(&p.blend_loss).expect("finite floats serialise"),
        );
        meta.insert("personal_examples".to_string(), p.examples.to_string());
        meta.insert("personal_share".to_string(), p.share.to_string());
        tensors.extend(head_tensors("personal.", &p.head));
    }
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, shape, data)| {
            (
                name.clone(),
                TensorView::new(Dtype::F32, shape.clone(), data)
                    .expect("sizes match by construction"),
            )
        })
        .collect();
    let bytes = safetensors::serialize(views, Some(meta))
        .map_err(|e| Error::CorruptWeights(format!("cannot serialise: {e}")))?;
    Ok(canonical_metadata(bytes))
}

/// The same file with its `__metadata__` keys sorted. safetensors writes them in `HashMap`
/// order, which differs from run to run; sorted, equal weights give equal bytes (what the
/// browser's bit-for-bit restore check and content hashes rely on). Sorting keeps the
/// header's length, so the data offsets and padding stay valid.
fn canonical_metadata(mut bytes: Vec<u8>) -> Vec<u8> {
    let Some(len) = bytes
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(|b| u64::from_le_bytes(b) as usize)
    else {
        return bytes;
    };
    let Some(header) = bytes.get(8..8 + len) else {
        return bytes;
    };
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(header) else {
        return bytes;
    };
    if let Some(meta) = value
        .get_mut("__metadata__")
        .and_then(serde_json::Value::as_object_mut)
    {
        let mut entries: Vec<(String, serde_json::Value)> =
            std::mem::take(meta).into_iter().collect();
        crate::math::sort_by(&mut entries, |a, b| a.0.cmp(&b.0));
        meta.extend(entries);
    }
    match serde_json::to_vec(&value) {
        Ok(json) if json.len() <= len => {
            // Same length in practice; pad with spaces as safetensors does, if ever shorter.
            let padded = json.into_iter().chain(std::iter::repeat(b' '));
            for (slot, b) in bytes[8..8 + len].iter_mut().zip(padded) {
                *slot = b;
            }
            bytes
        }
        _ => bytes,
    }
}

fn meta_get<'a>(meta: &'a HashMap<String, String>, key: &str) -> Result<&'a str> {
    meta.get(key)
        .map(String::as_str)
        .ok_or_else(|| Error::CorruptWeights(format!("metadata has no '{key}'")))
}

/// A JSON list of numbers as written by [`to_bytes`], parsed by Rust's float parser, which is
/// exact (serde_json's default one is only within an ulp): a reload gives the same bits.
fn float_list(text: &str) -> Result<Vec<f64>> {
    let not_a_list =
        || Error::CorruptWeights("metadata 'personal_blend_loss' is not a list".into());
    let inner = text
        .trim()
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .ok_or_else(not_a_list)?;
    if inner.trim().is_empty() {
        return Ok(Vec::new());
    }
    inner
        .split(',')
        .map(|v| v.trim().parse::<f64>().map_err(|_| not_a_list()))
        .collect()
}

fn meta_num<T: std::str::FromStr>(meta: &HashMap<String, String>, key: &str) -> Result<T> {
    meta_get(meta, key)?
        .parse()
        .map_err(|_| Error::CorruptWeights(format!("metadata '{key}' is not a number")))
}

/// An integer entry, in the one spelling [`to_bytes`] writes.
fn meta_count<T: TryFrom<u64>>(meta: &HashMap<String, String>, key: &str) -> Result<T> {
    parse_count(meta_get(meta, key)?)
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| {
            Error::CorruptWeights(format!("metadata '{key}' is not a count in decimal digits"))
        })
}

/// Reads an f32 tensor of an exact shape.
pub(crate) fn read_f32(st: &SafeTensors<'_>, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let values = read_f32_any(st, name, shape)?;
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::CorruptWeights(format!(
            "tensor '{name}' has a non-finite value at {i}"
        )));
    }
    Ok(values)
}

/// Reads an f32 tensor of an exact shape, non-finite values included.
fn read_f32_any(st: &SafeTensors<'_>, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let t = st
        .tensor(name)
        .map_err(|_| Error::CorruptWeights(format!("tensor '{name}' is missing")))?;
    if t.dtype() != Dtype::F32 {
        return Err(Error::CorruptWeights(format!(
            "tensor '{name}' is {:?}, expected F32",
            t.dtype()
        )));
    }
    if t.shape() != shape {
        return Err(Error::IncompatibleWeights(format!(
            "tensor '{name}' has shape {:?}, expected {shape:?}",
            t.shape()
        )));
    }
    let values: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(values)
}

/// Whether reading refuses NaN and ±Inf as corruption ([`from_bytes`]) or hands them to a
/// caller that reports them itself ([`parse`]: the sync server answers them with their own code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Values {
    Finite,
    Any,
}

fn read_head(
    st: &SafeTensors<'_>,
    prefix: &str,
    config: HeadConfig,
    values: Values,
) -> Result<Head> {
    config
        .validate()
        .map_err(|e| Error::CorruptWeights(format!("metadata describes an invalid head: {e}")))?;
    let layers = config
        .layer_shapes()
        .iter()
        .enumerate()
        .map(|(i, &(fan_in, fan_out))| {
            let read = match values {
                Values::Finite => read_f32,
                Values::Any => read_f32_any,
            };
            let w = read(
                st,
                &format!("{prefix}layers.{i}.weight"),
                &[fan_out, fan_in],
            )?;
            let b = read(st, &format!("{prefix}layers.{i}.bias"), &[fan_out])?;
            Ok(Linear {
                weight: Array2::from_shape_vec((fan_out, fan_in), w).expect("shape checked"),
                bias: Array1::from(b),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Head { config, layers })
}

/// Parses safetensors bytes written by [`to_bytes`] (or any tool following the same layout).
pub fn from_bytes(bytes: &[u8]) -> Result<Weights> {
    parse(bytes, Values::Finite).map(|(w, _)| w)
}

/// Parses like [`from_bytes`] and also returns the whole `__metadata__` block, so that a
/// format layered on this one (the sync protocol's deltas) reads its own keys from it.
pub fn parse(bytes: &[u8], values: Values) -> Result<(Weights, HashMap<String, String>)> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::CorruptWeights(format!("not a readable safetensors file: {e}")))?;
    let (_, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| Error::CorruptWeights(e.to_string()))?;
    strict::check_unique_keys(bytes)?;
    let meta = header
        .metadata()
        .clone()
        .ok_or_else(|| Error::CorruptWeights("no __metadata__ block".into()))?;
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(Error::IncompatibleWeights(format!(
            "not a {FORMAT} weights file (metadata 'format' missing or different)"
        )));
    }
    let schema: u32 = meta_count(&meta, "schema_version")?;
    if schema != SCHEMA_VERSION {
        return Err(Error::IncompatibleWeights(format!(
            "schema version {schema}, this build reads {SCHEMA_VERSION}"
        )));
    }
    let hidden: Vec<usize> = serde_json::from_str(meta_get(&meta, "hidden")?)
        .map_err(|_| Error::CorruptWeights("metadata 'hidden' is not a list of sizes".into()))?;
    let config = HeadConfig {
        dim: meta_count(&meta, "dim")?,
        hidden,
        activation: Activation::parse(meta_get(&meta, "activation")?)
            .map_err(|e| Error::CorruptWeights(e.to_string()))?,
        outputs: meta_count(&meta, "outputs")?,
    };
    let head = read_head(&st, "", config.clone(), values)?;
    let exposure_head = match meta.get("exposure_dim") {
        Some(_) => Some(read_head(
            &st,
            "exposure.",
            HeadConfig::new(meta_count(&meta, "exposure_dim")?, &[]),
            values,
        )?),
        None => None,
    };
    let objective = meta
        .get("objective")
        .map(|o| ObjectiveKind::parse(o))
        .transpose()
        .map_err(|e| Error::CorruptWeights(e.to_string()))?;
    let personal = match meta.get("personal") {
        Some(kind) => {
            let kind = Personalization::parse(kind)
                .map_err(|e| Error::CorruptWeights(format!("metadata 'personal': {e}")))?;
            let blend_loss = float_list(meta_get(&meta, "personal_blend_loss")?)?;
            let p = Personal {
                kind,
                head: read_head(
                    &st,
                    "personal.",
                    Personal::head_config(kind, &config)
                        .map_err(|e| Error::CorruptWeights(format!("personal part: {e}")))?,
                    Values::Finite,
                )?,
                blend: meta_num(&meta, "personal_blend")?,
                blend_loss,
                examples: meta_count(&meta, "personal_examples")?,
                share: meta_num(&meta, "personal_share")?,
            };
            p.validate(&config).map_err(|e| match e {
                Error::IncompatibleWeights(m) => Error::CorruptWeights(m),
                other => other,
            })?;
            Some(p)
        }
        None => None,
    };
    let mut expected: HashSet<String> = tensor_names("", &head.config).collect();
    if let Some(e) = &exposure_head {
        expected.extend(tensor_names("exposure.", &e.config));
    }
    if let Some(p) = &personal {
        expected.extend(tensor_names("personal.", &p.head.config));
    }
    strict::check_tensor_names(st.names(), &expected)?;
    let weights = Weights {
        head,
        exposure_head,
        objective,
        version: meta_count(&meta, "version")?,
        personal,
    };
    Ok((weights, meta))
}

/// Like [`from_bytes`], and checks the head has the expected shape.
pub fn from_bytes_expecting(bytes: &[u8], expected: &HeadConfig) -> Result<Weights> {
    let w = from_bytes(bytes)?;
    if &w.head.config != expected {
        return Err(Error::IncompatibleWeights(format!(
            "file holds a head {:?}, expected {:?}",
            w.head.config, expected
        )));
    }
    Ok(w)
}

/// Writes atomically: a temporary file beside the target, then a rename, so a crash never
/// leaves half a weights file under the real name.
pub fn save(path: &Path, w: &Weights) -> Result<()> {
    let bytes = to_bytes(w)?;
    let tmp = path.with_extension("safetensors.tmp");
    std::fs::write(&tmp, &bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

pub fn load(path: &Path) -> Result<Weights> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    from_bytes(&bytes)
}
