//! The whole protocol in memory: participants and the aggregator with a scripted relay in
//! between, against the plain f64 sum of the clipped deltas as the independent reference.

use std::collections::BTreeMap;

use super::aggregator::{self, RoundRecord};
use super::messages::*;
use super::*;

const MODEL: &str = "m";
const LEN: usize = 40;

fn params(round: u64, cohort: u32, threshold: u32) -> RoundParams {
    RoundParams {
        round,
        base_version: 3,
        cohort,
        threshold,
        num_params: LEN as u64,
        clip_norm: 1.0,
    }
}

/// Deterministic deltas; the third is over the clip norm (clipped by the participant).
fn deltas(n: usize) -> Vec<Vec<f32>> {
    let mut rng = crate::rng::Rng::new(17);
    (0..n)
        .map(|i| {
            let scale = if i == 2 { 3.0 } else { 0.1 };
            (0..LEN).map(|_| (scale * rng.normal()) as f32).collect()
        })
        .collect()
}

/// Σ clip(δ_u, C) over `members`, summed in f64. The clip is the client's own f32 clip
/// (`delta::clip`, what a plain-mode push carries too): the reference isolates what secure
/// aggregation adds, quantisation and masking.
fn reference_sum(deltas: &[Vec<f32>], members: &[u32], clip: f64) -> Vec<f64> {
    let mut sum = vec![0.0; LEN];
    for &u in members {
        let mut d = deltas[u as usize].clone();
        crate::sync::delta::clip(&mut d, clip).unwrap();
        for (s, v) in sum.iter_mut().zip(&d) {
            *s += f64::from(*v);
        }
    }
    sum
}

/// A relay that plays the server: collects each phase's messages and builds the views.
struct Round {
    params: RoundParams,
    members: Vec<Member>,
    parts: Vec<Participant>,
    uploads: BTreeMap<u32, ShareUpload>,
    inputs: BTreeMap<u32, Vec<u32>>,
    shared: Vec<u32>,
    survivors: Vec<u32>,
}

impl Round {
    fn new(p: RoundParams, n: usize) -> Round {
        let parts: Vec<Participant> = (0..n)
            .map(|_| Participant::new(MODEL, p.clone()).unwrap())
            .collect();
        let members = parts
            .iter()
            .enumerate()
            .map(|(i, part)| {
                let ad = part.advertise();
                aggregator::check_advertise(&p, &ad).unwrap();
                Member {
                    index: i as u32,
                    cipher_pk: ad.cipher_pk,
                    mask_pk: ad.mask_pk,
                    seed_commitment: ad.seed_commitment,
                }
            })
            .collect();
        Round {
            params: p,
            members,
            parts,
            uploads: BTreeMap::new(),
            inputs: BTreeMap::new(),
            shared: vec![],
            survivors: vec![],
        }
    }

    fn view(&self, phase: Phase, you: u32) -> RoundView {
        RoundView {
            model: MODEL.into(),
            params: self.params.clone(),
            phase,
            you: Some(you),
            members: self.members.clone(),
            shared: self.shared.clone(),
            survivors: self.survivors.clone(),
            failure: None,
            released_version: None,
        }
    }

    fn share(&mut self, who: &[u32]) {
        for &u in who {
            let v = self.view(Phase::Share, u);
            let up = self.parts[u as usize].share(&v).unwrap();
            aggregator::check_share_upload(&self.params, &self.members, u, &up).unwrap();
            self.uploads.insert(u, up);
        }
        self.shared = who.to_vec();
    }

    fn for_you(&self, to: u32) -> SharesForYou {
        SharesForYou {
            round: self.params.round,
            to,
            shares: self
                .uploads
                .values()
                .flat_map(|u| u.shares.iter().filter(|s| s.to == to).cloned())
                .collect(),
        }
    }

    fn input(&mut self, who: &[u32], deltas: &[Vec<f32>]) {
        for &u in who {
            let v = self.view(Phase::Input, u);
            let fy = self.for_you(u);
            let m = self.parts[u as usize]
                .mask(&v, &fy, &deltas[u as usize])
                .unwrap();
            let words = aggregator::check_masked_input(&self.params, u, &m).unwrap();
            self.inputs.insert(u, words);
        }
        self.survivors = who.to_vec();
    }

