//! One client's side of a round, without I/O: it turns the server's [`RoundView`]s into the
//! messages to post, and refuses — with a typed error, revealing nothing — any view that
//! would let the server learn more than the sum: a roster that changed, survivor sets that
//! contradict earlier ones or fall below the threshold, a missing or forged share, a message
//! of another round. Keys live in memory for one round only: a client that goes away
//! mid-round is a dropout, and its update joins a later round.
//!
//! Retries: each step's message is kept, and asking again with the same view answers the
//! same bytes (a post whose answer was lost is resent, not recomputed); a different view at a
//! step already answered is an [`SecAggError::Equivocation`].

use std::collections::BTreeMap;

use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use super::crypto::{self, RoundContext};
use super::error::{SecAggError, SecAggResult};
use super::masks;
use super::messages::*;
use super::quantize::Quantizer;
use super::shamir;

/// A roster entry with its keys decoded.
#[derive(Clone)]
pub(crate) struct Keys {
    pub index: u32,
    pub cipher_pk: [u8; 32],
    pub mask_pk: [u8; 32],
    pub commitment: [u8; 32],
}

/// The decoded roster, checked: sorted distinct indices below the cohort, at least `t` and
/// at most the cohort members, and no key used twice (a server replaying one member's keys
/// under another index would double its weight in the reconstruction).
pub(crate) fn roster(params: &RoundParams, members: &[Member]) -> SecAggResult<Vec<Keys>> {
    let indices: Vec<u32> = members.iter().map(|m| m.index).collect();
    check_indices("the roster", &indices, params.cohort as usize)?;
    if members.len() < params.threshold as usize {
        return Err(SecAggError::BelowThreshold {
            survivors: members.len(),
            threshold: params.threshold as usize,
        });
    }
    let keys = members
        .iter()
        .map(|m| {
            Ok(Keys {
                index: m.index,
                cipher_pk: crypto::from_hex_32(&m.cipher_pk)?,
                mask_pk: crypto::from_hex_32(&m.mask_pk)?,
                commitment: crypto::from_hex_32(&m.seed_commitment)?,
            })
        })
        .collect::<SecAggResult<Vec<Keys>>>()?;
    let mut seen = std::collections::BTreeSet::new();
    for k in &keys {
        if !seen.insert(k.cipher_pk) || !seen.insert(k.mask_pk) {
            return Err(SecAggError::Malformed(
                "a public key appears twice in the roster".into(),
            ));
        }
    }
    Ok(keys)
}

/// The associated data of the share message `from` → `to` of a round.
pub(crate) fn share_aad(ctx: &RoundContext, from: u32, to: u32) -> Vec<u8> {
    let mut aad = b"tacit-rm secagg share".to_vec();
    aad.extend_from_slice(&(ctx.model.len() as u32).to_le_bytes());
    aad.extend_from_slice(ctx.model.as_bytes());
    aad.extend_from_slice(&ctx.round.to_le_bytes());
    aad.extend_from_slice(&from.to_le_bytes());
    aad.extend_from_slice(&to.to_le_bytes());
    aad
}

/// The shares member `to` holds of member `from`'s two secrets.
struct Held {
    seed: Zeroizing<Vec<u8>>,
    key: Zeroizing<Vec<u8>>,
}

pub struct Participant {
    ctx: RoundContext,
    params: RoundParams,
    quantizer: Quantizer,
    cipher_sk: StaticSecret,
    mask_sk: StaticSecret,
    seed: Zeroizing<[u8; 32]>,
    /// The roster as first seen (with the share step).
    members: Option<Vec<Member>>,
    share_sent: Option<(Vec<Member>, ShareUpload)>,
    input_sent: Option<(Vec<u32>, MaskedInput)>,
    unmask_sent: Option<(Vec<u32>, UnmaskResponse)>,
    held: BTreeMap<u32, Held>,
}

