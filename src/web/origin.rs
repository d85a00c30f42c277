//! What an origin stores, across its models: `RewardModel.list`, `RewardModel.delete` and
//! `RewardModel.deleteAll`. None of them opens (so creates) the database where the browser
//! can say it does not exist.

use serde::Serialize;

use super::storage::{self, Storage};
use super::{channel, lock};
use crate::error::Result;

/// One stored model, as `RewardModel.list()` reports it (`ModelInfo` in the `.d.ts`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelInfo {
    pub name: String,
    pub dim: usize,
    pub hidden: Vec<usize>,
    pub activation: &'static str,
    /// `"auto"` or the objective the model was made with.
    pub objective: &'static str,
    pub personalization: &'static str,
    /// Observations stored and not yet trained on (by any tab).
    pub pending: usize,
    /// When the weights or sync state were last stored (ms since the epoch); `null` for a
    /// model stored by an earlier version of the package and not opened since.
    pub updated_at: Option<f64>,
}

/// The database, if it may exist; `None` where there is no IndexedDB or it surely does not.
async fn existing() -> Result<Option<Storage>> {
    let Some(factory) = storage::factory() else {
        return Ok(None);
    };
    if storage::exists(&factory).await? == Some(false) {
        return Ok(None);
    }
    Storage::open(&factory).await.map(Some)
}

pub async fn list() -> Result<Vec<ModelInfo>> {
    let Some(s) = existing().await? else {
        return Ok(Vec::new());
    };
    let listed = s.list().await;
    s.close();
    let mut out: Vec<ModelInfo> = listed?
        .into_iter()
        .map(|m| ModelInfo {
            dim: m.spec.dim,
            hidden: m.spec.hidden.clone(),
            activation: m.spec.activation.name(),
            objective: if m.spec.auto_objective {
                "auto"
            } else {
                m.spec.objective.name()
            },
            personalization: m.spec.personalization.name(),
            pending: m.pending,
            updated_at: m.updated_at,
            name: m.name,
        })
        .collect();
    crate::math::sort_by(&mut out, |a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Deletes one model under its lock, so that no other tab's writing call is half-way.
pub async fn delete(name: &str) -> Result<()> {
    let Some(s) = existing().await? else {
        return Ok(());
    };
    let deleted = async {
        let _lock = lock::acquire(name).await?;
        s.delete(name).await
    }
    .await;
    s.close();
    // Every open instance (this tab's too) closes at its next call, the synchronous ones
    // included; one that has not heard it (yet) finds the model gone at its next write, which
    // checks the `meta` record in its own transaction.
    if let Some(id) = deleted? {
        channel::announce_delete(name, &id);
    }
    Ok(())
}

pub async fn delete_all() -> Result<()> {
    match storage::factory() {
        Some(factory) => storage::delete_database(&factory).await,
        None => Ok(()),
    }
}
