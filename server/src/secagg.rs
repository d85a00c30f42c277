//! Secure-aggregation rounds (issue 14, DESIGN §12) of the models named by
//! `--secure-aggregation`: the server side of `tacit_rm::sync::secagg`, with its state in
//! the database (migration 5) so that any replica can serve any request of a round.
//!
//! A round of a model: opened when a client asks for the current round and none is open;
//! `advertise` closes when the cohort (`--round-updates`) joined, or after `--round-seconds`
//! with at least the threshold `t` joined; each later phase closes when every member due to
//! answer did, or after `--secagg-phase-seconds` — then the silent ones are dropouts, and
//! fewer than `t` answers fail the round. Closing `unmask` reconstructs the masks
//! (`aggregator::unmask_sum`), and the sum becomes one step through the same clip and noise
//! as plain rounds (DP noise is added here, after unmasking), written with the same
//! helpers in the transaction that marks the round done.
//!
//! What is stored: public keys and commitments, encrypted shares (deleted when the round
//! ends), masked inputs and unmask answers (emptied when it ends) — never an unmasked
//! delta, and never, at any time, `t` shares of both secrets of one member.
//!
//! Every transaction first locks the model's row (Postgres `FOR UPDATE`, SQLite's single
//! writer), so that the phases of a round advance one request at a time on every replica,
//! and in the same order as a plain round's transaction takes its locks.

use std::collections::BTreeMap;

use sqlx::Row;
use tacit_rm::store;
use tacit_rm::sync::privacy::RoundDecision;
use tacit_rm::sync::protocol::ApiErrorCode;
use tacit_rm::sync::secagg::aggregator::{self, RoundRecord};
use tacit_rm::sync::secagg::messages::*;
use tacit_rm::sync::secagg::SecAggError;

use crate::config::Policy;
use crate::db::Db;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::rounds::decode;
use crate::tokens::Principal;

type Tx = sqlx::Transaction<'static, sqlx::Any>;

struct RoundRow {
    round: i64,
    phase: Phase,
    params: RoundParams,
    opened_at: i64,
    phase_started_at: i64,
    failure: Option<String>,
    released_version: Option<i64>,
}

struct MemberRow {
    client: String,
    member: Member,
    shared: bool,
    survivor: bool,
    masked_input: Option<Vec<u8>>,
    unmask: Option<String>,
}

fn off(model: &str) -> ApiError {
    ApiError::new(
        ErrorCode::SecureAggregationOff,
        format!("model '{model}' is aggregated in plain mode (see --secure-aggregation)"),
    )
}

/// Begins a transaction with the model's row locked; its version and parameter count.
async fn begin(db: &Db, policy: &Policy, model: &str) -> ApiResult<(Tx, i64, i64)> {
    if !policy.secure_aggregation(model) {
        return Err(off(model));
    }
    let mut tx = db.pool.begin().await?;
    let row = sqlx::query(&format!(
        "SELECT version, num_params FROM models WHERE name = $1{}",
        db.for_update()
    ))
    .bind(model)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::new(ApiErrorCode::NotFound, format!("no model '{model}'")))?;
    Ok((tx, row.try_get("version")?, row.try_get("num_params")?))
}

fn round_from(row: &sqlx::any::AnyRow) -> Result<RoundRow, sqlx::Error> {
    let phase: String = row.try_get("phase")?;
    let params: String = row.try_get("params")?;
    Ok(RoundRow {
        round: row.try_get("round")?,
        phase: Phase::parse(&phase).ok_or_else(|| decode(format!("a stored phase '{phase}'")))?,
        params: serde_json::from_str(&params).map_err(|e| decode(e.to_string()))?,
        opened_at: row.try_get("opened_at")?,
        phase_started_at: row.try_get("phase_started_at")?,
        failure: row.try_get("failure")?,
        released_version: row.try_get("released_version")?,
    })
}

const ROUND_COLUMNS: &str =
    "round, phase, params, opened_at, phase_started_at, failure, released_version";

async fn load_round(
    conn: &mut sqlx::AnyConnection,
    model: &str,
    round: i64,
) -> Result<Option<RoundRow>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {ROUND_COLUMNS} FROM secagg_rounds WHERE model = $1 AND round = $2"
    ))
    .bind(model)
    .bind(round)
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(round_from)
    .transpose()
}