impl Participant {
    /// Fresh keys and self-mask seed for `params`'s round of `model`.
    pub fn new(model: &str, params: RoundParams) -> SecAggResult<Self> {
        let quantizer = params.validate()?;
        Ok(Participant {
            ctx: RoundContext::new(model, params.round),
            params,
            quantizer,
            cipher_sk: crypto::fresh_secret()?,
            mask_sk: crypto::fresh_secret()?,
            seed: crypto::random_32()?,
            members: None,
            share_sent: None,
            input_sent: None,
            unmask_sent: None,
            held: BTreeMap::new(),
        })
    }

    pub fn params(&self) -> &RoundParams {
        &self.params
    }

    pub fn quantizer(&self) -> &Quantizer {
        &self.quantizer
    }

    /// What to post to join.
    pub fn advertise(&self) -> Advertise {
        Advertise {
            round: self.params.round,
            cipher_pk: crypto::to_hex(&crypto::public_of(&self.cipher_sk)),
            mask_pk: crypto::to_hex(&crypto::public_of(&self.mask_sk)),
            seed_commitment: crypto::to_hex(&crypto::commit(&self.seed)),
        }
    }

    /// The view must be of this round of this model, in `phase`, with the parameters we
    /// joined under, and name us; returns our index.
    fn check_view(&self, view: &RoundView, phase: Phase) -> SecAggResult<u32> {
        if view.params.round != self.params.round {
            return Err(SecAggError::WrongRound {
                got: view.params.round,
                want: self.params.round,
            });
        }
        if view.model != self.ctx.model || view.params != self.params {
            return Err(SecAggError::Malformed(
                "the round's parameters changed since joining".into(),
            ));
        }
        if view.phase == Phase::Failed {
            return Err(SecAggError::RoundFailed(
                view.failure
                    .clone()
                    .unwrap_or_else(|| "no reason given".into()),
            ));
        }
        if view.phase != phase {
            return Err(SecAggError::WrongPhase {
                round: self.params.round,
                phase: view.phase.name().into(),
                expected: phase.name().into(),
            });
        }
        let me = view
            .you
            .ok_or(SecAggError::NotInCohort(self.params.round))?;
        if let Some(members) = &self.members {
            if &view.members != members {
                return Err(SecAggError::Equivocation("the roster changed".into()));
            }
        }
        let mine = view
            .members
            .iter()
            .find(|m| m.index == me)
            .ok_or(SecAggError::NotInCohort(self.params.round))?;
        let ad = self.advertise();
        if (&mine.cipher_pk, &mine.mask_pk, &mine.seed_commitment)
            != (&ad.cipher_pk, &ad.mask_pk, &ad.seed_commitment)
        {
            return Err(SecAggError::Malformed(
                "the roster shows other keys under our index".into(),
            ));
        }
        Ok(me)
    }

    /// The share step: Shamir shares of the self-mask seed and of the mask-agreement secret
    /// key, `t` of the roster's size, each member's pair sealed for it alone.
    pub fn share(&mut self, view: &RoundView) -> SecAggResult<ShareUpload> {
        if let Some((roster_seen, sent)) = &self.share_sent {
            return if *roster_seen == view.members {
                Ok(sent.clone())
            } else {
                Err(SecAggError::Replayed("the share step was answered".into()))
            };
        }
        let me = self.check_view(view, Phase::Share)?;
        let keys = roster(&self.params, &view.members)?;
        let t = self.params.threshold as usize;
        // Shares at x = 1 … (largest index + 1); member i takes the one at x = i + 1.
        let n = keys.last().map_or(0, |k| k.index as usize + 1);
        let seed_shares = shamir::split(&self.seed, n, t)?;
        let key_bytes = Zeroizing::new(self.mask_sk.to_bytes());
        let key_shares = shamir::split(&key_bytes, n, t)?;
        let mut shares = Vec::with_capacity(keys.len());
        for k in &keys {
            let (seed, key) = (
                &seed_shares[k.index as usize],
                &key_shares[k.index as usize],
            );
            if k.index == me {
                self.held.insert(
                    me,
                    Held {
                        seed: seed.clone(),
                        key: key.clone(),
                    },
                );
                continue;
            }
            let shared = crypto::agree(&self.cipher_sk, &k.cipher_pk)?;
            let aead_key = crypto::share_key(&shared, &self.ctx, me, k.index);
            let mut plain = Zeroizing::new(Vec::with_capacity(2 * shamir::SHARE_LEN));
            plain.extend_from_slice(seed);
            plain.extend_from_slice(key);
            shares.push(EncryptedShare {
                from: me,
                to: k.index,
                ciphertext: crypto::to_hex(&crypto::seal(
                    &aead_key,
                    &plain,
                    &share_aad(&self.ctx, me, k.index),
                )),
            });
        }
        let upload = ShareUpload {
            round: self.params.round,
            from: me,
            shares,
        };
        self.members = Some(view.members.clone());
        self.share_sent = Some((view.members.clone(), upload.clone()));
        Ok(upload)
    }

