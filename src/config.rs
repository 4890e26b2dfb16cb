//! Settings, layered: command-line flags > `FERRY_*` environment > `ferry.toml` >
//! embedded defaults. Every key `section.name` has the environment variable
//! `FERRY_SECTION_NAME` (so `bulk_import.max_items` is `FERRY_BULK_IMPORT_MAX_ITEMS`);
//! the list of keys is the defaults themselves, so a new setting needs no extra wiring.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A setting that could not be read or is out of range; names the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    File { path: String, source: std::io::Error },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: String, message: String },
    #[error("unknown setting `{key}` in {origin}")]
    UnknownKey { key: String, origin: String },
    #[error("setting `{key}` ({env}): {message}")]
    Invalid {
        key: String,
        env: String,
        message: String,
    },
}

/// Where exported files and uploads are kept (`storage.backend`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// A folder, served by ferry's HTTP route.
    #[default]
    Local,
    S3,
}

/// How e-mail leaves (`mail.transport`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MailTransport {
    /// An `.eml` file per message in `mail.drop_dir`.
    #[default]
    Drop,
    Smtp,
}

/// How the SMTP connection is secured (`mail.smtp_tls`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    #[default]
    Starttls,
    Tls,
    /// Only for local relays.
    Plain,
}

/// Whether a client certificate is asked for or required (`server.tls_client_auth`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Verified when sent; connections without one still work (health probes).
    #[default]
    Optional,
    Required,
}

/// How log lines are written (`log.format`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// The settings with a fixed set of values, checked before the settings are built
/// so that a wrong value names its setting and variable.
const CHOICES: [(&str, &str, IsChoice); 5] = [
    (
        "server.tls_client_auth",
        "`optional` or `required`",
        is::<ClientAuth>,
    ),
    ("storage.backend", "`local` or `s3`", is::<StorageBackend>),
    ("mail.transport", "`drop` or `smtp`", is::<MailTransport>),
    ("mail.smtp_tls", "`starttls`, `tls` or `plain`", is::<SmtpTls>),
    ("log.format", "`human` or `json`", is::<LogFormat>),
];

/// Tells whether a value is one of a setting's choices.
type IsChoice = fn(&str) -> bool;

/// Whether `value` names a variant of `T`.
fn is<T: serde::de::DeserializeOwned>(value: &str) -> bool {
    toml::Value::from(value).try_into::<T>().is_ok()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub storage: StorageConfig,
    pub jobs: JobsConfig,
    pub exports: ExportsConfig,
    pub bulk_import: BulkImportConfig,
    pub plans: PlansConfig,
    pub mail: MailConfig,
    pub log: LogConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub http: HttpConfig,
    pub audit: AuditConfig,
    pub hub: HubConfig,
}

/// The bulk imports hub (`/hub` on the HTTP listener).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HubConfig {
    /// Minutes a signed-in session may go unused before it ends.
    pub session_idle_minutes: u64,
    /// Sessions open at once in one process; the longest idle ends to make room.
    pub max_sessions: u32,
    /// Sign-in attempts one client address may make per minute (a key cannot be
    /// guessed faster; a person who mistypes still has several tries); 0: no limit.
    pub sign_ins_per_minute: u32,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            session_idle_minutes: 30,
            max_sessions: 10_000,
            sign_ins_per_minute: 10,
        }
    }
}

/// The audit trail (`ferry admin audit`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Days an audit event is kept; 0: forever.
    pub retention_days: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig { retention_days: 365 }
    }
}

/// The REST door on the HTTP listener.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Browser origins allowed to call the REST routes (CORS), comma-separated
    /// (`https://dash.acme.test,https://ops.acme.test`); `*` for any origin; empty
    /// (the default): none.
    pub cors_origins: String,
}