    fn unmask(&mut self, who: &[u32]) -> Vec<UnmaskResponse> {
        who.iter()
            .map(|&u| {
                let v = self.view(Phase::Unmask, u);
                let r = self.parts[u as usize].unmask(&v).unwrap();
                aggregator::check_unmask(&self.params, &self.shared, &self.survivors, u, &r)
                    .unwrap();
                r
            })
            .collect()
    }

    fn sum(&self, responses: &[UnmaskResponse]) -> SecAggResult<Vec<f64>> {
        aggregator::unmask_sum(&RoundRecord {
            model: MODEL,
            params: &self.params,
            members: &self.members,
            shared: &self.shared,
            survivors: &self.survivors,
            inputs: &self.inputs,
            responses,
        })
    }
}

fn all(n: u32) -> Vec<u32> {
    (0..n).collect()
}

fn assert_close(got: &[f64], want: &[f64], bound: f64) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= bound,
            "coordinate {i}: {g} vs {w} (bound {bound})"
        );
    }
}

/// The masked inputs sum to the clipped deltas' sum within the stated bound, n·1/(2s) per
/// coordinate; no masked input is its quantised delta.
#[test]
fn ten_members_sum_to_the_plain_sum_within_the_quantisation_bound() {
    let d = deltas(10);
    let mut r = Round::new(params(1, 10, 7), 10);
    r.share(&all(10));
    r.input(&all(10), &d);
    for (u, y) in &r.inputs {
        let q = r.parts[*u as usize]
            .quantizer()
            .encode(&d[*u as usize])
            .unwrap();
        assert_ne!(y, &q);
    }
    let responses = r.unmask(&all(10));
    let sum = r.sum(&responses).unwrap();
    let bound = 10.0 * r.parts[0].quantizer().max_mean_error();
    assert_close(&sum, &reference_sum(&d, &all(10), 1.0), bound);
    // And the bound is not vacuous: one quantum off would be seen.
    assert!(bound < 1e-7);
}

/// Three survivors leave before unmasking: the other seven (= t) complete the round, the
/// sum still holds all ten inputs.
#[test]
fn three_dropouts_after_their_input_still_complete() {
    let d = deltas(10);
    let mut r = Round::new(params(2, 10, 7), 10);
    r.share(&all(10));
    r.input(&all(10), &d);
    let responses = r.unmask(&[0, 2, 3, 5, 6, 8, 9]);
    let sum = r.sum(&responses).unwrap();
    let bound = 10.0 * r.parts[0].quantizer().max_mean_error();
    assert_close(&sum, &reference_sum(&d, &all(10), 1.0), bound);
}

/// Two members share but never send their input: their mask keys are reconstructed and the
/// sum is the other eight's.
#[test]
fn members_that_drop_before_their_input_are_unmasked_out() {
    let d = deltas(10);
    let mut r = Round::new(params(3, 10, 7), 10);
    r.share(&all(10));
    let survivors = [0, 1, 2, 4, 5, 6, 7, 9];
    r.input(&survivors, &d);
    let responses = r.unmask(&survivors);
    assert!(responses.iter().all(|resp| resp.key_shares.len() == 2));
    let sum = r.sum(&responses).unwrap();
    let bound = 8.0 * r.parts[0].quantizer().max_mean_error();
    assert_close(&sum, &reference_sum(&d, &survivors, 1.0), bound);
}

/// Below the threshold nothing is reconstructed: six answers of t = 7 give no sum, and a
/// member shown fewer than t survivors reveals nothing.
#[test]
fn below_the_threshold_the_round_fails_and_reveals_nothing() {
    let d = deltas(10);
    let mut r = Round::new(params(4, 10, 7), 10);
    r.share(&all(10));
    r.input(&all(10), &d);
    let responses = r.unmask(&[0, 1, 2, 3, 4, 5]);
    assert!(matches!(
        r.sum(&responses),
        Err(SecAggError::BelowThreshold {
            survivors: 6,
            threshold: 7
        })
    ));

    let mut r = Round::new(params(5, 10, 7), 10);
    r.share(&all(10));
    r.input(&[0, 1, 2, 3, 4, 5], &d);
    let view = r.view(Phase::Unmask, 0);
    let err = r.parts[0].unmask(&view).unwrap_err();
    assert_eq!(err.code(), "secagg_below_threshold");
    // Too few sharers: no input is sent either.
    let mut r = Round::new(params(6, 10, 7), 10);
    r.share(&[0, 1, 2, 3, 4, 5]);
    let (v, fy) = (r.view(Phase::Input, 0), r.for_you(0));
    let err = r.parts[0].mask(&v, &fy, &d[0]).unwrap_err();
    assert_eq!(err.code(), "secagg_below_threshold");
}