async fn latest_round(
    conn: &mut sqlx::AnyConnection,
    model: &str,
) -> Result<Option<RoundRow>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {ROUND_COLUMNS} FROM secagg_rounds WHERE model = $1 ORDER BY round DESC LIMIT 1"
    ))
    .bind(model)
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(round_from)
    .transpose()
}

async fn load_members(
    conn: &mut sqlx::AnyConnection,
    model: &str,
    round: i64,
) -> Result<Vec<MemberRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT idx, client, cipher_pk, mask_pk, seed_commitment, shared, survivor, \
           masked_input, unmask FROM secagg_members WHERE model = $1 AND round = $2 ORDER BY idx",
    )
    .bind(model)
    .bind(round)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let idx: i64 = r.try_get("idx")?;
            Ok(MemberRow {
                client: r.try_get("client")?,
                member: Member {
                    index: u32::try_from(idx).map_err(|_| decode(format!("member index {idx}")))?,
                    cipher_pk: r.try_get("cipher_pk")?,
                    mask_pk: r.try_get("mask_pk")?,
                    seed_commitment: r.try_get("seed_commitment")?,
                },
                shared: r.try_get::<i64, _>("shared")? != 0,
                survivor: r.try_get::<i64, _>("survivor")? != 0,
                masked_input: r.try_get("masked_input")?,
                unmask: r.try_get("unmask")?,
            })
        })
        .collect()
}

async fn set_phase(
    conn: &mut sqlx::AnyConnection,
    model: &str,
    r: &mut RoundRow,
    phase: Phase,
) -> Result<(), sqlx::Error> {
    let now = crate::now_ms();
    sqlx::query(
        "UPDATE secagg_rounds SET phase = $1, phase_started_at = $2, failure = $3, \
           released_version = $4 WHERE model = $5 AND round = $6",
    )
    .bind(phase.name())
    .bind(now)
    .bind(r.failure.clone())
    .bind(r.released_version)
    .bind(model)
    .bind(r.round)
    .execute(&mut *conn)
    .await?;
    r.phase = phase;
    r.phase_started_at = now;
    Ok(())
}