impl HttpConfig {
    /// The configured origins, trimmed, without empty entries.
    pub fn origins(&self) -> Vec<String> {
        self.cors_origins
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_string())
            .filter(|o| !o.is_empty())
            .collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// How long a verified key and its organization are reused without reading the
    /// database: the bound on how late a revocation or a plan change is seen on
    /// SQLite (PostgreSQL replicas hear changes at once through `NOTIFY`).
    pub cache_ttl_millis: u64,
    /// The identity provider's JWKS: a file path or an HTTP(S) URL; empty: no
    /// tokens, API keys only.
    pub jwt_jwks: String,
    /// The `iss` tokens must carry; empty: not checked.
    pub jwt_issuer: String,
    /// The `aud` tokens must carry.
    pub jwt_audience: String,
    /// The claim holding the organization id.
    pub jwt_org_claim: String,
    /// The claim holding the permissions: a list, or a space-separated scope string.
    pub jwt_permissions_claim: String,
    /// Clock skew allowed on `exp` and `nbf`.
    pub jwt_leeway_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            cache_ttl_millis: 5_000,
            jwt_jwks: String::new(),
            jwt_issuer: String::new(),
            jwt_audience: "ferry".into(),
            jwt_org_claim: "org_id".into(),
            jwt_permissions_claim: "permissions".into(),
            jwt_leeway_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Unary calls per second per organization (token bucket); 0: no limit.
    pub calls_per_second_per_org: u32,
    /// Calls an organization may make at once above its rate; 0: the rate itself.
    pub burst_per_org: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// gRPC listen address.
    pub grpc_addr: String,
    /// HTTP/1.1 listen address for file downloads and `/metrics`.
    pub http_addr: String,
    /// Base URL clients use to reach `http_addr` (signed download links).
    /// Empty: `http://<http_addr>`.
    pub public_url: String,
    /// Root of the embedded default's files (SQLite, file store, mail drop).
    pub data_dir: String,
    /// Seconds to let running calls finish on shutdown.
    pub shutdown_grace_secs: u64,
    /// Create a default organization and key on the first start of an empty database.
    pub bootstrap: bool,
    /// Unary calls served at once; past it new calls fail fast with
    /// RESOURCE_EXHAUSTED `OVERLOADED` and RetryInfo instead of queueing.
    pub max_concurrent_calls: u32,
    /// Open watch streams (`WatchExport`, `WatchImport`), counted apart from calls.
    pub max_watchers: u32,
    /// Uploads (`UploadImport` streams) received at once, counted apart from calls.
    pub max_concurrent_uploads: u32,
    /// Callers waiting for a pooled database connection past which new calls are
    /// shed as `OVERLOADED` rather than queued behind the pool's timeout.
    pub max_pool_waiters: u32,
    /// The listeners' certificate chain (PEM); empty: plaintext. A changed file is
    /// picked up within a second, without a restart.
    pub tls_cert: String,
    /// The certificate's private key (PEM).
    pub tls_key: String,
    /// With a certificate, refuse plaintext connections (false: serve both on the
    /// same ports, for a migration).
    pub tls_require: bool,
    /// CA bundle (PEM) client certificates are verified against; empty: none asked.
    pub tls_client_ca: String,
    /// `optional` (a client may connect without a certificate: health probes) or
    /// `required`.
    pub tls_client_auth: ClientAuth,
    /// TOML file mapping client-certificate identities (URI or DNS SAN) to service
    /// principals; empty: certificates authenticate no one by themselves.
    pub tls_identities: String,
    /// How often the readiness probes check the database and the file store
    /// (`/readyz`, gRPC health, the database breaker).
    pub probe_interval_millis: u64,
    /// How long a probe waits for an answer before the dependency counts as out.
    pub probe_timeout_millis: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `postgres://…` or a SQLite file path; empty: `<data_dir>/ferry.db`.
    pub url: String,
    pub max_connections: u32,
    /// The longest a call waits for a pooled connection while the database is
    /// thought up (an outage the probe found refuses at once).
    pub acquire_timeout_millis: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `local` (a folder, served by ferry's HTTP route) or `s3`.
    pub backend: StorageBackend,
    /// Folder of the local store; empty: `<data_dir>/files`.
    pub local_dir: String,
    /// Key of the HMAC that signs local download URLs; empty: generated once and kept
    /// in `<data_dir>/signing-key`.
    pub signing_key: String,
    pub s3_bucket: String,
    /// Prefix of every object key (`ferry/`).
    pub s3_prefix: String,
    /// Empty: the standard AWS chain (AWS_REGION, profile, …).
    pub s3_region: String,
    /// An S3-compatible endpoint (`http://127.0.0.1:9000`); empty: AWS.
    pub s3_endpoint: String,
    pub s3_force_path_style: bool,
    /// Empty: credentials from the standard AWS chain.
    pub s3_access_key_id: String,
    pub s3_secret_access_key: String,
    /// Server-side encryption asked for on every object ferry writes: `AES256`
    /// (S3-managed keys) or `aws:kms`; empty: the bucket's default.
    pub s3_sse: String,
    /// The KMS key of `aws:kms` (id, alias or ARN); empty: the account's default key.
    pub s3_kms_key_id: String,
    /// Longest wait to open a connection to S3.
    pub s3_connect_timeout_millis: u64,
    /// Longest wait for the first byte of an answer, from the start of a request
    /// (its body included: an 8 MiB part must go up within it), and between two
    /// chunks of a download.
    pub s3_read_timeout_secs: u64,
    /// Longest time one S3 operation takes, its retries included (equal to the
    /// read timeout by default: a request that timed out is retried by the job, with
    /// backoff, not at once inside the call).
    pub s3_operation_timeout_secs: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: StorageBackend::Local,
            local_dir: String::new(),
            signing_key: String::new(),
            s3_bucket: String::new(),
            s3_prefix: String::new(),
            s3_region: String::new(),
            s3_endpoint: String::new(),
            s3_force_path_style: false,
            s3_access_key_id: String::new(),
            s3_secret_access_key: String::new(),
            s3_sse: String::new(),
            s3_kms_key_id: String::new(),
            s3_connect_timeout_millis: 3_000,
            s3_read_timeout_secs: 10,
            s3_operation_timeout_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Imports and exports one process runs at the same time (the work lane).
    pub workers: u32,
    /// E-mail deliveries one process runs at the same time (the delivery lane,
    /// apart from imports and exports, so a stalled relay never holds them up).
    pub delivery_workers: u32,
    /// How long a claimed job stays leased without a heartbeat.
    pub lease_secs: u64,
    /// How often a running job renews its lease and checks for cancellation.
    pub heartbeat_millis: u64,
    /// Safety-net poll when no wake-up arrives.
    pub poll_millis: u64,
    /// Attempts before a job that keeps failing ends FAILED.
    pub max_attempts: u32,
    /// First retry delay; doubled per attempt up to `retry_max_secs`.
    pub retry_base_millis: u64,
    pub retry_max_secs: u64,
    /// Days an ended job (with its import errors and stored files) is kept after
    /// it ended; 0: forever. A completed export is kept until its file expires
    /// (`exports.retention_days`) and then this long.
    pub retention_days: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ExportsConfig {
    /// Queued or running exports one organization may have.
    pub max_active_per_org: u32,
    /// Days a finished file is kept.
    pub retention_days: u64,
    /// Lifetime of a download URL, seconds (at most 7 days).
    pub download_url_ttl_secs: u64,
    /// Entities read per query while exporting.
    pub batch_rows: u32,
    /// Pause between batches, to spare a busy database (0: none).
    pub batch_pause_millis: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BulkImportConfig {
    /// Server-wide cap on rows per import; lowers every plan's limit. 0: no cap.
    pub max_items: u64,
    /// Largest accepted upload, bytes.
    pub max_upload_bytes: u64,
    /// Largest accepted XLSX upload, bytes: a workbook cannot be read as it arrives
    /// and its shared strings are held in memory while it is read.
    pub max_xlsx_bytes: u64,
    /// Rows written per transaction by the import job.
    pub batch_rows: u32,
    /// Imports one organization may have queued or running at once.
    pub max_active_per_org: u32,
    /// How long a file uploaded ahead of its import (the hub's staged upload) is
    /// kept, minutes.
    pub staged_minutes: u64,
    /// Files one organization may hold uploaded ahead of their import at once.
    pub max_staged_per_org: u32,
    /// Days an import's error report (the CSV of its failed rows) is kept after the
    /// import completed; then it is deleted and its download answers 410
    /// `IMPORT_REPORT_EXPIRED`. 0: kept as long as the import.
    pub report_retention_days: u64,
}

/// Rows per import for each plan.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PlansConfig {
    pub freemium_import_rows: u64,
    pub starter_import_rows: u64,
    pub growth_import_rows: u64,
    pub enterprise_import_rows: u64,
    pub usage_based_import_rows: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MailConfig {
    /// `drop` (an `.eml` file per message in `drop_dir`) or `smtp`.
    pub transport: MailTransport,
    /// Folder of the mail drop; empty: `<data_dir>/mail`.
    pub drop_dir: String,
    pub smtp_host: String,
    pub smtp_port: u16,
    /// `starttls`, `tls` or `plain` (plain only for local relays).
    pub smtp_tls: SmtpTls,
    pub smtp_username: String,
    pub smtp_password: String,
    /// The From of messages that name no sender.
    pub system_sender: String,
    /// Lifetime of the download link in delivery e-mails, seconds (at most 7 days).
    pub link_ttl_secs: u64,
    /// Pause between two messages of one delivery (a throttle for small relays).
    pub pause_millis: u64,
    /// Longest wait for the relay's TCP (and TLS) connection.
    pub smtp_connect_timeout_secs: u64,
    /// Longest one message's whole conversation may take, greeting to the answer
    /// to its data (lettre's async client bounds no single command, so this bounds
    /// them all); a timeout is a transient failure, retried with backoff.
    pub smtp_send_timeout_secs: u64,
    /// Conversations in a row that get no answer (time out, refused, cut) before
    /// the relay is thought down:
    /// deliveries then wait in the queue (attempts not counted) instead of each
    /// spending its timeout.
    pub smtp_breaker_timeouts: u32,
    /// How long deliveries wait once the relay is thought down, before one tries
    /// again (a readiness probe that reaches the relay ends the wait sooner).
    pub smtp_breaker_cooldown_secs: u64,
}

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig {
            transport: MailTransport::Drop,
            drop_dir: String::new(),
            smtp_host: "127.0.0.1".into(),
            smtp_port: 587,
            smtp_tls: SmtpTls::Starttls,
            smtp_username: String::new(),
            smtp_password: String::new(),
            system_sender: "ferry <no-reply@ferry.localhost>".into(),
            link_ttl_secs: 72 * 3600,
            pause_millis: 0,
            smtp_connect_timeout_secs: 5,
            smtp_send_timeout_secs: 30,
            smtp_breaker_timeouts: 3,
            smtp_breaker_cooldown_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `human` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter (`info`, `ferry=debug,info`).
    pub level: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            grpc_addr: "127.0.0.1:50051".into(),
            http_addr: "127.0.0.1:50052".into(),
            public_url: String::new(),
            data_dir: "./ferry-data".into(),
            shutdown_grace_secs: 10,
            bootstrap: true,
            max_concurrent_calls: 4_096,
            max_watchers: 20_000,
            max_concurrent_uploads: 64,
            max_pool_waiters: 2_048,
            tls_cert: String::new(),
            tls_key: String::new(),
            tls_require: true,
            tls_client_ca: String::new(),
            tls_client_auth: ClientAuth::Optional,
            tls_identities: String::new(),
            probe_interval_millis: 500,
            probe_timeout_millis: 1_000,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: String::new(),
            max_connections: 10,
            acquire_timeout_millis: 5_000,
        }
    }
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            workers: 2,
            delivery_workers: 2,
            lease_secs: 30,
            heartbeat_millis: 1000,
            poll_millis: 5000,
            max_attempts: 3,
            retry_base_millis: 1000,
            retry_max_secs: 300,
            retention_days: 90,
        }
    }
}

