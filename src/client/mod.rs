//! The `ferry` client: the same binary talking gRPC to a server, for people (tables,
//! progress bars) and scripts (`--output json`, exit codes).
//!
//! Layout: [`session`] resolves where to connect and with which key (flags, then
//! the environment, then the profile file of [`profile`]); each resource has its
//! commands in a module of its own; [`output`] prints messages and errors, and
//! [`progress`] draws the bars.

pub mod download;
pub mod entity;
pub mod exit;
pub mod export;
pub mod filter;
pub mod import;
pub mod listing;
pub mod mapping;
pub mod output;
pub mod profile;
pub mod progress;
pub mod session;
pub mod watch;

use clap::{Args, Subcommand};

pub use exit::{ClientError, Exit};
use output::Output;
use session::Session;

/// Where to connect and how to print: accepted before or after the subcommand.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The server's gRPC address (`http://host:port`); default: the profile's, else
    /// http://127.0.0.1:50051.
    #[arg(long, global = true, env = "FERRY_URL", value_name = "URL")]
    pub server: Option<String>,
    /// API key (`ferry_…`); default: the profile's.
    #[arg(
        long,
        global = true,
        env = "FERRY_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
    /// CA bundle (PEM) the server's certificate is checked against on `https://`;
    /// default: the public web roots.
    #[arg(long, global = true, env = "FERRY_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for mutual TLS; a server that maps it to a service
    /// needs no API key.
    #[arg(
        long,
        global = true,
        env = "FERRY_CLIENT_CERT",
        value_name = "FILE",
        requires = "client_key"
    )]
    pub client_cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        long,
        global = true,
        env = "FERRY_CLIENT_KEY",
        value_name = "FILE",
        requires = "client_cert"
    )]
    pub client_key: Option<std::path::PathBuf>,
    /// Organization to act for (a key may act for several); default: the key's own.
    #[arg(long, global = true, env = "FERRY_ORG", value_name = "ORG_ID")]
    pub org: Option<String>,
    /// Profile of the config file (`~/.config/ferry/config.toml`) to use.
    #[arg(
        long,
        global = true,
        env = "FERRY_PROFILE",
        value_name = "NAME",
        default_value = "default"
    )]
    pub profile: String,
    /// `table` for people, `json` for scripts (one object per line on streams).
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// The client commands, next to `serve`, `migrate` and `admin` in `ferry --help`.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Upload files to import and follow import jobs.
    #[command(subcommand)]
    Import(import::ImportCommand),
    /// Create export jobs, follow them and download their files.
    #[command(subcommand)]
    Export(export::ExportCommand),
    /// Saved header mappings for imports.
    #[command(subcommand)]
    Mapping(mapping::MappingCommand),
    /// Read the organization's entities.
    #[command(subcommand)]
    Entities(entity::EntityCommand),
    /// The organization, plan, features and permissions of your key.
    Whoami,
    /// Check a server and key, and save them as a profile (mode 0600).
    Login,
}

/// Runs one client command and says how the process should exit.
pub async fn run(args: ClientArgs, command: ClientCommand) -> Result<Exit, ClientError> {
    install_crypto_provider();
    if let ClientCommand::Login = command {
        return profile::login(&args).await;
    }
    let session = Session::open(&args).await?;
    match command {
        ClientCommand::Import(command) => import::run(&session, command).await,
        ClientCommand::Export(command) => export::run(&session, command).await,
        ClientCommand::Mapping(command) => mapping::run(&session, command).await,
        ClientCommand::Entities(command) => entity::run(&session, command).await,
        ClientCommand::Whoami => {
            let caller = session.whoami().await?;
            session.output.caller(&caller);
            Ok(Exit::Ok)
        }
        ClientCommand::Login => Ok(Exit::Ok),
    }
}

/// ring is the only rustls provider compiled in, but rustls still wants it named
/// before the first HTTPS client is built (downloads from S3 links).
pub fn install_crypto_provider() {
    // Already installed (a second call in one process) is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