/// A relay that drops one member's share to another, or tampers with one, or passes one of
/// another round: the receiving member sends no input (typed error).
#[test]
fn dropped_tampered_and_foreign_shares_stop_the_input() {
    let d = deltas(4);
    let mut r = Round::new(params(7, 4, 3), 4);
    r.share(&all(4));
    let v = r.view(Phase::Input, 1);
    let mut fy = r.for_you(1);
    let dropped = fy.shares.remove(0);
    assert!(matches!(
        r.parts[1].mask(&v, &fy, &d[1]),
        Err(SecAggError::MissingShare(_))
    ));
    let mut tampered = fy.clone();
    let mut c = dropped.ciphertext.clone().into_bytes();
    c[0] = if c[0] == b'0' { b'1' } else { b'0' };
    tampered.shares.push(EncryptedShare {
        ciphertext: String::from_utf8(c).unwrap(),
        ..dropped.clone()
    });
    assert!(matches!(
        r.parts[1].mask(&v, &tampered, &d[1]),
        Err(SecAggError::ShareAuthentication(_))
    ));
    // The same ciphertext relabelled as coming from another member: its key and AAD differ.
    let mut relabelled = r.for_you(1);
    let from = relabelled.shares[0].from;
    let other = relabelled
        .shares
        .iter()
        .position(|s| s.from != from)
        .unwrap();
    relabelled.shares[other].ciphertext = relabelled.shares[0].ciphertext.clone();
    assert!(matches!(
        r.parts[1].mask(&v, &relabelled, &d[1]),
        Err(SecAggError::ShareAuthentication(_))
    ));
    let mut foreign = r.for_you(1);
    foreign.round = 8;
    assert_eq!(
        r.parts[1].mask(&v, &foreign, &d[1]).unwrap_err(),
        SecAggError::WrongRound { got: 8, want: 7 }
    );
    // Shares of round 7 relayed into a round 8 (same keys, even): they do not open.
    let mut r8 = Round::new(params(8, 4, 3), 4);
    r8.share(&all(4));
    let v8 = r8.view(Phase::Input, 1);
    let mut stale = r.for_you(1);
    stale.round = 8;
    assert!(matches!(
        r8.parts[1].mask(&v8, &stale, &d[1]),
        Err(SecAggError::ShareAuthentication(_))
    ));
    // The untouched relay still works.
    let arg1 = r.for_you(1);
    assert!(r.parts[1].mask(&v, &arg1, &d[1]).is_ok());
}

/// Masked inputs, uploads and responses of another round, or with malformed content, are
/// refused by the aggregator's checks; views of another round or phase by the participant.
#[test]
fn malformed_and_wrong_round_messages_are_typed_errors() {
    let d = deltas(4);
    let mut r = Round::new(params(9, 4, 3), 4);
    r.share(&all(4));
    let v = r.view(Phase::Input, 0);
    let arg1 = r.for_you(0);
    let m = r.parts[0].mask(&v, &arg1, &d[0]).unwrap();
    let p10 = params(10, 4, 3);
    assert_eq!(
        aggregator::check_masked_input(&p10, 0, &m)
            .unwrap_err()
            .code(),
        "secagg_wrong_round"
    );
    assert_eq!(
        aggregator::check_masked_input(&r.params, 1, &m)
            .unwrap_err()
            .code(),
        "secagg_malformed"
    );
    let mut short = m.clone();
    short.values.truncate(16);
    assert_eq!(
        aggregator::check_masked_input(&r.params, 0, &short)
            .unwrap_err()
            .code(),
        "secagg_malformed"
    );
    let mut upload = r.uploads[&0].clone();
    upload.shares.pop();
    assert!(aggregator::check_share_upload(&r.params, &r.members, 0, &upload).is_err());
    let mut v_wrong = r.view(Phase::Input, 0);
    v_wrong.params.round = 10;
    let arg1 = r.for_you(1);
    assert_eq!(
        r.parts[1].mask(&v_wrong, &arg1, &d[1]).unwrap_err(),
        SecAggError::WrongRound { got: 10, want: 9 }
    );
    let v_phase = r.view(Phase::Share, 1);
    let arg1 = r.for_you(1);
    assert!(matches!(
        r.parts[1].mask(&v_phase, &arg1, &d[1]),
        Err(SecAggError::WrongPhase { .. })
    ));
    let mut no_you = r.view(Phase::Input, 1);
    no_you.you = None;
    let arg1 = r.for_you(1);
    assert_eq!(
        r.parts[1].mask(&no_you, &arg1, &d[1]).unwrap_err().code(),
        "secagg_not_in_cohort"
    );
    let mut bad_params = r.params.clone();
    bad_params.threshold = 2;
    assert_eq!(
        Participant::new(MODEL, bad_params).err().unwrap().code(),
        "secagg_invalid_params"
    );
    // A wrong-length delta is refused before anything is sent.
    let arg1 = r.view(Phase::Input, 2);
    let arg2 = r.for_you(2);
    assert!(r.parts[2].mask(&arg1, &arg2, &d[2][..3]).is_err());
}