impl Default for ExportsConfig {
    fn default() -> Self {
        ExportsConfig {
            max_active_per_org: 3,
            retention_days: 7,
            download_url_ttl_secs: 15 * 60,
            batch_rows: 2_000,
            batch_pause_millis: 0,
        }
    }
}

impl Default for BulkImportConfig {
    fn default() -> Self {
        BulkImportConfig {
            max_items: 0,
            max_upload_bytes: 512 * 1024 * 1024,
            max_xlsx_bytes: 64 * 1024 * 1024,
            batch_rows: 2_000,
            max_active_per_org: 3,
            staged_minutes: 60,
            max_staged_per_org: 20,
            report_retention_days: 7,
        }
    }
}

impl Default for PlansConfig {
    fn default() -> Self {
        PlansConfig {
            freemium_import_rows: 4_000,
            starter_import_rows: 10_000,
            growth_import_rows: 50_000,
            enterprise_import_rows: 100_000,
            usage_based_import_rows: 100_000,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

/// `FERRY_*` variables that are not settings but are read by name: the client's
/// connection, the log filter, and the test suite's.
pub const OTHER_ENV: [&str; 10] = [
    "FERRY_URL",
    "FERRY_API_KEY",
    "FERRY_CA_CERT",
    "FERRY_CLIENT_CERT",
    "FERRY_CLIENT_KEY",
    "FERRY_ORG",
    "FERRY_PROFILE",
    "FERRY_LOG",
    "FERRY_TEST_DATABASE_URL",
    "FERRY_TEST_MAX_CONNECTIONS",
];

/// `FERRY_*` variables in `env` that name no setting, each with the closest
/// setting's variable when one is close: a misspelt variable is otherwise silently
/// ignored.
pub fn unknown_env(env: impl IntoIterator<Item = (String, String)>) -> Vec<(String, Option<String>)> {
    let known: Vec<String> = Config::default()
        .keys()
        .iter()
        .map(|k| env_name(k))
        .chain(OTHER_ENV.iter().map(|v| v.to_string()))
        .collect();
    let mut unknown: Vec<(String, Option<String>)> = env
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| name.starts_with("FERRY_") && !known.contains(name))
        .map(|name| {
            let closest = known
                .iter()
                .map(|k| (strsim::levenshtein(&name, k), k))
                .min()
                .filter(|(distance, _)| *distance <= 3)
                .map(|(_, k)| k.clone());
            (name, closest)
        })
        .collect();
    unknown.sort();
    unknown
}

/// The environment variable of a `section.name` key.
pub fn env_name(key: &str) -> String {
    format!("FERRY_{}", key.replace('.', "_").to_uppercase())
}

impl Config {
    /// Every setting's `section.name` key.
    pub fn keys(&self) -> Vec<String> {
        toml::Table::try_from(self)
            .map(|table| leaf_keys(&table).into_iter().map(|(k, _)| k).collect())
            .unwrap_or_default()
    }

    /// Loads the layers. `file`: an explicit path (must exist) or `None` for
    /// `./ferry.toml` when present; `env`: the process environment or a test's;
    /// `overrides`: `key=value` pairs from flags, applied last.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let defaults = toml::Table::try_from(Config::default()).map_err(|e| ConfigError::Syntax {
            path: "defaults".into(),
            message: e.to_string(),
        })?;
        let mut merged = defaults.clone();