    /// The input step: opens every share addressed to us by the members who shared (all of
    /// them present and authentic, or nothing is sent), then masks `delta` — clipped to the
    /// round's norm and quantised — with our self mask and a pairwise mask per sharer.
    pub fn mask(
        &mut self,
        view: &RoundView,
        for_you: &SharesForYou,
        delta: &[f32],
    ) -> SecAggResult<MaskedInput> {
        if let Some((shared, sent)) = &self.input_sent {
            return if *shared == view.shared {
                Ok(sent.clone())
            } else {
                Err(SecAggError::Equivocation(
                    "the sharers changed since our input".into(),
                ))
            };
        }
        if self.share_sent.is_none() {
            return Err(SecAggError::WrongPhase {
                round: self.params.round,
                phase: "input".into(),
                expected: "share (not yet answered)".into(),
            });
        }
        let me = self.check_view(view, Phase::Input)?;
        let keys = roster(&self.params, &view.members)?;
        check_indices("the sharers", &view.shared, self.params.cohort as usize)?;
        if !view
            .shared
            .iter()
            .all(|i| keys.iter().any(|k| k.index == *i))
        {
            return Err(SecAggError::Malformed("a sharer outside the roster".into()));
        }
        if !view.shared.contains(&me) {
            return Err(SecAggError::NotInCohort(self.params.round));
        }
        if view.shared.len() < self.params.threshold as usize {
            return Err(SecAggError::BelowThreshold {
                survivors: view.shared.len(),
                threshold: self.params.threshold as usize,
            });
        }
        if for_you.round != self.params.round {
            return Err(SecAggError::WrongRound {
                got: for_you.round,
                want: self.params.round,
            });
        }
        if for_you.to != me || for_you.shares.iter().any(|s| s.to != me) {
            return Err(SecAggError::Malformed(
                "shares addressed to another member".into(),
            ));
        }
        if delta.len() as u64 != self.params.num_params {
            return Err(SecAggError::Malformed(format!(
                "a delta of {} values, the round's vectors have {}",
                delta.len(),
                self.params.num_params
            )));
        }
        let mut opened = BTreeMap::new();
        for &v in view.shared.iter().filter(|&&v| v != me) {
            let mut from_v = for_you.shares.iter().filter(|s| s.from == v);
            let (Some(share), None) = (from_v.next(), from_v.next()) else {
                return Err(SecAggError::MissingShare(format!(
                    "member {v} shared, but its share to us is missing (or doubled)"
                )));
            };
            let k = keys
                .iter()
                .find(|k| k.index == v)
                .expect("checked in the roster");
            let shared = crypto::agree(&self.cipher_sk, &k.cipher_pk)?;
            let aead_key = crypto::share_key(&shared, &self.ctx, v, me);
            let plain = crypto::open(
                &aead_key,
                &crypto::from_hex(&share.ciphertext)?,
                &share_aad(&self.ctx, v, me),
            )?;
            if plain.len() != 2 * shamir::SHARE_LEN {
                return Err(SecAggError::ShareAuthentication(
                    "a share of the wrong length".into(),
                ));
            }
            let (seed, key) = plain.split_at(shamir::SHARE_LEN);
            opened.insert(
                v,
                Held {
                    seed: Zeroizing::new(seed.to_vec()),
                    key: Zeroizing::new(key.to_vec()),
                },
            );
        }
        let mut values = delta.to_vec();
        crate::sync::delta::clip(&mut values, self.params.clip_norm)
            .map_err(|e| SecAggError::OutOfRange(e.to_string()))?;
        let mut y = self.quantizer.encode(&values)?;
        masks::apply_self(&mut y, &self.seed, &self.ctx, me, true);
        for &v in view.shared.iter().filter(|&&v| v != me) {
            let k = keys
                .iter()
                .find(|k| k.index == v)
                .expect("checked in the roster");
            let shared = crypto::agree(&self.mask_sk, &k.mask_pk)?;
            masks::apply_pair(&mut y, &shared, &self.ctx, me, v, true);
        }
        self.held.extend(opened);
        let input = MaskedInput::encode(self.params.round, me, &y);
        self.input_sent = Some((view.shared.clone(), input.clone()));
        Ok(input)
    }