/// Replays and equivocation: asking a step again with the same view answers the same
/// message; with other survivors, an error — a member never reveals both secrets of one
/// member. A response revealing both is refused by the aggregator.
#[test]
fn replays_answer_the_same_and_equivocation_is_refused() {
    let d = deltas(5);
    let mut r = Round::new(params(11, 5, 3), 5);
    r.share(&all(5));
    let arg1 = r.view(Phase::Share, 0);
    let again = r.parts[0].share(&arg1).unwrap();
    assert_eq!(again, r.uploads[&0]);
    r.input(&[0, 1, 2, 3], &d);
    let v = r.view(Phase::Input, 0);
    let fy = r.for_you(0);
    let first = r.parts[0].mask(&v, &fy, &d[0]).unwrap();
    assert_eq!(
        first.values,
        MaskedInput::encode(11, 0, &r.inputs[&0]).values
    );
    let responses = r.unmask(&[0, 1, 2]);
    let arg1 = r.view(Phase::Unmask, 0);
    assert_eq!(r.parts[0].unmask(&arg1).unwrap(), responses[0]);
    // The server now claims member 3 dropped: member 0 would reveal 3's key share while
    // having revealed its seed share. Refused.
    let mut lying = r.view(Phase::Unmask, 0);
    lying.survivors = vec![0, 1, 2];
    assert_eq!(
        r.parts[0].unmask(&lying).unwrap_err().code(),
        "secagg_equivocation"
    );
    let mut both = responses[1].clone();
    both.key_shares.push(RevealedShare {
        of: 3,
        share: both.seed_shares[3].share.clone(),
    });
    assert_eq!(
        aggregator::check_unmask(&r.params, &r.shared, &r.survivors, 1, &both)
            .unwrap_err()
            .code(),
        "secagg_equivocation"
    );
    // Member 4 shared but sent no input: it is a dropout, and the sum is the other four's.
    let sum = r.sum(&responses).unwrap();
    let bound = 4.0 * r.parts[0].quantizer().max_mean_error();
    assert_close(&sum, &reference_sum(&d, &[0, 1, 2, 3], 1.0), bound);
}

/// A wrong share in an unmask response (a lying member) fails the reconstruction check: an
/// error, never a wrong sum.
#[test]
fn a_wrong_revealed_share_aborts_instead_of_skewing_the_sum() {
    let d = deltas(4);
    let mut r = Round::new(params(12, 4, 3), 4);
    r.share(&all(4));
    r.input(&[0, 1, 2], &d);
    let mut responses = r.unmask(&[0, 1, 2]);
    let good = r.sum(&responses).unwrap();
    assert_close(
        &good,
        &reference_sum(&d, &[0, 1, 2], 1.0),
        3.0 * r.parts[0].quantizer().max_mean_error(),
    );
    for (seeds, code) in [
        (true, "secagg_reconstruction"),
        (false, "secagg_reconstruction"),
    ] {
        let mut bad = responses.clone();
        let list = if seeds {
            &mut bad[1].seed_shares
        } else {
            &mut bad[1].key_shares
        };
        let mut bytes = super::crypto::from_hex(&list[0].share).unwrap();
        bytes[7] ^= 0x40;
        list[0].share = super::crypto::to_hex(&bytes);
        assert_eq!(r.sum(&bad).unwrap_err().code(), code);
    }
    // Two responses from one member, or one from a non-survivor: refused.
    responses.push(responses[0].clone());
    assert_eq!(r.sum(&responses).unwrap_err().code(), "secagg_malformed");
}