        let file = match file {
            Some(path) => Some(path.to_path_buf()),
            None => Some(PathBuf::from("ferry.toml")).filter(|p| p.exists()),
        };
        if let Some(path) = file {
            let origin = path.display().to_string();
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::File {
                path: origin.clone(),
                source,
            })?;
            let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Syntax {
                path: origin.clone(),
                message: e.to_string(),
            })?;
            merge_file(&mut merged, &defaults, table, &origin)?;
        }

        let env: std::collections::HashMap<String, String> = env.into_iter().collect();
        for (key, default) in leaf_keys(&defaults) {
            if let Some(raw) = env.get(&env_name(&key)) {
                set_leaf(&mut merged, &key, parse_like(&key, &default, raw)?);
            }
        }
        for (key, raw) in overrides {
            let default = leaf_keys(&defaults)
                .into_iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .ok_or_else(|| ConfigError::UnknownKey {
                    key: key.clone(),
                    origin: "command-line flags".into(),
                })?;
            set_leaf(&mut merged, key, parse_like(key, &default, raw)?);
        }

        for (key, allowed, known) in CHOICES {
            check_choice(&merged, key, allowed, known)?;
        }
        let config: Config = merged
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Syntax {
                path: "merged settings".into(),
                message: e.to_string(),
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Range and format checks that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        parse_addr("server.grpc_addr", &self.server.grpc_addr)?;
        for origin in self.http.origins() {
            check(
                "http.cors_origins",
                origin == "*"
                    || ((origin.starts_with("https://") || origin.starts_with("http://"))
                        && http::HeaderValue::from_str(&origin).is_ok()),
                "must be `*` or origins such as `https://dash.acme.test`, comma-separated",
            )?;
        }
        parse_addr("server.http_addr", &self.server.http_addr)?;
        check(
            "storage.s3_bucket",
            self.storage.backend != StorageBackend::S3 || !self.storage.s3_bucket.is_empty(),
            "is required when storage.backend is `s3`",
        )?;
        check(
            "server.tls_key",
            self.server.tls_cert.is_empty() == self.server.tls_key.is_empty(),
            "server.tls_cert and server.tls_key go together",
        )?;
        check(
            "server.tls_client_ca",
            self.server.tls_client_ca.is_empty() || !self.server.tls_cert.is_empty(),
            "needs server.tls_cert (client certificates are asked for during the TLS handshake)",
        )?;
        check(
            "server.tls_identities",
            self.server.tls_identities.is_empty() || !self.server.tls_client_ca.is_empty(),
            "needs server.tls_client_ca (only verified certificates are mapped)",
        )?;
        check(
            "auth.jwt_leeway_secs",
            self.auth.jwt_leeway_secs <= 300,
            "must be at most 300 (a token's clock may be a little off, not minutes)",
        )?;
        check(
            "auth.jwt_audience",
            self.auth.jwt_jwks.is_empty() || !self.auth.jwt_audience.trim().is_empty(),
            "is required with auth.jwt_jwks",
        )?;
        check(
            "storage.s3_sse",
            ["", "AES256", "aws:kms"].contains(&self.storage.s3_sse.as_str()),
            "must be `AES256`, `aws:kms` or empty (the bucket's default)",
        )?;
        check(
            "storage.s3_kms_key_id",
            self.storage.s3_kms_key_id.is_empty() || self.storage.s3_sse == "aws:kms",
            "needs storage.s3_sse = aws:kms",
        )?;
        check(
            "mail.system_sender",
            self.mail
                .system_sender
                .parse::<lettre::message::Mailbox>()
                .is_ok(),
            "must be an e-mail address (`Name <address>` allowed)",
        )?;
        check(
            "mail.link_ttl_secs",
            (60..=7 * 24 * 3600).contains(&self.mail.link_ttl_secs),
            "must be between 60 seconds and 7 days",
        )?;
        check("jobs.workers", self.jobs.workers >= 1, "must be at least 1")?;
        check(
            "jobs.delivery_workers",
            self.jobs.delivery_workers >= 1,
            "must be at least 1",
        )?;
        check(
            "mail.smtp_connect_timeout_secs",
            self.mail.smtp_connect_timeout_secs >= 1,
            "must be at least 1",
        )?;
        check(
            "mail.smtp_send_timeout_secs",
            self.mail.smtp_send_timeout_secs >= 1,
            "must be at least 1",
        )?;
        check(
            "mail.smtp_breaker_timeouts",
            self.mail.smtp_breaker_timeouts >= 1,
            "must be at least 1",
        )?;
        check(
            "mail.smtp_breaker_cooldown_secs",
            self.mail.smtp_breaker_cooldown_secs >= 1,
            "must be at least 1",
        )?;
        check(
            "server.probe_interval_millis",
            (50..=60_000).contains(&self.server.probe_interval_millis),
            "must be between 50 ms and 60 s",
        )?;
        check(
            "server.probe_timeout_millis",
            (50..=60_000).contains(&self.server.probe_timeout_millis),
            "must be between 50 ms and 60 s",
        )?;
        check(
            "database.acquire_timeout_millis",
            (100..=600_000).contains(&self.database.acquire_timeout_millis),
            "must be between 100 ms and 10 minutes",
        )?;
        check(
            "storage.s3_read_timeout_secs",
            (1..=3_600).contains(&self.storage.s3_read_timeout_secs),
            "must be between 1 s and 1 hour",
        )?;
        check(
            "storage.s3_operation_timeout_secs",
            self.storage.s3_operation_timeout_secs >= self.storage.s3_read_timeout_secs,
            "must be at least storage.s3_read_timeout_secs",
        )?;
        check(
            "storage.s3_connect_timeout_millis",
            (100..=60_000).contains(&self.storage.s3_connect_timeout_millis),
            "must be between 100 ms and 60 s",
        )?;
        check(
            "hub.session_idle_minutes",
            (1..=7 * 24 * 60).contains(&self.hub.session_idle_minutes),
            "must be between 1 minute and 7 days",
        )?;
        check(
            "hub.max_sessions",
            self.hub.max_sessions >= 1,
            "must be at least 1",
        )?;
        check(
            "jobs.max_attempts",
            self.jobs.max_attempts >= 1,
            "must be at least 1",
        )?;
        check("jobs.lease_secs", self.jobs.lease_secs >= 2, "must be at least 2")?;
        check(
            "jobs.heartbeat_millis",
            self.jobs.heartbeat_millis >= 50 && self.jobs.heartbeat_millis < self.jobs.lease_secs * 1000,
            "must be at least 50 and shorter than jobs.lease_secs",
        )?;
        check(
            "jobs.poll_millis",
            self.jobs.poll_millis >= 10,
            "must be at least 10",
        )?;
        check(
            "exports.download_url_ttl_secs",
            (1..=7 * 24 * 3600).contains(&self.exports.download_url_ttl_secs),
            "must be between 1 second and 7 days",
        )?;
        check(
            "exports.batch_rows",
            (1..=100_000).contains(&self.exports.batch_rows),
            "must be between 1 and 100000",
        )?;
        check(
            "exports.max_active_per_org",
            self.exports.max_active_per_org >= 1,
            "must be at least 1",
        )?;
        for (key, value) in [
            ("server.max_concurrent_calls", self.server.max_concurrent_calls),
            ("server.max_watchers", self.server.max_watchers),
            (
                "server.max_concurrent_uploads",
                self.server.max_concurrent_uploads,
            ),
            ("server.max_pool_waiters", self.server.max_pool_waiters),
        ] {
            check(key, value >= 1, "must be at least 1")?;
        }
        check(
            "auth.cache_ttl_millis",
            self.auth.cache_ttl_millis <= 60_000,
            "must be at most 60000 (a revoked key must stop working within a minute)",
        )?;
        check(
            "database.max_connections",
            self.database.max_connections >= 1,
            "must be at least 1",
        )?;
        check(
            "bulk_import.max_upload_bytes",
            self.bulk_import.max_upload_bytes >= 1024,
            "must be at least 1024",
        )?;
        check(
            "bulk_import.max_xlsx_bytes",
            self.bulk_import.max_xlsx_bytes >= 1024,
            "must be at least 1024",
        )?;
        check(
            "bulk_import.batch_rows",
            (1..=50_000).contains(&self.bulk_import.batch_rows),
            "must be from 1 to 50000",
        )?;
        check(
            "bulk_import.max_active_per_org",
            self.bulk_import.max_active_per_org >= 1,
            "must be at least 1",
        )?;
        check(
            "bulk_import.report_retention_days",
            self.bulk_import.report_retention_days <= 3_650,
            "must be at most 3650 (ten years); 0 keeps reports as long as their import",
        )?;
        check(
            "bulk_import.staged_minutes",
            (1..=24 * 60).contains(&self.bulk_import.staged_minutes),
            "must be from 1 to 1440",
        )?;
        check(
            "bulk_import.max_staged_per_org",
            self.bulk_import.max_staged_per_org >= 1,
            "must be at least 1",
        )?;
        Ok(())
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        // validate() checked it; the fallback is never used after load().
        self.server
            .grpc_addr
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 50051)))
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.server
            .http_addr
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 50052)))
    }

    pub fn data_dir(&self) -> PathBuf {
        PathBuf::from(&self.server.data_dir)
    }

    /// The database URL, defaulting to the SQLite file in the data dir.
    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            self.data_dir().join("ferry.db").display().to_string()
        } else {
            self.database.url.clone()
        }
    }
}

