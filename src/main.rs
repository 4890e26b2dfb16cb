//! The `ferry` binary: see `ferry --help`.

use clap::Parser;

/// mimalloc instead of glibc malloc: imports and exports allocate many small,
/// short-lived strings on several threads; measured in docs/benchmarks.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = ferry::cli::Cli::parse();
    match ferry::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
