//! Test harness: the real `tacit-server` binary on loopback, over a fresh SQLite file or a
//! fresh Postgres database, and small HTTP helpers built on the crate's own client types.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tacit_rm::store::{self, Weights};
use tacit_rm::sync::client::{HttpRequest, HttpResponse};
use tacit_rm::sync::http::{Transport, UreqTransport};
use tacit_rm::sync::protocol::{self, ModelMeta};
use tacit_rm::sync::Delta;
use tacit_rm::{Head, HeadConfig, ObjectiveKind};

pub const BIN: &str = env!("CARGO_BIN_EXE_tacit-server");
/// Set by `cargo xtask test`, which starts a throwaway Postgres cluster.
pub const POSTGRES_URL: &str = "TACIT_TEST_POSTGRES_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh database: a SQLite file in a temporary directory, or a new database in the
/// Postgres cluster named by `TACIT_TEST_POSTGRES_URL`. `None` (with a printed notice) when
/// no Postgres is configured — unless `CI` or `TACIT_REQUIRE_POSTGRES` is set, where that is
/// a failure, so that a Postgres test can never pass by not running.
pub struct Database {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

pub fn database(backend: Backend, test: &str) -> Option<Database> {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let url = format!("sqlite://{}", dir.path().join("server.db").display());
            Some(Database {
                url,
                _dir: Some(dir),
            })
        }
        Backend::Postgres => {
            let Ok(admin_url) = std::env::var(POSTGRES_URL) else {
                let required = std::env::var_os("CI").is_some()
                    || std::env::var_os("TACIT_REQUIRE_POSTGRES").is_some();
                assert!(
                    !required,
                    "{POSTGRES_URL} is not set but CI / TACIT_REQUIRE_POSTGRES requires the Postgres tests"
                );
                eprintln!("SKIPPED {test} on Postgres: set {POSTGRES_URL} (cargo xtask test does)");
                return None;
            };
            // Random part first: Postgres cuts identifiers at 63 bytes.
            let name: String = format!(
                "t_{}_{}_{}",
                &tacit_rm::sync::http::random_key_prefix()[..10],
                std::process::id(),
                test.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
            )
            .to_lowercase()
            .chars()
            .take(63)
            .collect();
            create_postgres_database(&admin_url, &name);
            let (base, _) = admin_url
                .rsplit_once('/')
                .expect("a postgres URL ends with /DATABASE");
            Some(Database {
                url: format!("{base}/{name}"),
                _dir: None,
            })
        }
    }
}

fn create_postgres_database(admin_url: &str, name: &str) {
    use sqlx::{Connection, Executor};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let mut conn = sqlx::PgConnection::connect(admin_url)
            .await
            .expect("connect to the test Postgres");
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create a test database");
        conn.close().await.ok();
    });
}

/// Runs a test body on SQLite and on Postgres, as two test functions.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name($crate::common::Backend::Sqlite)
            }
            #[test]
            fn postgres() {
                super::$name($crate::common::Backend::Postgres)
            }
        }
    )*};
}

/// A running `tacit-server serve`, killed on drop.
pub struct Server {
    child: Child,
    pub url: String,
    db: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Where stderr (the `tracing` log) goes, for [`Server::start_logged`].
    log: Option<std::path::PathBuf>,
}

impl Server {
    pub fn start(db: &str, args: &[&str]) -> Server {
        Server::start_with_env(db, args, &[])
    }

    /// Starts with extra environment variables (the settings' `TACIT_*` variables).
    pub fn start_with_env(db: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (child, url) = spawn(db, &args, &env, None);
        Server {
            child,
            url,
            db: db.to_string(),
            args,
            env,
            log: None,
        }
    }

    /// Starts with stderr (the `tracing` log at `RUST_LOG=warn`) appended to `log`, which
    /// [`Server::log`] reads; restarts append to it too.
    pub fn start_logged(db: &str, args: &[&str], log: &std::path::Path) -> Server {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (child, url) = spawn(db, &args, &[], Some(log));
        Server {
            child,
            url,
            db: db.to_string(),
            args,
            env: Vec::new(),
            log: Some(log.to_path_buf()),
        }
    }