/// A setting of [`CHOICES`] holds one of its values (the merged settings are still
/// a table here).
fn check_choice(merged: &toml::Table, key: &str, allowed: &str, known: IsChoice) -> Result<(), ConfigError> {
    let (section, name) = key.split_once('.').unwrap_or((key, ""));
    let value = merged
        .get(section)
        .and_then(|s| s.get(name))
        .and_then(toml::Value::as_str)
        .unwrap_or_default();
    check(key, known(value), &format!("must be {allowed}, not `{value}`"))
}

fn check(key: &str, ok: bool, message: &str) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(invalid(key, message.to_string()))
    }
}

fn invalid(key: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        env: env_name(key),
        message,
    }
}

fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value
        .parse()
        .map_err(|_| invalid(key, format!("`{value}` is not a host:port socket address")))
}

/// Every `section.name` key with its default value.
fn leaf_keys(defaults: &toml::Table) -> Vec<(String, toml::Value)> {
    let mut keys = Vec::new();
    for (section, value) in defaults {
        if let toml::Value::Table(table) = value {
            for (name, leaf) in table {
                keys.push((format!("{section}.{name}"), leaf.clone()));
            }
        }
    }
    keys
}

fn set_leaf(table: &mut toml::Table, key: &str, value: toml::Value) {
    if let Some((section, name)) = key.split_once('.')
        && let Some(toml::Value::Table(inner)) = table.get_mut(section)
    {
        inner.insert(name.to_string(), value);
    }
}

