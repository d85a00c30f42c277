//! `tacit-server` command line; every `serve` setting also reads an environment variable, so
//! that replicas are configured the same way in a container.

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::aggregate::{AggregationConfig, Aggregator, DpFedAvg};

#[derive(Parser)]
#[command(name = "tacit-server", version, about = "tacit-rm weight sync server")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve the sync API.
    Serve(ServeArgs),
    /// Manage bearer tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Load and chaos run on loopback against a fresh database: honest and malicious
    /// clients, optional SIGKILLs of the server; exits non-zero if the accounting fails.
    Bench(BenchArgs),
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it as the last line of output.
    Create {
        #[arg(long, env = "TACIT_DB")]
        db: String,
        #[arg(long)]
        client: String,
        /// May create and replace models.
        #[arg(long)]
        admin: bool,
        /// Restricts the token to this model (repeat for several); without it, a client
        /// token may use every model. Admin tokens are never restricted.
        #[arg(long = "model", value_name = "MODEL", conflicts_with = "admin")]
        models: Vec<String>,
    },
    /// Revoke every token of a client.
    Revoke {
        #[arg(long, env = "TACIT_DB")]
        db: String,
        #[arg(long)]
        client: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AggregatorName {
    Mean,
    TrimmedMean,
    Median,
}

#[derive(Args, Clone, Debug)]
pub struct ServeArgs {
    #[arg(long, env = "TACIT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// `sqlite://FILE` (created if missing) or `postgres://USER@HOST:PORT/DB`.
    #[arg(long, env = "TACIT_DB", default_value = "sqlite://tacit-server.db")]
    pub db: String,
    /// Postgres connections per replica (SQLite always uses one).
    #[arg(long, env = "TACIT_DB_CONNECTIONS", default_value_t = 8)]
    pub db_connections: u32,
    /// An origin (`scheme://host[:port]`, exactly as browsers send it) whose pages may call
    /// the API (CORS); repeat the flag for several, or `*` alone for any. The environment
    /// variable takes a comma-separated list and is read only when no flag is given (a flag
    /// replaces it, as for every other setting). None: no CORS headers are sent.
    #[arg(
        long = "allow-origin",
        env = "TACIT_ALLOW_ORIGINS",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    pub allow_origins: Vec<String>,
    #[command(flatten)]
    pub policy: Policy,
    #[command(flatten)]
    pub timeouts: Timeouts,
}

/// How long the server waits for a slow client, and for itself at shutdown.
#[derive(Args, Clone, Debug)]
pub struct Timeouts {
    /// A connection that has not sent a complete request head within this many seconds
    /// (idle keep-alive connections included) is closed: slow-header clients cannot hold
    /// connections open.
    #[arg(long, env = "TACIT_HEADER_READ_TIMEOUT", default_value_t = 10.0)]
    pub header_read_timeout: f64,
    /// A request body not received in full within this many seconds is refused (408).
    #[arg(long, env = "TACIT_BODY_READ_TIMEOUT", default_value_t = 60.0)]
    pub body_read_timeout: f64,
    /// On SIGTERM, requests in flight get this many seconds to finish; then the remaining
    /// connections are closed (their transactions roll back whole) and the process exits.
    #[arg(long, env = "TACIT_SHUTDOWN_GRACE", default_value_t = 10.0)]
    pub shutdown_grace: f64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header_read_timeout: 10.0,
            body_read_timeout: 60.0,
            shutdown_grace: 10.0,
        }
    }
}

impl Timeouts {
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("header-read-timeout", self.header_read_timeout),
            ("body-read-timeout", self.body_read_timeout),
            ("shutdown-grace", self.shutdown_grace),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
                return Err(format!("--{name} must be in (0, 86400] seconds (got {v})"));
            }
        }
        Ok(())
    }

    pub fn header_read(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.header_read_timeout)
    }

    pub fn body_read(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.body_read_timeout)
    }

    pub fn grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.shutdown_grace)
    }
}