/// Ends a round: the masked inputs and answers are emptied and the relayed shares deleted
/// (nothing of the round is needed again, and a failed round's inputs must never be
/// unmasked later).
async fn end(
    conn: &mut sqlx::AnyConnection,
    model: &str,
    r: &mut RoundRow,
    phase: Phase,
) -> Result<(), sqlx::Error> {
    set_phase(conn, model, r, phase).await?;
    sqlx::query(
        "UPDATE secagg_members SET masked_input = NULL, unmask = NULL WHERE model = $1 AND round = $2",
    )
    .bind(model)
    .bind(r.round)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM secagg_shares WHERE model = $1 AND round = $2")
        .bind(model)
        .bind(r.round)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn fail(
    conn: &mut sqlx::AnyConnection,
    model: &str,
    r: &mut RoundRow,
    why: String,
) -> Result<(), sqlx::Error> {
    tracing::warn!(model, round = r.round, reason = %why, "secure-aggregation round failed");
    r.failure = Some(why);
    end(conn, model, r, Phase::Failed).await
}

/// Moves the round through every phase that is complete or out of time.
async fn advance(
    conn: &mut sqlx::AnyConnection,
    policy: &Policy,
    model: &str,
    r: &mut RoundRow,
) -> Result<(), sqlx::Error> {
    loop {
        let members = load_members(conn, model, r.round).await?;
        let t = r.params.threshold as usize;
        let now = crate::now_ms();
        let late = |since: i64, seconds: f64| (now.saturating_sub(since) as f64) >= seconds * 1e3;
        let phase_late = late(r.phase_started_at, policy.secagg_phase_seconds);
        let count = |f: fn(&MemberRow) -> bool| members.iter().filter(|m| f(m)).count();
        match r.phase {
            Phase::Advertise => {
                let joined = members.len();
                if joined >= r.params.cohort as usize
                    || (late(r.opened_at, policy.round_seconds) && joined >= t)
                {
                    set_phase(conn, model, r, Phase::Share).await?;
                } else {
                    return Ok(());
                }
            }
            Phase::Share => {
                let shared = count(|m| m.shared);
                if shared < members.len() && !phase_late {
                    return Ok(());
                }
                if shared >= t {
                    set_phase(conn, model, r, Phase::Input).await?;
                } else {
                    let why = format!("{shared} members shared, below the threshold {t}");
                    return fail(conn, model, r, why).await;
                }
            }
            Phase::Input => {
                let (shared, inputs) = (count(|m| m.shared), count(|m| m.survivor));
                if inputs < shared && !phase_late {
                    return Ok(());
                }
                if inputs >= t {
                    set_phase(conn, model, r, Phase::Unmask).await?;
                } else {
                    let why = format!("{inputs} masked inputs, below the threshold {t}");
                    return fail(conn, model, r, why).await;
                }
            }
            Phase::Unmask => {
                let (survivors, answers) = (
                    count(|m| m.survivor),
                    count(|m| m.survivor && m.unmask.is_some()),
                );
                if answers < survivors && !phase_late {
                    return Ok(());
                }
                if answers >= t {
                    return finish(conn, policy, model, r, &members).await;
                }
                // Below t nothing is reconstructed: the masked inputs are emptied unread.
                let why = format!("{answers} unmask answers, below the threshold {t}");
                return fail(conn, model, r, why).await;
            }
            Phase::Done | Phase::Failed => return Ok(()),
        }
    }
}

/// Unmasks the sum and releases it as the next global — or fails the round with the reason.
async fn finish(
    conn: &mut sqlx::AnyConnection,
    policy: &Policy,
    model: &str,
    r: &mut RoundRow,
    members: &[MemberRow],
) -> Result<(), sqlx::Error> {
    let roster: Vec<Member> = members.iter().map(|m| m.member.clone()).collect();
    let shared: Vec<u32> = members
        .iter()
        .filter(|m| m.shared)
        .map(|m| m.member.index)
        .collect();
    let survivors: Vec<u32> = members
        .iter()
        .filter(|m| m.survivor)
        .map(|m| m.member.index)
        .collect();
    let mut inputs = BTreeMap::new();
    let mut responses = Vec::new();
    for m in members.iter().filter(|m| m.survivor) {
        let bytes = m.masked_input.as_deref().unwrap_or_default();
        inputs.insert(
            m.member.index,
            bytes
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect::<Vec<u32>>(),
        );
        if let Some(json) = &m.unmask {
            responses.push(
                serde_json::from_str::<UnmaskResponse>(json).map_err(|e| decode(e.to_string()))?,
            );
        }
    }
    // The budget first: a round it refuses is not even unmasked.
    let stored_privacy = match policy.dp_noise_multiplier {
        Some(_) => crate::privacy::load(conn, model).await?,
        None => None,
    };
    let mut privacy = crate::privacy::budget(policy, stored_privacy.as_ref())?;
    if let Some(budget) = &privacy {
        if !budget.can_release_another_round() {
            crate::privacy::store(conn, model, &budget.record(), Some(crate::now_ms())).await?;
            let why = format!(
                "releasing it would exceed the privacy budget ε = {}",
                budget.budget_epsilon()
            );
            return fail(conn, model, r, why).await;
        }
    }
    let record = RoundRecord {
        model,
        params: &r.params,
        members: &roster,
        shared: &shared,
        survivors: &survivors,
        inputs: &inputs,
        responses: &responses,
    };
    let sum = match aggregator::unmask_sum(&record) {
        Ok(sum) => sum,
        Err(e) => return fail(conn, model, r, format!("unmasking failed: {e}")).await,
    };
    let row = sqlx::query("SELECT version, weights, rounds FROM models WHERE name = $1")
        .bind(model)
        .fetch_one(&mut *conn)
        .await?;
    let version: i64 = row.try_get("version")?;
    let global = store::from_bytes(&row.try_get::<Vec<u8>, _>("weights")?)
        .map_err(|e| decode(e.to_string()))?;
    if global.head.num_params() as u64 != r.params.num_params {
        return fail(
            conn,
            model,
            r,
            "the model's shape changed during the round".into(),
        )
        .await;
    }
    let aggregation = policy.aggregation();
    let step = tacit_rm::sync::aggregate::secure_step(
        &sum,
        survivors.len(),
        &aggregation,
        crate::rounds::noise_seed(),
    );
    let (new_version, round) =
        crate::rounds::write_global(conn, model, &global, version, row.try_get("rounds")?, &step)
            .await?;
    crate::rounds::record_round(
        conn,
        model,
        round,
        new_version,
        survivors.len(),
        0,
        "secagg-mean",
    )
    .await?;
    if let Some(budget) = &mut privacy {
        if let RoundDecision::Refused { .. } = budget.record_round() {
            return Err(decode("the privacy budget refused a checked round".into()));
        }
        crate::privacy::store(conn, model, &budget.record(), None).await?;
    }
    r.released_version = Some(new_version);
    end(conn, model, r, Phase::Done).await?;
    tracing::info!(
        model,
        secagg_round = r.round,
        version = new_version,
        survivors = survivors.len(),
        "secure-aggregation round closed"
    );
    Ok(())
}

/// The round as `who` sees it: the lists of a phase appear once it closed.
async fn view_of(
    conn: &mut sqlx::AnyConnection,
    model: &str,
    r: &RoundRow,
    who: &Principal,
) -> Result<RoundView, sqlx::Error> {
    let members = load_members(conn, model, r.round).await?;
    let past = |p: Phase| r.phase > p;
    let list = |f: fn(&MemberRow) -> bool| -> Vec<u32> {
        members
            .iter()
            .filter(|m| f(m))
            .map(|m| m.member.index)
            .collect()
    };
    Ok(RoundView {
        model: model.to_string(),
        params: r.params.clone(),
        phase: r.phase,
        you: members
            .iter()
            .find(|m| m.client == who.client)
            .map(|m| m.member.index),
        members: if past(Phase::Advertise) {
            members.iter().map(|m| m.member.clone()).collect()
        } else {
            Vec::new()
        },
        shared: if past(Phase::Share) {
            list(|m| m.shared)
        } else {
            Vec::new()
        },
        survivors: if past(Phase::Input) {
            list(|m| m.survivor)
        } else {
            Vec::new()
        },
        failure: r.failure.clone(),
        released_version: r.released_version.map(|v| v as u64),
    })
}

fn round_id(round: u64) -> ApiResult<i64> {
    i64::try_from(round).map_err(|_| ApiError::new(ApiErrorCode::NotFound, "no such round"))
}

/// Loads round `round` and advances it, in its own transaction (deadlines count whatever
/// the request then does).
async fn advanced(db: &Db, policy: &Policy, model: &str, round: u64) -> ApiResult<()> {
    let (mut tx, _, _) = begin(db, policy, model).await?;
    let mut r = load_round(&mut tx, model, round_id(round)?)
        .await?
        .ok_or_else(|| ApiError::new(ApiErrorCode::NotFound, format!("no round {round}")))?;
    advance(&mut tx, policy, model, &mut r).await?;
    tx.commit().await?;
    Ok(())
}

/// `GET /v1/models/{name}/secagg`: the open round (a new one if none is).
pub async fn current(
    db: &Db,
    policy: &Policy,
    model: &str,
    who: &Principal,
) -> ApiResult<RoundView> {
    let (mut tx, version, num_params) = begin(db, policy, model).await?;
    let mut latest = latest_round(&mut tx, model).await?;
    if let Some(r) = &mut latest {
        advance(&mut tx, policy, model, r).await?;
    }
    let r = match latest {
        Some(r) if !matches!(r.phase, Phase::Done | Phase::Failed) => r,
        last => {
            // A budget that refuses the next release refuses the round before any client
            // works for it (`finish` checks again, under the same lock, before unmasking).
            if policy.dp_noise_multiplier.is_some() {
                let stored = crate::privacy::load(&mut tx, model).await?;
                if let Some(budget) = crate::privacy::budget(policy, stored.as_ref())? {
                    if !budget.can_release_another_round() {
                        return Err(SecAggError::RoundFailed(format!(
                            "the privacy budget ε = {} allows no further round",
                            budget.budget_epsilon()
                        ))
                        .into());
                    }
                }
            }
            let round = last.map_or(1, |r| r.round.saturating_add(1));
            let (cohort, threshold) = policy.secagg_cohort();
            let params = RoundParams {
                round: round as u64,
                base_version: version as u64,
                cohort,
                threshold,
                num_params: num_params as u64,
                clip_norm: policy.clip_norm,
            };
            params.validate()?;
            let now = crate::now_ms();
            sqlx::query(
                "INSERT INTO secagg_rounds (model, round, phase, params, opened_at, phase_started_at) \
                 VALUES ($1, $2, $3, $4, $5, $5)",
            )
            .bind(model)
            .bind(round)
            .bind(Phase::Advertise.name())
            .bind(serde_json::to_string(&params).expect("plain fields serialise"))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            RoundRow {
                round,
                phase: Phase::Advertise,
                params,
                opened_at: now,
                phase_started_at: now,
                failure: None,
                released_version: None,
            }
        }
    };
    let view = view_of(&mut tx, model, &r, who).await?;
    tx.commit().await?;
    Ok(view)
}

/// `GET /v1/models/{name}/secagg/{round}`.
pub async fn view(
    db: &Db,
    policy: &Policy,
    model: &str,
    who: &Principal,
    round: u64,
) -> ApiResult<RoundView> {
    advanced(db, policy, model, round).await?;
    let (mut tx, _, _) = begin(db, policy, model).await?;
    let r = load_round(&mut tx, model, round_id(round)?)
        .await?
        .ok_or_else(|| ApiError::new(ApiErrorCode::NotFound, format!("no round {round}")))?;
    let view = view_of(&mut tx, model, &r, who).await?;
    tx.commit().await?;
    Ok(view)
}

/// A step's transaction: the round advanced by its deadlines, checked to be in `phase`, and
/// the sender's membership.
async fn step_begin(
    db: &Db,
    policy: &Policy,
    model: &str,
    who: &Principal,
    round: u64,
    body_round: u64,
    phase: Phase,
) -> ApiResult<(Tx, RoundRow, Vec<MemberRow>)> {
    if body_round != round {
        return Err(SecAggError::WrongRound {
            got: body_round,
            want: round,
        }
        .into());
    }
    advanced(db, policy, model, round).await?;
    let (mut tx, _, _) = begin(db, policy, model).await?;
    let r = load_round(&mut tx, model, round_id(round)?)
        .await?
        .ok_or_else(|| ApiError::new(ApiErrorCode::NotFound, format!("no round {round}")))?;
    if r.phase != phase {
        return Err(SecAggError::WrongPhase {
            round,
            phase: r.phase.name().into(),
            expected: phase.name().into(),
        }
        .into());
    }
    let members = load_members(&mut tx, model, r.round).await?;
    if phase != Phase::Advertise && !members.iter().any(|m| m.client == who.client) {
        return Err(SecAggError::NotInCohort(round).into());
    }
    Ok((tx, r, members))
}

fn me<'a>(members: &'a [MemberRow], who: &Principal) -> &'a MemberRow {
    members
        .iter()
        .find(|m| m.client == who.client)
        .expect("step_begin checked membership")
}

