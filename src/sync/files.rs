//! File-backed sync for native use (`tacit sync`): the local weights in a safetensors file,
//! and the client's state — the reference weights and the queue of pushes — in a directory
//! beside it. The queue is written *before* anything is sent, so a push made while offline,
//! or interrupted by a crash, goes out on a later run under the same key and is counted once.
//! (One window remains: a crash between writing the rebased weights and the new reference
//! after a pull; the next run would then push the difference between the two globals.)

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::objective::ObjectiveKind;
use crate::store::{self, Weights};

use super::client::{HttpRequest, PendingPush, SyncClient, SyncConfig};
use super::http::{random_key_prefix, sync_once, SyncReport, Transport, UreqTransport};
use super::protocol;

/// What `tacit sync` is told.
#[derive(Debug, Clone)]
pub struct FileSync {
    pub url: String,
    pub token: String,
    pub model: String,
    /// The local weights; created from the global on the first run if missing.
    pub weights: PathBuf,
    /// Holds `reference.safetensors` and `queue.json`.
    pub state_dir: PathBuf,
    /// Examples trained on since the last sync (the push's FedAvg weight).
    pub n_examples: u64,
    pub clip_norm: f64,
    pub timeout: Duration,
    pub retry_budget: Duration,
}

#[derive(Serialize, Deserialize)]
struct QueueFile {
    key_prefix: String,
    next_seq: u64,
    queue: Vec<PendingPush>,
}

fn reference_path(dir: &Path) -> PathBuf {
    dir.join("reference.safetensors")
}

fn queue_path(dir: &Path) -> PathBuf {
    dir.join("queue.json")
}

/// Writes beside the target and renames: a crash leaves the old file or the new one.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

fn save_state(dir: &Path, client: &SyncClient, key_prefix: &str) -> Result<()> {
    let queue = QueueFile {
        key_prefix: key_prefix.to_string(),
        next_seq: client.next_seq(),
        queue: client.queue().to_vec(),
    };
    let json = serde_json::to_vec(&queue).expect("plain data serialises");
    // Reference first: a crash between the two writes leaves an older queue with a newer
    // reference only if the reference moved by a pull, which re-pushes nothing.
    write_atomically(&reference_path(dir), &store::to_bytes(client.reference())?)?;
    write_atomically(&queue_path(dir), &json)
}

/// The global weights, unconditionally (first run).
fn fetch_global(transport: &mut dyn Transport, args: &FileSync) -> Result<Weights> {
    let response = transport
        .send(&HttpRequest {
            method: "GET",
            path: protocol::model_path(&args.model),
            headers: vec![("Authorization".into(), format!("Bearer {}", args.token))],
            body: vec![],
        })
        .map_err(Error::Network)?;
    match response.status {
        200 => store::from_bytes(&response.body),
        401 | 403 => Err(Error::SyncUnauthorized(format!(
            "server answered {}",
            response.status
        ))),
        status => Err(Error::SyncRejected {
            status,
            code: format!("http_{status}"),
            message: String::from_utf8_lossy(&response.body).into_owned(),
        }),
    }
}

/// One sync pass over files; see the module documentation.
pub fn sync_files(args: &FileSync) -> Result<SyncReport> {
    std::fs::create_dir_all(&args.state_dir).map_err(|e| Error::io(&args.state_dir, e))?;
    let mut transport = UreqTransport::new(&args.url, args.timeout);
    let (reference, queue) = if reference_path(&args.state_dir).exists() {
        let bytes = std::fs::read(queue_path(&args.state_dir))
            .map_err(|e| Error::io(queue_path(&args.state_dir), e))?;
        let queue: QueueFile = serde_json::from_slice(&bytes)
            .map_err(|e| Error::InvalidData(format!("unreadable sync queue: {e}")))?;
        (store::load(&reference_path(&args.state_dir))?, queue)
    } else {
        let global = fetch_global(&mut transport, args)?;
        let queue = QueueFile {
            key_prefix: random_key_prefix(),
            next_seq: 0,
            queue: vec![],
        };
        (global, queue)
    };
    if !args.weights.exists() {
        store::save(&args.weights, &reference)?;
    }
    let mut local = store::load(&args.weights)?;
    let mut config = SyncConfig::new(&args.model, &args.token);
    config.clip_norm = args.clip_norm;
    let mut client = SyncClient::new(
        config,
        reference,
        queue.queue,
        &queue.key_prefix,
        queue.next_seq,
    )?;
    let objective = local.objective.unwrap_or(ObjectiveKind::parse("ips")?);
    client.commit_local(
        &local.head,
        args.n_examples,
        objective,
        super::http::now_ms(),
    )?;
    save_state(&args.state_dir, &client, &queue.key_prefix)?;
    let report = sync_once(
        &mut client,
        &mut transport,
        &mut local.head,
        args.retry_budget,
    );
    // Whatever happened, the queue on disk must reflect the pushes the server has.
    save_state(&args.state_dir, &client, &queue.key_prefix)?;
    let report = report?;
    local.version = client.base_version();
    store::save(&args.weights, &local)?;
    Ok(report)
}