/// What the server accepts and how it aggregates. Replicas sharing a database must run with
/// the same policy.
#[derive(Args, Clone, Debug)]
pub struct Policy {
    /// Largest request body, bytes.
    #[arg(long, env = "TACIT_BODY_LIMIT", default_value_t = 16 << 20)]
    pub body_limit: usize,
    /// A round closes when this many clients have updates pending (a client's several
    /// updates in one round are merged into one contribution)…
    #[arg(long, env = "TACIT_ROUND_UPDATES", default_value_t = 10)]
    pub round_updates: u64,
    /// …or when the oldest pending update is this old (seconds).
    #[arg(long, env = "TACIT_ROUND_SECONDS", default_value_t = 60.0)]
    pub round_seconds: f64,
    #[arg(long, env = "TACIT_AGGREGATOR", value_enum, default_value_t = AggregatorName::Mean)]
    pub aggregator: AggregatorName,
    /// Fraction trimmed at each end of every coordinate by `trimmed-mean`.
    #[arg(long, env = "TACIT_TRIM_FRACTION", default_value_t = 0.1)]
    pub trim_fraction: f64,
    /// Server-side L2 clip of every delta and of every round's step.
    #[arg(long, env = "TACIT_CLIP_NORM", default_value_t = 10.0)]
    pub clip_norm: f64,
    /// Deltas with a larger L2 norm are refused (422) rather than clipped.
    #[arg(long, env = "TACIT_MAX_UPDATE_NORM", default_value_t = 100.0)]
    pub max_update_norm: f64,
    /// Standard deviation of the Gaussian noise added to every coordinate of a round's step.
    #[arg(long, env = "TACIT_NOISE_STD", default_value_t = 0.0)]
    pub noise_std: f64,
    /// Client-level DP-FedAvg with an accountant (off when absent): every round sums the
    /// clipped deltas over the expected cohort (`--round-updates`) and adds Gaussian noise of
    /// std Z·clip-norm/cohort per coordinate; a round that would take ε over
    /// `--dp-budget-epsilon` is not released. Needs `--population` and `--dp-budget-epsilon`,
    /// the `mean` aggregator, and no `--noise-std`.
    #[arg(long, env = "TACIT_DP_NOISE_MULTIPLIER", value_name = "Z")]
    pub dp_noise_multiplier: Option<f64>,
    /// δ of the (ε, δ) guarantee under DP (well below 1 / population).
    #[arg(long, env = "TACIT_DP_DELTA", value_name = "D", default_value_t = 1e-5)]
    pub dp_delta: f64,
    /// The ε no model may exceed under DP: the round that would is refused.
    #[arg(long, env = "TACIT_DP_BUDGET_EPSILON", value_name = "E")]
    pub dp_budget_epsilon: Option<f64>,
    /// The expected number of clients under DP: the sampling rate is
    /// q = min(round-updates / population, 1).
    #[arg(long, env = "TACIT_POPULATION", value_name = "N")]
    pub population: Option<u64>,
    /// Secure aggregation (SecAgg, `crate::secagg`) for these models (comma-separated), or
    /// every model when given without a value (or `*`): the server learns only each round's
    /// sum, plain pushes to them are refused (409 `secure_aggregation_required`), and a round's
    /// cohort is `--round-updates` clients. Other models stay in plain mode.
    #[arg(
        long,
        env = "TACIT_SECURE_AGGREGATION",
        value_name = "MODELS",
        num_args = 0..=1,
        default_missing_value = "*"
    )]
    pub secure_aggregation: Option<String>,
    /// Shamir threshold t of a secure-aggregation round: every phase needs t survivors, and
    /// t must be a strict majority of the cohort. Default ⌊2n/3⌋ + 1 for a cohort of n.
    #[arg(long, env = "TACIT_SECAGG_THRESHOLD", value_name = "T")]
    pub secagg_threshold: Option<u32>,
    /// How long each phase after the first waits for the members that have not answered
    /// (seconds); they are dropouts after it. The first (joining) waits `--round-seconds`.
    #[arg(long, env = "TACIT_SECAGG_PHASE_SECONDS", default_value_t = 30.0)]
    pub secagg_phase_seconds: f64,
    /// Deltas based on a global more than this many versions old are refused (409).
    #[arg(long, env = "TACIT_MAX_STALENESS", default_value_t = 10)]
    pub max_staleness: u64,
    /// Updates claiming more examples than this are refused (422 `examples_over_bound`).
    /// At most 2^63 - 1 (the stored width).
    #[arg(
        long,
        env = "TACIT_MAX_EXAMPLES_PER_UPDATE",
        default_value_t = 1_000_000
    )]
    pub max_examples_per_update: u64,
    /// FedAvg weighs a client's contribution by min(n_examples, this): a client cannot buy
    /// more than this weight in a round by claiming examples.
    #[arg(long, env = "TACIT_FEDAVG_WEIGHT_CAP", default_value_t = 1000)]
    pub fedavg_weight_cap: u64,
    /// Pushes a client (all its tokens, all models) may store per minute; beyond it 429
    /// `rate_limited` with `Retry-After`.
    #[arg(long, env = "TACIT_CLIENT_PUSHES_PER_MINUTE", default_value_t = 60)]
    pub client_pushes_per_minute: u64,
    /// Bytes of pending (not yet aggregated) deltas a model may hold; beyond it 507
    /// `quota_exceeded` until a round closes.
    #[arg(long, env = "TACIT_MAX_PENDING_BYTES", default_value_t = 256 << 20)]
    pub max_pending_bytes: u64,
    /// Pending updates one client may hold per model (they are merged into one
    /// contribution anyway); beyond it 507 `quota_exceeded` until a round closes.
    #[arg(long, env = "TACIT_CLIENT_PENDING_UPDATES", default_value_t = 100)]
    pub client_pending_updates: u64,
    /// Rounds for which aggregated deltas are kept (0: deleted in the transaction that
    /// aggregates them). The update rows stay (idempotent replays, audit); only the delta
    /// bytes go.
    #[arg(long, env = "TACIT_DELTA_RETENTION_ROUNDS", default_value_t = 0)]
    pub delta_retention_rounds: u64,
}