/// Parses a text value (environment, flag) as the type of the setting's default.
fn parse_like(key: &str, default: &toml::Value, raw: &str) -> Result<toml::Value, ConfigError> {
    let raw = raw.trim();
    match default {
        toml::Value::Integer(_) => raw
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| invalid(key, format!("`{raw}` is not a whole number"))),
        toml::Value::Boolean(_) => match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(toml::Value::Boolean(true)),
            "false" | "0" | "no" | "off" => Ok(toml::Value::Boolean(false)),
            _ => Err(invalid(key, format!("`{raw}` is not true or false"))),
        },
        toml::Value::Float(_) => raw
            .parse::<f64>()
            .map(toml::Value::Float)
            .map_err(|_| invalid(key, format!("`{raw}` is not a number"))),
        _ => Ok(toml::Value::String(raw.to_string())),
    }
}

/// Merges a file's table over the defaults, naming unknown sections and keys.
fn merge_file(
    merged: &mut toml::Table,
    defaults: &toml::Table,
    file: toml::Table,
    origin: &str,
) -> Result<(), ConfigError> {
    for (section, value) in file {
        let Some(toml::Value::Table(known)) = defaults.get(&section) else {
            return Err(ConfigError::UnknownKey {
                key: section,
                origin: origin.to_string(),
            });
        };
        let toml::Value::Table(entries) = value else {
            return Err(invalid(
                &section,
                format!("must be a [{section}] table in {origin}"),
            ));
        };
        for (name, leaf) in entries {
            let key = format!("{section}.{name}");
            if !known.contains_key(&name) {
                return Err(ConfigError::UnknownKey {
                    key,
                    origin: origin.to_string(),
                });
            }
            set_leaf(merged, &key, leaf);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_need_no_configuration() {
        let config = Config::load(Some(Path::new("/dev/null")), env(&[]), &[]).unwrap();
        assert_eq!(config.server.grpc_addr, "127.0.0.1:50051");
        assert!(config.database_url().ends_with("ferry-data/ferry.db"));
        assert_eq!(config.plans.freemium_import_rows, 4_000);
    }

    #[test]
    fn flags_beat_environment_which_beats_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ferry.toml");
        std::fs::write(
            &file,
            "[exports]\nmax_active_per_org = 5\nretention_days = 2\n[database]\nurl = 'from-file.db'\n",
        )
        .unwrap();
        let config = Config::load(
            Some(&file),
            env(&[
                ("FERRY_EXPORTS_MAX_ACTIVE_PER_ORG", "7"),
                ("FERRY_BULK_IMPORT_MAX_ITEMS", "250"),
            ]),
            &[("exports.max_active_per_org".into(), "9".into())],
        )
        .unwrap();
        assert_eq!(config.exports.max_active_per_org, 9);
        assert_eq!(config.exports.retention_days, 2);
        assert_eq!(config.bulk_import.max_items, 250);
        assert_eq!(config.database.url, "from-file.db");
    }

    #[test]
    fn a_bad_value_names_the_setting_and_its_variable() {
        let err = Config::load(
            Some(Path::new("/dev/null")),
            env(&[("FERRY_JOBS_WORKERS", "many")]),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("jobs.workers") && err.contains("FERRY_JOBS_WORKERS"),
            "{err}"
        );
        let err = Config::load(
            Some(Path::new("/dev/null")),
            env(&[("FERRY_SERVER_GRPC_ADDR", "nowhere")]),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("server.grpc_addr"), "{err}");
    }

    #[test]
    fn a_setting_with_fixed_values_names_them() {
        for (variable, key, allowed) in [
            ("FERRY_STORAGE_BACKEND", "storage.backend", "`local` or `s3`"),
            ("FERRY_MAIL_TRANSPORT", "mail.transport", "`drop` or `smtp`"),
            (
                "FERRY_MAIL_SMTP_TLS",
                "mail.smtp_tls",
                "`starttls`, `tls` or `plain`",
            ),
            ("FERRY_LOG_FORMAT", "log.format", "`human` or `json`"),
        ] {
            let err = Config::load(Some(Path::new("/dev/null")), env(&[(variable, "ftp")]), &[])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(key) && err.contains(variable) && err.contains(allowed),
                "{err}"
            );
        }
        let config = Config::load(
            Some(Path::new("/dev/null")),
            env(&[("FERRY_MAIL_TRANSPORT", "smtp"), ("FERRY_LOG_FORMAT", "json")]),
            &[],
        )
        .unwrap();
        assert_eq!(config.mail.transport, MailTransport::Smtp);
        assert_eq!(config.log.format, LogFormat::Json);
    }

    #[test]
    fn an_unknown_key_in_the_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ferry.toml");
        std::fs::write(&file, "[jobs]\nworkerz = 3\n").unwrap();
        let err = Config::load(Some(&file), env(&[]), &[]).unwrap_err().to_string();
        assert!(err.contains("jobs.workerz"), "{err}");
    }

    #[test]
    fn a_misspelt_environment_variable_is_named_with_the_closest_setting() {
        let unknown = unknown_env(env(&[
            ("FERRY_BULK_IMPORT_MAX_ITEM", "5"),
            ("FERRY_JOBS_WORKERS", "2"),
            ("FERRY_URL", "http://127.0.0.1:50051"),
            ("FERRY_API_KEY", "k"),
            ("FERRY_ORG", "o"),
            ("FERRY_LOG", "debug"),
            ("FERRY_SOMETHING_ELSE_ENTIRELY", "x"),
            ("HOME", "/root"),
        ]));
        assert_eq!(
            unknown,
            [
                (
                    "FERRY_BULK_IMPORT_MAX_ITEM".to_string(),
                    Some("FERRY_BULK_IMPORT_MAX_ITEMS".to_string())
                ),
                ("FERRY_SOMETHING_ELSE_ENTIRELY".to_string(), None),
            ]
        );
    }
}