    /// What the server logged so far ([`Server::start_logged`]; empty otherwise).
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .unwrap_or_default()
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill the server");
        self.child.wait().expect("reap the server");
    }

    /// Starts again on the same database (on a new port).
    pub fn restart(&mut self) {
        let (child, url) = spawn(&self.db, &self.args, &self.env, self.log.as_deref());
        self.child = child;
        self.url = url;
    }

    /// SIGTERM, and the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        self.child.wait().expect("reap the server")
    }

    /// SIGTERM, and the exit status if the process ends within `limit` (else it is killed on
    /// drop and `None` returned).
    pub fn terminate_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().expect("poll the server") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// `host:port` of the listener, for raw sockets.
    pub fn address(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    pub fn transport(&self) -> UreqTransport {
        UreqTransport::new(&self.url, Duration::from_secs(60))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(
    db: &str,
    args: &[String],
    env: &[(String, String)],
    log: Option<&std::path::Path>,
) -> (Child, String) {
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--db", db])
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped());
    if let Some(path) = log {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open the server log");
        command.stderr(file);
    }
    let mut child = command.spawn().expect("start tacit-server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut line)
        .expect("read the server's first line");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line from the server: {line:?}"))
        .to_string();
    (child, url)
}

/// `tacit-server serve` that must refuse to start: its stderr (it must exit non-zero within
/// 60 s, without printing the listening line).
pub fn serve_refused(db: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--db", db])
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tacit-server");
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("poll the server") {
            let out = child.wait_with_output().expect("the server's output");
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(!status.success(), "serve {args:?} started: {stdout}");
            assert!(!stdout.contains("listening on"), "{stdout}");
            return String::from_utf8_lossy(&out.stderr).into_owned();
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve {args:?} did not refuse to start within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `tacit-server token create`, returning the last line of its output.
pub fn token(db: &str, client: &str, admin: bool) -> String {
    token_with(db, client, if admin { &["--admin"] } else { &[] })
}

/// A client token restricted to `models` (`token create --model M`…).
pub fn scoped_token(db: &str, client: &str, models: &[&str]) -> String {
    let args: Vec<&str> = models.iter().flat_map(|m| ["--model", m]).collect();
    token_with(db, client, &args)
}

/// `tacit-server token create` with extra arguments, which must succeed.
pub fn token_with(db: &str, client: &str, extra: &[&str]) -> String {
    let out = token_command(db, client, extra);
    assert!(
        out.status.success(),
        "token create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let token = stdout
        .lines()
        .last()
        .expect("a token line")
        .trim()
        .to_string();
    assert!(
        token.starts_with("tacit_") && token.len() == 6 + 64,
        "{token}"
    );
    token
}

/// `tacit-server token create` with extra arguments, whatever its outcome.
pub fn token_command(db: &str, client: &str, extra: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(["token", "create", "--db", db, "--client", client])
        .args(extra)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run token create")
}

pub fn revoke(db: &str, client: &str) {
    let out = Command::new(BIN)
        .args(["token", "revoke", "--db", db, "--client", client])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run token revoke");
    assert!(out.status.success());
}

pub fn request(
    server: &Server,
    method: &'static str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> HttpResponse {
    server
        .transport()
        .send(&HttpRequest {
            method,
            path: path.to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body,
        })
        .expect("the server answers")
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

pub fn put_model(server: &Server, admin: &str, name: &str, head: &Head) -> HttpResponse {
    let bytes = store::to_bytes(&Weights::new(head.clone())).expect("serialise");
    request(
        server,
        "PUT",
        &protocol::model_path(name),
        &[("Authorization", &bearer(admin))],
        bytes,
    )
}

pub fn pull(server: &Server, token: &str, name: &str) -> Weights {
    let r = request(
        server,
        "GET",
        &protocol::model_path(name),
        &[("Authorization", &bearer(token))],
        vec![],
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let w = store::from_bytes(&r.body).expect("served weights parse");
    assert_eq!(r.etag, Some(protocol::etag(w.version)));
    w
}

pub fn meta(server: &Server, token: &str, name: &str) -> ModelMeta {
    let r = request(
        server,
        "GET",
        &protocol::meta_path(name),
        &[("Authorization", &bearer(token))],
        vec![],
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    serde_json::from_slice(&r.body).expect("meta JSON")
}

pub fn push(server: &Server, token: &str, name: &str, key: &str, body: Vec<u8>) -> HttpResponse {
    request(
        server,
        "POST",
        &protocol::updates_path(name),
        &[
            ("Authorization", &bearer(token)),
            (protocol::IDEMPOTENCY_KEY, key),
        ],
        body,
    )
}

pub fn small_config() -> HeadConfig {
    HeadConfig::new(8, &[4])
}

pub fn delta(config: &HeadConfig, values: Vec<f32>, base_version: u64, n_examples: u64) -> Delta {
    Delta {
        config: config.clone(),
        values,
        base_version,
        n_examples,
        objective: ObjectiveKind::parse("ips").expect("a known objective"),
    }
}

/// Deterministic pseudo-random values of a given scale, from the crate's seeded generator.
pub fn values(n: usize, seed: u64, scale: f64) -> Vec<f32> {
    let mut rng = tacit_rm::rng::Rng::new(seed);
    (0..n).map(|_| (scale * rng.normal()) as f32).collect()
}

pub fn error_code(r: &HttpResponse) -> String {
    let body: protocol::ErrorBody = serde_json::from_slice(&r.body)
        .unwrap_or_else(|_| panic!("not an error body: {}", String::from_utf8_lossy(&r.body)));
    body.code
}

/// Sends `request` as raw bytes on a fresh connection and returns everything the server
/// sends back until it closes the connection (or `limit` passes).
pub fn raw_exchange(server: &Server, request: &[u8], limit: Duration) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(server.address()).expect("connect");
    stream.set_read_timeout(Some(limit)).unwrap();
    stream.write_all(request).expect("send");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// Runs `f` on a fresh pool of the test database, blocking (the tests are synchronous).
fn on_database<T>(url: &str, f: impl AsyncFnOnce(&sqlx::AnyPool) -> T) -> T {
    sqlx::any::install_default_drivers();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let pool = sqlx::AnyPool::connect(url)
            .await
            .expect("open the test database");
        let out = f(&pool).await;
        pool.close().await;
        out
    })
}

/// One scalar query on the test database (`SELECT CAST(… AS BIGINT)`), for checks of what
/// is stored that the API does not show.
pub fn query_i64(url: &str, sql: &str) -> i64 {
    use sqlx::Row;
    on_database(url, async |pool| {
        let row = sqlx::query(sql).fetch_one(pool).await.expect(sql);
        row.try_get::<i64, _>(0).expect("an integer")
    })
}

/// One statement on the test database, for setting up states the API cannot make (an
/// older schema, say).
pub fn execute(url: &str, sql: &str) {
    on_database(url, async |pool| {
        sqlx::query(sql).execute(pool).await.expect(sql);
    })
}

/// A refusal: `status` with the JSON error `code`.
pub fn assert_error(r: &HttpResponse, status: u16, code: &str) {
    assert_eq!(
        r.status,
        status,
        "expected {status} {code}, got {} {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(error_code(r), code);
}

/// A raw HTTP answer: status, headers (names lowercase, in order, repeats kept) and body.
pub struct RawAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawAnswer {
    /// Every value of header `name`, joined as one list (`Vary: a` + `Vary: b` → "a, b").
    pub fn header(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }

    /// Whether the comma-separated list of header `name` holds `item` (case-insensitive).
    pub fn lists(&self, name: &str, item: &str) -> bool {
        self.header(name).is_some_and(|v| {
            v.split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(item))
        })
    }

    pub fn error_code(&self) -> String {
        let body: protocol::ErrorBody = serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!("not an error body: {}", String::from_utf8_lossy(&self.body))
        });
        body.code
    }
}

/// One request on a fresh connection (`Connection: close`) with every header of the answer
/// kept — the crate's transport shows the ETag only, and CORS tests read the others.
pub fn raw_request(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RawAnswer {
    use std::io::{Read, Write};
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        server.address(),
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = std::net::TcpStream::connect(server.address()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(head.as_bytes()).expect("send the head");
    stream.write_all(body).expect("send the body");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read the answer");
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an answer head");
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    RawAnswer {
        status,
        headers,
        body: answer[split + 4..].to_vec(),
    }
}

/// The step of a round: new global − old, in f64.
pub fn step(before: &Head, after: &Head) -> Vec<f64> {
    after
        .to_flat()
        .iter()
        .zip(before.to_flat())
        .map(|(a, b)| f64::from(*a) - f64::from(b))
        .collect()
}

/// Scales to L2 norm at most `bound`, in f64 (the server's clip, independently).
pub fn clip(values: &[f64], bound: f64) -> Vec<f64> {
    let norm = values.iter().map(|v| v * v).sum::<f64>().sqrt();
    let scale = if norm > bound { bound / norm } else { 1.0 };
    values.iter().map(|v| v * scale).collect()
}

pub fn as_f64(values: &[f32]) -> Vec<f64> {
    values.iter().map(|&v| f64::from(v)).collect()
}

pub fn assert_close(got: &[f64], want: &[f64], tolerance: f64) {
    assert_eq!(got.len(), want.len());
    for (j, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() < tolerance, "coordinate {j}: {g} vs {w}");
    }
}

/// The value of header `name` in a raw HTTP answer.
pub fn raw_header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    answer.lines().take_while(|l| !l.is_empty()).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Column 0 of every row of `sql` as bytes (a BLOB/BYTEA or NULL column; NULL is empty),
/// for the checks that read what is stored.
pub fn query_bytes(url: &str, sql: &str) -> Vec<Vec<u8>> {
    use sqlx::Row;
    on_database(url, async |pool| {
        let rows = sqlx::query(sql).fetch_all(pool).await.expect(sql);
        rows.iter()
            .map(|r| {
                r.try_get::<Option<Vec<u8>>, _>(0)
                    .expect("bytes")
                    .unwrap_or_default()
            })
            .collect()
    })
}

/// Column 0 of every row of `sql` as text (NULL is empty).
pub fn query_strings(url: &str, sql: &str) -> Vec<String> {
    use sqlx::Row;
    on_database(url, async |pool| {
        let rows = sqlx::query(sql).fetch_all(pool).await.expect(sql);
        rows.iter()
            .map(|r| {
                r.try_get::<Option<String>, _>(0)
                    .expect("text")
                    .unwrap_or_default()
            })
            .collect()
    })
}
