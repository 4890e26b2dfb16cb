//! Compiles the gRPC contract in pure Rust (protox: no `protoc` on the machine) and
//! writes the descriptor set that reflection and the auth-matrix tests read.

use std::{env, fs, path::PathBuf};

use protox::prost::Message;

const PROTOS: &[&str] = &[
    "ferry/v1/account.proto",
    "ferry/v1/common.proto",
    "ferry/v1/entity.proto",
    "ferry/v1/export.proto",
    "ferry/v1/import.proto",
    "ferry/v1/mapping.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // The embedded migrations: a new one must rebuild the crate.
    println!("cargo:rerun-if-changed=migrations");
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("ferry_descriptor.bin"), fds.encode_to_vec())?;
    // The error details ferry sends (ErrorInfo, BadRequest, RequestInfo, RetryInfo),
    // for reflection only: generic clients decode them by name; the Rust types
    // come from tonic-types.
    let details = protox::compile(["google/rpc/error_details.proto"], ["proto"])?;
    fs::write(out.join("error_details_descriptor.bin"), details.encode_to_vec())?;
    tonic_prost_build::configure()
        .extern_path(".google.rpc.Status", "::tonic_types::pb::Status")
        // Smaller stream buffers, malformed messages as INVALID_ARGUMENT (src/api/codec.rs).
        .codec_path("crate::api::codec::FerryCodec")
        .compile_fds(fds)?;
    Ok(())
}
