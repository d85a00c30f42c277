//! The round's wire messages (JSON; keys, shares and vectors as lowercase hex) and paths.
//! Client and server compile this one file. Members are named by their index in the round's
//! roster, never by their account: other clients learn only keys and indices.

use serde::{Deserialize, Serialize};

use super::crypto::{from_hex, from_hex_32, to_hex};
use super::error::{SecAggError, SecAggResult};
use super::quantize::Quantizer;

/// `GET` the round a client should take part in now (created when none is open).
pub fn current_path(model: &str) -> String {
    format!("/v1/models/{model}/secagg")
}

/// `GET` round `round`'s view (its phase, survivors, outcome).
pub fn round_path(model: &str, round: u64) -> String {
    format!("/v1/models/{model}/secagg/{round}")
}

/// `POST` [`Advertise`], [`ShareUpload`], [`MaskedInput`], [`UnmaskResponse`] to
/// `…/{round}/{advertise,shares,input,unmask}`; `GET …/{round}/shares` is [`SharesForYou`].
pub fn step_path(model: &str, round: u64, step: &str) -> String {
    format!("/v1/models/{model}/secagg/{round}/{step}")
}

/// The phases, in order; a round ends `done` (a new global was released) or `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Clients join with their public keys.
    Advertise,
    /// Members upload their encrypted Shamir shares, one per other member.
    Share,
    /// Members who shared upload their masked inputs.
    Input,
    /// Surviving members reveal the shares that remove the masks.
    Unmask,
    Done,
    Failed,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Advertise => "advertise",
            Phase::Share => "share",
            Phase::Input => "input",
            Phase::Unmask => "unmask",
            Phase::Done => "done",
            Phase::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        [
            Phase::Advertise,
            Phase::Share,
            Phase::Input,
            Phase::Unmask,
            Phase::Done,
            Phase::Failed,
        ]
        .into_iter()
        .find(|p| p.name() == s)
    }
}

/// Fixed when a round opens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundParams {
    pub round: u64,
    /// The global version when the round opened.
    pub base_version: u64,
    /// The most members the round admits (the quantiser's bound `n`).
    pub cohort: u32,
    /// Shamir threshold `t`: every phase needs at least `t` survivors.
    pub threshold: u32,
    /// Length of the vectors (the model's parameter count).
    pub num_params: u64,
    /// Clients clip their delta to this L2 norm before quantising.
    pub clip_norm: f64,
}

impl RoundParams {
    /// The checks every party makes before trusting the parameters: `t` is a strict
    /// majority of the cohort (so that a server which tells different members different
    /// survivor sets cannot collect `t` shares of both secrets of anyone), and within the
    /// quantiser's and Shamir's ranges.
    pub fn validate(&self) -> SecAggResult<Quantizer> {
        let q = Quantizer::new(self.clip_norm, self.cohort)?;
        if self.threshold as u64 * 2 <= self.cohort as u64 || self.threshold > self.cohort {
            return Err(SecAggError::InvalidParams(format!(
                "threshold {} is not a strict majority of the cohort {}",
                self.threshold, self.cohort
            )));
        }
        if self.num_params == 0 || self.num_params > (1 << 28) {
            return Err(SecAggError::InvalidParams(format!(
                "{} parameters",
                self.num_params
            )));
        }
        Ok(q)
    }
}

/// Joining: two fresh X25519 public keys (one encrypts shares, one agrees on masks) and the
/// commitment to the self-mask seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Advertise {
    pub round: u64,
    pub cipher_pk: String,
    pub mask_pk: String,
    pub seed_commitment: String,
}

impl Advertise {
    pub fn keys(&self) -> SecAggResult<([u8; 32], [u8; 32], [u8; 32])> {
        Ok((
            from_hex_32(&self.cipher_pk)?,
            from_hex_32(&self.mask_pk)?,
            from_hex_32(&self.seed_commitment)?,
        ))
    }
}

/// One member of the roster, as every member sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub index: u32,
    pub cipher_pk: String,
    pub mask_pk: String,
    pub seed_commitment: String,
}

/// A round as the server shows it to one client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundView {
    pub model: String,
    pub params: RoundParams,
    pub phase: Phase,
    /// The asking client's index, if it joined.
    pub you: Option<u32>,
    /// The roster, once the advertise phase closed (empty before).
    pub members: Vec<Member>,
    /// Members whose shares the server holds (U2), once the share phase closed.
    pub shared: Vec<u32>,
    /// Members whose masked inputs the server holds (U3), once the input phase closed: in a
    /// `done` round, exactly the members whose inputs the released sum contains.
    pub survivors: Vec<u32>,
    /// Why a `failed` round failed.
    pub failure: Option<String>,
    /// The global version a `done` round released.
    pub released_version: Option<u64>,
}

/// One encrypted share message `from` → `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptedShare {
    pub from: u32,
    pub to: u32,
    pub ciphertext: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareUpload {
    pub round: u64,
    pub from: u32,
    /// One per other member of the roster.
    pub shares: Vec<EncryptedShare>,
}

/// The shares addressed to the asking member, from the members in `shared`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharesForYou {
    pub round: u64,
    pub to: u32,
    pub shares: Vec<EncryptedShare>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskedInput {
    pub round: u64,
    pub from: u32,
    /// `num_params` little-endian u32 words, hex.
    pub values: String,
}

impl MaskedInput {
    pub fn encode(round: u64, from: u32, words: &[u32]) -> Self {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        MaskedInput {
            round,
            from,
            values: to_hex(&bytes),
        }
    }

    /// The words, which must be exactly `len`.
    pub fn words(&self, len: u64) -> SecAggResult<Vec<u32>> {
        if self.values.len() as u64 != len.saturating_mul(8) {
            return Err(SecAggError::Malformed(format!(
                "a masked input of {} hex digits, the round's vectors have {len} words",
                self.values.len()
            )));
        }
        Ok(from_hex(&self.values)?
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }
}

/// A revealed share of member `of`'s secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevealedShare {
    pub of: u32,
    pub share: String,
}

/// A survivor's answer in the unmask phase: for each member that survived the input phase
/// its self-mask seed share, for each that shared but dropped its mask-key share — never
/// both for one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnmaskResponse {
    pub round: u64,
    pub from: u32,
    pub seed_shares: Vec<RevealedShare>,
    pub key_shares: Vec<RevealedShare>,
}

/// A strictly increasing list of indices, each below `bound`.
pub fn check_indices(what: &str, list: &[u32], bound: usize) -> SecAggResult<()> {
    if list.windows(2).any(|w| w[0] >= w[1]) || list.last().is_some_and(|&i| i as usize >= bound) {
        return Err(SecAggError::Malformed(format!(
            "{what} is not a sorted list of distinct members"
        )));
    }
    Ok(())
}