impl Policy {
    pub fn validate(&self) -> Result<(), String> {
        let positive = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!("--{name} must be positive and finite (got {v})"))
            }
        };
        positive("clip-norm", self.clip_norm)?;
        positive("max-update-norm", self.max_update_norm)?;
        positive("round-seconds", self.round_seconds)?;
        if !(self.noise_std.is_finite() && self.noise_std >= 0.0) {
            return Err(format!("--noise-std must be >= 0 (got {})", self.noise_std));
        }
        if !(0.0..0.5).contains(&self.trim_fraction) {
            return Err(format!(
                "--trim-fraction must be in [0, 0.5) (got {})",
                self.trim_fraction
            ));
        }
        if self.round_updates == 0 {
            return Err("--round-updates must be at least 1".into());
        }
        if self.max_examples_per_update > i64::MAX as u64 {
            return Err(format!(
                "--max-examples-per-update must be at most {} (got {})",
                i64::MAX,
                self.max_examples_per_update
            ));
        }
        if self.fedavg_weight_cap == 0 {
            return Err("--fedavg-weight-cap must be at least 1".into());
        }
        if self.client_pending_updates == 0 {
            return Err("--client-pending-updates must be at least 1".into());
        }
        if self.client_pushes_per_minute == 0 {
            return Err("--client-pushes-per-minute must be at least 1".into());
        }
        if self.delta_retention_rounds > i64::MAX as u64 {
            return Err("--delta-retention-rounds is out of range".into());
        }
        if self.body_limit < 1024 {
            return Err("--body-limit must be at least 1024 bytes".into());
        }
        self.validate_dp()?;
        self.validate_secagg()
    }

    /// Whether `model` is aggregated securely.
    pub fn secure_aggregation(&self, model: &str) -> bool {
        self.secure_aggregation.as_deref().is_some_and(|list| {
            list.split(',')
                .map(str::trim)
                .any(|m| m == "*" || m == model)
        })
    }

    /// The cohort n and threshold t of a secure-aggregation round.
    pub fn secagg_cohort(&self) -> (u32, u32) {
        let n = u32::try_from(self.round_updates).unwrap_or(u32::MAX);
        (n, self.secagg_threshold.unwrap_or(n * 2 / 3 + 1).min(n))
    }

    fn validate_secagg(&self) -> Result<(), String> {
        let Some(list) = &self.secure_aggregation else {
            return Ok(());
        };
        if list
            .split(',')
            .map(str::trim)
            .any(|m| m != "*" && !tacit_rm::sync::protocol::valid_model_name(m))
        {
            return Err(format!(
                "--secure-aggregation takes model names or * (got '{list}')"
            ));
        }
        if !(self.secagg_phase_seconds.is_finite()
            && self.secagg_phase_seconds > 0.0
            && self.secagg_phase_seconds <= 86_400.0)
        {
            return Err("--secagg-phase-seconds must be in (0, 86400]".into());
        }
        if self.aggregator != AggregatorName::Mean {
            return Err(
                "--secure-aggregation needs --aggregator mean: the server never sees one \
                 update, only the sum"
                    .into(),
            );
        }
        if !(1..=255).contains(&self.round_updates) {
            return Err(
                "--secure-aggregation needs --round-updates (the cohort) in [1, 255]".into(),
            );
        }
        let (n, t) = self.secagg_cohort();
        if t > n || 2 * t <= n {
            return Err(format!(
                "--secagg-threshold {t} must be a strict majority of the cohort {n} and at most it"
            ));
        }
        Ok(())
    }

    /// The DP settings: all or nothing, and sound together.
    fn validate_dp(&self) -> Result<(), String> {
        let Some(z) = self.dp_noise_multiplier else {
            if self.dp_budget_epsilon.is_some() || self.population.is_some() {
                return Err(
                    "--dp-budget-epsilon and --population need --dp-noise-multiplier".into(),
                );
            }
            return Ok(());
        };
        if !(z.is_finite() && z > 0.0) {
            return Err(format!(
                "--dp-noise-multiplier must be positive and finite (got {z})"
            ));
        }
        if !(self.dp_delta > 0.0 && self.dp_delta < 1.0) {
            return Err(format!(
                "--dp-delta must be in (0, 1) (got {})",
                self.dp_delta
            ));
        }
        let Some(budget) = self.dp_budget_epsilon else {
            return Err("--dp-noise-multiplier needs --dp-budget-epsilon".into());
        };
        if !(budget.is_finite() && budget > 0.0) {
            return Err(format!(
                "--dp-budget-epsilon must be positive and finite (got {budget})"
            ));
        }
        match self.population {
            None => return Err("--dp-noise-multiplier needs --population".into()),
            Some(0) => return Err("--population must be at least 1".into()),
            Some(_) => {}
        }
        if self.noise_std != 0.0 {
            return Err(
                "--noise-std and --dp-noise-multiplier are exclusive: DP calibrates its own noise"
                    .into(),
            );
        }
        if self.aggregator != AggregatorName::Mean {
            return Err(
                "--dp-noise-multiplier needs --aggregator mean (the DP-FedAvg sum of clipped deltas)"
                    .into(),
            );
        }
        tacit_rm::sync::privacy::PrivacyBudget::new(z, self.sampling_rate(), self.dp_delta, budget)
            .map_err(|e| format!("invalid DP settings: {e}"))?;
        Ok(())
    }

    /// q = min(round-updates / population, 1) (0 without DP).
    pub fn sampling_rate(&self) -> f64 {
        self.population.map_or(0.0, |n| {
            (self.round_updates as f64 / n.max(1) as f64).min(1.0)
        })
    }

    /// A fresh accountant with this policy's DP parameters (`None` without DP). Valid after
    /// [`Policy::validate`].
    pub fn privacy_budget(&self) -> Option<tacit_rm::sync::privacy::PrivacyBudget> {
        let z = self.dp_noise_multiplier?;
        tacit_rm::sync::privacy::PrivacyBudget::new(
            z,
            self.sampling_rate(),
            self.dp_delta,
            self.dp_budget_epsilon?,
        )
        .ok()
    }

    pub fn aggregation(&self) -> AggregationConfig {
        AggregationConfig {
            aggregator: match self.aggregator {
                AggregatorName::Mean => Aggregator::Mean,
                AggregatorName::TrimmedMean => Aggregator::TrimmedMean {
                    fraction: self.trim_fraction,
                },
                AggregatorName::Median => Aggregator::Median,
            },
            clip_norm: self.clip_norm,
            noise_std: self.noise_std,
            weight_cap: self.fedavg_weight_cap,
            dp: self.dp_noise_multiplier.map(|z| DpFedAvg {
                noise_multiplier: z,
                expected_cohort: self.round_updates,
            }),
        }
    }
}

#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// Also run on this Postgres database (the SQLite run, on a fresh file in a temporary
    /// directory, always happens).
    #[arg(long)]
    pub postgres: Option<String>,
    /// Simulated clients (async tasks in this process, one token each).
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Fraction of the clients that attack instead of pushing honestly: ⌊clients × F⌋ of
    /// them, so that a run of fewer than 10 clients has none at the default.
    #[arg(long, default_value_t = 0.1)]
    pub malicious_fraction: f64,
    /// SIGKILLs of the server (a child process) at random points of the run, each followed
    /// by a restart on the same database.
    #[arg(long, default_value_t = 0)]
    pub chaos_kills: usize,
    /// Seed of the kill points (and of the garbage the attackers send).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Duration of the run, seconds; the honest clients then finish the push in hand.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// The server's `--round-updates` during the run (at most the number of clients).
    #[arg(long, default_value_t = 10)]
    pub round_updates: u64,
    /// The server's `--client-pushes-per-minute` (the attackers' flood runs into it).
    #[arg(long, default_value_t = 60)]
    pub client_pushes_per_minute: u64,
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    #[arg(long)]
    pub markdown: Option<std::path::PathBuf>,
}