/// Ends a step: the round advanced (a complete phase closes now) and the sender's view.
async fn step_end(
    mut tx: Tx,
    policy: &Policy,
    model: &str,
    who: &Principal,
    mut r: RoundRow,
) -> ApiResult<RoundView> {
    advance(&mut tx, policy, model, &mut r).await?;
    let view = view_of(&mut tx, model, &r, who).await?;
    tx.commit().await?;
    Ok(view)
}

fn replayed(step: &str) -> ApiError {
    SecAggError::Replayed(format!(
        "this member answered the {step} step with other content"
    ))
    .into()
}

/// `POST …/{round}/advertise`: joins the round (an identical retry is answered again).
pub async fn advertise(
    db: &Db,
    policy: &Policy,
    model: &str,
    who: &Principal,
    round: u64,
    ad: &Advertise,
) -> ApiResult<RoundView> {
    let (mut tx, r, members) =
        step_begin(db, policy, model, who, round, ad.round, Phase::Advertise).await?;
    aggregator::check_advertise(&r.params, ad)?;
    if let Some(m) = members.iter().find(|m| m.client == who.client) {
        let same = (
            &m.member.cipher_pk,
            &m.member.mask_pk,
            &m.member.seed_commitment,
        ) == (&ad.cipher_pk, &ad.mask_pk, &ad.seed_commitment);
        return if same {
            step_end(tx, policy, model, who, r).await
        } else {
            Err(replayed("advertise"))
        };
    }
    if members.iter().any(|m| {
        [&m.member.cipher_pk, &m.member.mask_pk]
            .iter()
            .any(|k| **k == ad.cipher_pk || **k == ad.mask_pk)
    }) {
        return Err(SecAggError::Malformed("a public key another member uses".into()).into());
    }
    if members.len() >= r.params.cohort as usize {
        return Err(SecAggError::WrongPhase {
            round,
            phase: "advertise (full)".into(),
            expected: "advertise".into(),
        }
        .into());
    }
    sqlx::query(
        "INSERT INTO secagg_members (model, round, idx, client, cipher_pk, mask_pk, \
           seed_commitment, shared, survivor, joined_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, 0, $8)",
    )
    .bind(model)
    .bind(r.round)
    .bind(members.len() as i64)
    .bind(&who.client)
    .bind(&ad.cipher_pk)
    .bind(&ad.mask_pk)
    .bind(&ad.seed_commitment)
    .bind(crate::now_ms())
    .execute(&mut *tx)
    .await?;
    step_end(tx, policy, model, who, r).await
}

