//! The server's side of a round, pure: the checks of every uploaded message against the
//! round it claims to belong to, and the unmasking of the survivors' sum. The server (its
//! storage, phases and deadlines are `tacit-server`'s) calls these and stores only what they
//! accepted; it never holds a secret that removes one member's masks without the others'.

use std::collections::{BTreeMap, BTreeSet};

use x25519_dalek::StaticSecret;

use super::crypto::{self, RoundContext};
use super::error::{SecAggError, SecAggResult};
use super::masks;
use super::messages::*;
use super::participant::roster;
use super::shamir;

fn same_round(params: &RoundParams, got: u64) -> SecAggResult<()> {
    if got != params.round {
        return Err(SecAggError::WrongRound {
            got,
            want: params.round,
        });
    }
    Ok(())
}

/// An [`Advertise`] for this round with well-formed keys.
pub fn check_advertise(params: &RoundParams, ad: &Advertise) -> SecAggResult<()> {
    same_round(params, ad.round)?;
    let (c, m, _) = ad.keys()?;
    if c == m {
        return Err(SecAggError::Malformed(
            "the two public keys are equal".into(),
        ));
    }
    Ok(())
}

/// A [`ShareUpload`] from roster member `from`: this round, one well-formed ciphertext to
/// each other member (and none to itself or outsiders).
pub fn check_share_upload(
    params: &RoundParams,
    members: &[Member],
    from: u32,
    upload: &ShareUpload,
) -> SecAggResult<()> {
    same_round(params, upload.round)?;
    if upload.from != from {
        return Err(SecAggError::Malformed(format!(
            "an upload from member {} sent by member {from}",
            upload.from
        )));
    }
    let mut to: Vec<u32> = upload.shares.iter().map(|s| s.to).collect();
    to.sort_unstable();
    let want: Vec<u32> = members
        .iter()
        .map(|m| m.index)
        .filter(|&i| i != from)
        .collect();
    if to != want {
        return Err(SecAggError::Malformed(
            "not exactly one share to each other member".into(),
        ));
    }
    // seed share ‖ key share, and the Poly1305 tag.
    let len = 2 * (2 * shamir::SHARE_LEN + 16);
    for s in &upload.shares {
        if s.from != from || s.ciphertext.len() != len {
            return Err(SecAggError::Malformed(
                "a share of the wrong sender or size".into(),
            ));
        }
        crypto::from_hex(&s.ciphertext)?;
    }
    Ok(())
}

/// A [`MaskedInput`] from sharer `from`: this round, `num_params` words. Returns them.
pub fn check_masked_input(
    params: &RoundParams,
    from: u32,
    input: &MaskedInput,
) -> SecAggResult<Vec<u32>> {
    same_round(params, input.round)?;
    if input.from != from {
        return Err(SecAggError::Malformed(format!(
            "an input from member {} sent by member {from}",
            input.from
        )));
    }
    input.words(params.num_params)
}

/// An [`UnmaskResponse`] from survivor `from`: this round, a seed share of every survivor and
/// a key share of every dropped sharer (except itself), each exactly once and nothing else —
/// a response revealing both secrets of one member is refused, never stored.
pub fn check_unmask(
    params: &RoundParams,
    shared: &[u32],
    survivors: &[u32],
    from: u32,
    response: &UnmaskResponse,
) -> SecAggResult<()> {
    same_round(params, response.round)?;
    if response.from != from {
        return Err(SecAggError::Malformed(format!(
            "a response from member {} sent by member {from}",
            response.from
        )));
    }
    let seed_of: Vec<u32> = response.seed_shares.iter().map(|s| s.of).collect();
    let key_of: Vec<u32> = response.key_shares.iter().map(|s| s.of).collect();
    let dropped: Vec<u32> = shared
        .iter()
        .copied()
        .filter(|i| !survivors.contains(i) && *i != from)
        .collect();
    let mut sorted_seed = seed_of.clone();
    sorted_seed.sort_unstable();
    let mut sorted_key = key_of.clone();
    sorted_key.sort_unstable();
    if sorted_seed != survivors || sorted_key != dropped {
        if seed_of.iter().any(|i| key_of.contains(i)) {
            return Err(SecAggError::Equivocation(
                "both secrets of one member revealed".into(),
            ));
        }
        return Err(SecAggError::Malformed(
            "the shares revealed are not the survivors' seeds and the dropped members' keys".into(),
        ));
    }
    for s in response.seed_shares.iter().chain(&response.key_shares) {
        let bytes = crypto::from_hex(&s.share)?;
        if bytes.len() != shamir::SHARE_LEN || u32::from(bytes[0]) != from + 1 {
            return Err(SecAggError::Malformed(
                "a share that is not the sender's (x = index + 1, 33 bytes)".into(),
            ));
        }
    }
    Ok(())
}

