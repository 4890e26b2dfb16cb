//! The `ferry` binary: see `ferry --help`.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    ferry::cli::main(ferry::cli::Cli::parse()).await
}