/// `POST …/{round}/shares`: the sender's encrypted shares, one per other member.
pub async fn upload_shares(
    db: &Db,
    policy: &Policy,
    model: &str,
    who: &Principal,
    round: u64,
    upload: &ShareUpload,
) -> ApiResult<RoundView> {
    let (mut tx, r, members) =
        step_begin(db, policy, model, who, round, upload.round, Phase::Share).await?;
    let mine = me(&members, who);
    let roster: Vec<Member> = members.iter().map(|m| m.member.clone()).collect();
    aggregator::check_share_upload(&r.params, &roster, mine.member.index, upload)?;
    let from = i64::from(mine.member.index);
    if mine.shared {
        let stored = sqlx::query(
            "SELECT to_idx, ciphertext FROM secagg_shares WHERE model = $1 AND round = $2 \
             AND from_idx = $3",
        )
        .bind(model)
        .bind(r.round)
        .bind(from)
        .fetch_all(&mut *tx)
        .await?;
        let stored: BTreeMap<i64, String> = stored
            .iter()
            .map(|row| Ok((row.try_get("to_idx")?, row.try_get("ciphertext")?)))
            .collect::<Result<_, sqlx::Error>>()?;
        let sent: BTreeMap<i64, String> = upload
            .shares
            .iter()
            .map(|s| (i64::from(s.to), s.ciphertext.clone()))
            .collect();
        return if stored == sent {
            step_end(tx, policy, model, who, r).await
        } else {
            Err(replayed("share"))
        };
    }
    for s in &upload.shares {
        sqlx::query(
            "INSERT INTO secagg_shares (model, round, from_idx, to_idx, ciphertext) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(model)
        .bind(r.round)
        .bind(from)
        .bind(i64::from(s.to))
        .bind(&s.ciphertext)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "UPDATE secagg_members SET shared = 1 WHERE model = $1 AND round = $2 AND idx = $3",
    )
    .bind(model)
    .bind(r.round)
    .bind(from)
    .execute(&mut *tx)
    .await?;
    step_end(tx, policy, model, who, r).await
}

/// `GET …/{round}/shares`: the shares addressed to the asking sharer (input phase on).
pub async fn shares_for(
    db: &Db,
    policy: &Policy,
    model: &str,
    who: &Principal,
    round: u64,
) -> ApiResult<SharesForYou> {
    let (mut tx, r, members) =
        step_begin(db, policy, model, who, round, round, Phase::Input).await?;
    let mine = me(&members, who);
    if !mine.shared {
        return Err(SecAggError::NotInCohort(round).into());
    }
    let rows = sqlx::query(
        "SELECT from_idx, ciphertext FROM secagg_shares WHERE model = $1 AND round = $2 \
         AND to_idx = $3 ORDER BY from_idx",
    )
    .bind(model)
    .bind(r.round)
    .bind(i64::from(mine.member.index))
    .fetch_all(&mut *tx)
    .await?;
    let shares = rows
        .iter()
        .map(|row| {
            Ok(EncryptedShare {
                from: row.try_get::<i64, _>("from_idx")? as u32,
                to: mine.member.index,
                ciphertext: row.try_get("ciphertext")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    tx.commit().await?;
    Ok(SharesForYou {
        round,
        to: mine.member.index,
        shares,
    })
}

/// `POST …/{round}/input`: the sender's masked input.
pub async fn input(
    db: &Db,
    policy: &Policy,
    model: &str,
    who: &Principal,
    round: u64,
    input: &MaskedInput,
) -> ApiResult<RoundView> {
    let (mut tx, r, members) =
        step_begin(db, policy, model, who, round, input.round, Phase::Input).await?;
    let mine = me(&members, who);
    if !mine.shared {
        return Err(SecAggError::NotInCohort(round).into());
    }
    let words = aggregator::check_masked_input(&r.params, mine.member.index, input)?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    if mine.survivor {
        return if mine.masked_input.as_deref() == Some(bytes.as_slice()) {
            step_end(tx, policy, model, who, r).await
        } else {
            Err(replayed("input"))
        };
    }
    sqlx::query(
        "UPDATE secagg_members SET masked_input = $1, survivor = 1 \
         WHERE model = $2 AND round = $3 AND idx = $4",
    )
    .bind(bytes)
    .bind(model)
    .bind(r.round)
    .bind(i64::from(mine.member.index))
    .execute(&mut *tx)
    .await?;
    step_end(tx, policy, model, who, r).await
}

/// `POST …/{round}/unmask`: a survivor's revealed shares.
pub async fn unmask(
    db: &Db,
    policy: &Policy,
    model: &str,
    who: &Principal,
    round: u64,
    response: &UnmaskResponse,
) -> ApiResult<RoundView> {
    let (mut tx, r, members) =
        step_begin(db, policy, model, who, round, response.round, Phase::Unmask).await?;
    let mine = me(&members, who);
    if !mine.survivor {
        return Err(SecAggError::NotInCohort(round).into());
    }
    let shared: Vec<u32> = members
        .iter()
        .filter(|m| m.shared)
        .map(|m| m.member.index)
        .collect();
    let survivors: Vec<u32> = members
        .iter()
        .filter(|m| m.survivor)
        .map(|m| m.member.index)
        .collect();
    aggregator::check_unmask(&r.params, &shared, &survivors, mine.member.index, response)?;
    let json = serde_json::to_string(response).expect("plain fields serialise");
    if let Some(stored) = &mine.unmask {
        return if *stored == json {
            step_end(tx, policy, model, who, r).await
        } else {
            Err(replayed("unmask"))
        };
    }
    sqlx::query(
        "UPDATE secagg_members SET unmask = $1 WHERE model = $2 AND round = $3 AND idx = $4",
    )
    .bind(json)
    .bind(model)
    .bind(r.round)
    .bind(i64::from(mine.member.index))
    .execute(&mut *tx)
    .await?;
    step_end(tx, policy, model, who, r).await
}

/// The timer's pass: every open round advanced by its deadlines (errors logged).
pub async fn advance_due(db: &Db, policy: &Policy) {
    if policy.secure_aggregation.is_none() {
        return;
    }
    let open = match sqlx::query(
        "SELECT model, round FROM secagg_rounds WHERE phase NOT IN ('done', 'failed')",
    )
    .fetch_all(&db.pool)
    .await
    {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "round timer cannot list secure-aggregation rounds");
            return;
        }
    };
    for row in open {
        let (Ok(model), Ok(round)) = (
            row.try_get::<String, _>("model"),
            row.try_get::<i64, _>("round"),
        ) else {
            continue;
        };
        // A model taken out of secure aggregation keeps its open round as it was (its routes
        // answer `secure_aggregation_off`): nothing to advance.
        if !policy.secure_aggregation(&model) {
            continue;
        }
        if let Err(e) = advanced(db, policy, &model, round as u64).await {
            tracing::warn!(model, round, error = %e.message, "cannot advance a secure-aggregation round");
        }
    }
}