/// Everything the server holds at the end of a round.
pub struct RoundRecord<'a> {
    pub model: &'a str,
    pub params: &'a RoundParams,
    pub members: &'a [Member],
    /// U2: the members whose shares were relayed.
    pub shared: &'a [u32],
    /// U3: the members whose masked inputs are in `inputs`.
    pub survivors: &'a [u32],
    pub inputs: &'a BTreeMap<u32, Vec<u32>>,
    /// The unmask responses received (from survivors).
    pub responses: &'a [UnmaskResponse],
}

/// The sum of the survivors' clipped deltas, in reals: Σ y_u minus the self masks (seeds
/// reconstructed from `t` shares and checked against their commitments) and the pairwise
/// masks with dropped members (their keys reconstructed and checked against their public
/// keys). Fewer than `t` responses, a secret that does not match, or inputs that are not
/// exactly the survivors': an error, and no sum.
pub fn unmask_sum(r: &RoundRecord) -> SecAggResult<Vec<f64>> {
    let params = r.params;
    let quantizer = params.validate()?;
    let t = params.threshold as usize;
    let ctx = RoundContext::new(r.model, params.round);
    let keys = roster(params, r.members)?;
    let key_of = |i: u32| keys.iter().find(|k| k.index == i);
    check_indices("the sharers", r.shared, params.cohort as usize)?;
    check_indices("the survivors", r.survivors, params.cohort as usize)?;
    if !r.shared.iter().all(|&i| key_of(i).is_some())
        || !r.survivors.iter().all(|i| r.shared.contains(i))
    {
        return Err(SecAggError::Malformed(
            "survivors ⊆ sharers ⊆ roster does not hold".into(),
        ));
    }
    if r.survivors.len() < t {
        return Err(SecAggError::BelowThreshold {
            survivors: r.survivors.len(),
            threshold: t,
        });
    }
    if !r.inputs.keys().copied().eq(r.survivors.iter().copied()) {
        return Err(SecAggError::Malformed(
            "the inputs are not exactly the survivors'".into(),
        ));
    }
    let mut responders = BTreeSet::new();
    for resp in r.responses {
        if !r.survivors.contains(&resp.from) || !responders.insert(resp.from) {
            return Err(SecAggError::Malformed(format!(
                "a response from member {}, not a survivor or twice",
                resp.from
            )));
        }
        check_unmask(params, r.shared, r.survivors, resp.from, resp)?;
    }
    if responders.len() < t {
        return Err(SecAggError::BelowThreshold {
            survivors: responders.len(),
            threshold: t,
        });
    }
    let len = usize::try_from(params.num_params)
        .map_err(|_| SecAggError::InvalidParams("num_params".into()))?;
    let mut sum = vec![0u32; len];
    for y in r.inputs.values() {
        if y.len() != len {
            return Err(SecAggError::Malformed(
                "an input of the wrong length".into(),
            ));
        }
        sum.iter_mut()
            .zip(y)
            .for_each(|(s, y)| *s = s.wrapping_add(*y));
    }
    let shares_of = |of: u32, seeds: bool| -> SecAggResult<Vec<(u32, Vec<u8>)>> {
        r.responses
            .iter()
            .filter_map(|resp| {
                let list = if seeds {
                    &resp.seed_shares
                } else {
                    &resp.key_shares
                };
                list.iter()
                    .find(|s| s.of == of)
                    .map(|s| crypto::from_hex(&s.share).map(|b| (resp.from, b)))
            })
            .collect()
    };
    let recover = |of: u32, seeds: bool| -> SecAggResult<[u8; 32]> {
        let shares = shares_of(of, seeds)?;
        let refs: Vec<(u32, &[u8])> = shares.iter().map(|(m, b)| (*m, b.as_slice())).collect();
        shamir::recover(t, &refs).map(|s| *s)
    };
    for &u in r.survivors {
        let seed = recover(u, true)?;
        if crypto::commit(&seed) != key_of(u).expect("checked").commitment {
            return Err(SecAggError::Reconstruction(format!(
                "member {u}'s self-mask seed does not match its commitment"
            )));
        }
        masks::apply_self(&mut sum, &seed, &ctx, u, false);
    }
    for &v in r.shared.iter().filter(|v| !r.survivors.contains(v)) {
        let secret = StaticSecret::from(recover(v, false)?);
        let kv = key_of(v).expect("checked");
        if crypto::public_of(&secret) != kv.mask_pk {
            return Err(SecAggError::Reconstruction(format!(
                "dropped member {v}'s mask key does not match its public key"
            )));
        }
        for &u in r.survivors {
            let shared = crypto::agree(&secret, &key_of(u).expect("checked").mask_pk)?;
            masks::apply_pair(&mut sum, &shared, &ctx, u, v, false);
        }
    }
    quantizer.decode_sum(&sum, r.survivors.len())
}
