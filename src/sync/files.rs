//! File-backed sync for native use (`tacit sync`): the local weights in a safetensors file,
//! and the client's [`SyncState`] in a directory beside it — `reference.safetensors`,
//! `queue.json` (the state's JSON part) and one `push-{key}.delta` per queued push. The queue
//! is written *before* anything is sent, so a push made while offline, or interrupted by a
//! crash, goes out on a later run under the same key and is counted once.
//!
//! `queue.json` is the commit point: a push's body is written (once: a key's body never
//! changes) before the queue that names it, and bodies no queue names are removed after. (One
//! window remains: a crash between writing the rebased weights and the new reference after a
//! pull; the next run would then push the difference between the two globals.)

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::objective::ObjectiveKind;
use crate::store::{self, Weights};

use super::client::{HttpRequest, SyncConfig};
use super::http::{Blocking, SystemClock, Transport, UreqTransport};
use super::pass::{self, PassOptions, SyncReport};
use super::ports::SyncStore;
use super::protocol;
use super::secagg::session::SessionOptions;
use super::state::{SyncRecord, SyncState};

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
    /// How long to wait for a secure round to end, on a model aggregated securely.
    pub round_wait: Duration,
}

fn reference_path(dir: &Path) -> PathBuf {
    dir.join("reference.safetensors")
}

fn queue_path(dir: &Path) -> PathBuf {
    dir.join("queue.json")
}

const BODY_PREFIX: &str = "push-";
const BODY_SUFFIX: &str = ".delta";

/// A push's body file. Keys become file names, so only keys this client makes (`[A-Za-z0-9_-]`
/// with dots inside) are accepted from a state directory.
fn body_path(dir: &Path, key: &str) -> Result<PathBuf> {
    let safe = !key.is_empty()
        && !key.starts_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !safe {
        return Err(Error::InvalidData(format!(
            "queued push key '{key}' is not a file-name-safe key"
        )));
    }
    Ok(dir.join(format!("{BODY_PREFIX}{key}{BODY_SUFFIX}")))
}

/// Writes beside the target and renames: a crash leaves the old file or the new one.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// The state directory and the local weights file as a [`SyncStore`].
pub struct FileStore {
    pub state_dir: PathBuf,
    pub weights: PathBuf,
}

impl FileStore {
    fn load_now(&self) -> Result<Option<SyncState>> {
        let dir = &self.state_dir;
        if !reference_path(dir).exists() {
            return Ok(None);
        }
        let state =
            std::fs::read_to_string(queue_path(dir)).map_err(|e| Error::io(queue_path(dir), e))?;
        let reference =
            std::fs::read(reference_path(dir)).map_err(|e| Error::io(reference_path(dir), e))?;
        #[derive(serde::Deserialize)]
        struct Keys {
            queue: Vec<Key>,
        }
        #[derive(serde::Deserialize)]
        struct Key {
            key: String,
        }
        let keys: Keys = serde_json::from_str(&state)
            .map_err(|e| Error::Storage(format!("the stored sync state is unreadable: {e}")))?;
        let bodies = keys
            .queue
            .iter()
            .map(|k| {
                let path = body_path(dir, &k.key)?;
                std::fs::read(&path).map_err(|e| Error::io(&path, e))
            })
            .collect::<Result<Vec<_>>>()?;
        SyncState::from_record(SyncRecord {
            state,
            reference,
            bodies,
        })
        .map(Some)
    }

    fn commit_now(&self, state: &SyncState, weights: Option<&Weights>) -> Result<()> {
        let dir = &self.state_dir;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        if let Some(w) = weights {
            store::save(&self.weights, w)?;
        }
        let record = state.to_record()?;
        let mut kept = std::collections::HashSet::new();
        for (push, body) in state.queue.iter().zip(&record.bodies) {
            let path = body_path(dir, &push.key)?;
            if !path.exists() {
                write_atomically(&path, body)?;
            }
            kept.insert(path);
        }
        // Reference first: a crash between the two writes leaves an older queue with a newer
        // reference only if the reference moved by a pull, which re-pushes nothing.
        write_atomically(&reference_path(dir), &record.reference)?;
        write_atomically(&queue_path(dir), record.state.as_bytes())?;
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let path = entry.map_err(|e| Error::io(dir, e))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with(BODY_PREFIX) && name.ends_with(BODY_SUFFIX) && !kept.contains(&path)
            {
                std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            }
        }
        Ok(())
    }
}

impl SyncStore for FileStore {
    async fn load(&mut self) -> Result<Option<SyncState>> {
        self.load_now()
    }

    async fn commit(&mut self, state: &SyncState, weights: Option<&Weights>) -> Result<()> {
        self.commit_now(state, weights)
    }
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
    let mut transport = UreqTransport::new(&args.url, args.timeout);
    let mut files = FileStore {
        state_dir: args.state_dir.clone(),
        weights: args.weights.clone(),
    };
    let mut state = match files.load_now()? {
        Some(state) => state,
        None => {
            // First run: the global is the reference (and the local weights, if none yet).
            let state = SyncState::fresh(fetch_global(&mut transport, args)?);
            files.commit_now(&state, None)?;
            state
        }
    };
    if !args.weights.exists() {
        store::save(&args.weights, &state.reference)?;
    }
    let local = store::load(&args.weights)?;
    if args.n_examples > 0 {
        state.unsynced_examples = state.unsynced_examples.saturating_add(args.n_examples);
        files.commit_now(&state, None)?;
    }
    let mut config = SyncConfig::new(&args.model, &args.token);
    config.clip_norm = args.clip_norm;
    let options = PassOptions {
        retry_budget_ms: u64::try_from(args.retry_budget.as_millis()).unwrap_or(u64::MAX),
        fallback_objective: ObjectiveKind::parse("ips")?,
        secure: SessionOptions {
            give_up_ms: u64::try_from(args.round_wait.as_millis()).unwrap_or(u64::MAX),
            ..SessionOptions::default()
        },
    };
    pollster::block_on(pass::sync(
        config,
        &local,
        options,
        &mut Blocking(&mut transport),
        &SystemClock,
        &mut files,
    ))
}