    /// The unmask step: for each sharer that survived the input phase its self-mask seed
    /// share, for each that did not its mask-key share. Refused when the survivors are not
    /// sharers, are fewer than the threshold, or differ from an earlier answer — so that no
    /// member's two secrets are ever both revealed by us.
    pub fn unmask(&mut self, view: &RoundView) -> SecAggResult<UnmaskResponse> {
        if let Some((survivors, sent)) = &self.unmask_sent {
            return if *survivors == view.survivors {
                Ok(sent.clone())
            } else {
                Err(SecAggError::Equivocation(
                    "the survivors changed since our unmasking".into(),
                ))
            };
        }
        let Some((shared, _)) = &self.input_sent else {
            return Err(SecAggError::WrongPhase {
                round: self.params.round,
                phase: "unmask".into(),
                expected: "input (not yet answered)".into(),
            });
        };
        let me = self.check_view(view, Phase::Unmask)?;
        if &view.shared != shared {
            return Err(SecAggError::Equivocation(
                "the sharers changed since our input".into(),
            ));
        }
        check_indices(
            "the survivors",
            &view.survivors,
            self.params.cohort as usize,
        )?;
        if !view.survivors.iter().all(|s| shared.contains(s)) {
            return Err(SecAggError::Malformed(
                "a survivor that never shared".into(),
            ));
        }
        if view.survivors.len() < self.params.threshold as usize {
            return Err(SecAggError::BelowThreshold {
                survivors: view.survivors.len(),
                threshold: self.params.threshold as usize,
            });
        }
        let (mut seed_shares, mut key_shares) = (Vec::new(), Vec::new());
        for &v in shared {
            // Our own secrets: the seed share if our input counts; never our key share
            // (we are not a dropout to ourselves), nor our seed share if the server says our
            // input is missing (it may hold it: the others reveal our key's shares).
            if v == me && !view.survivors.contains(&me) {
                continue;
            }
            let held = self
                .held
                .get(&v)
                .ok_or_else(|| SecAggError::MissingShare(format!("no share of member {v} held")))?;
            if view.survivors.contains(&v) {
                seed_shares.push(RevealedShare {
                    of: v,
                    share: crypto::to_hex(&held.seed),
                });
            } else if v != me {
                key_shares.push(RevealedShare {
                    of: v,
                    share: crypto::to_hex(&held.key),
                });
            }
        }
        let response = UnmaskResponse {
            round: self.params.round,
            from: me,
            seed_shares,
            key_shares,
        };
        self.unmask_sent = Some((view.survivors.clone(), response.clone()));
        Ok(response)
    }
}
