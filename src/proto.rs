//! Code generated from `proto/` (package `ferry.v1`) and its descriptor set.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod ferry {
    pub mod v1 {
        tonic::include_proto!("ferry.v1");
    }
}

pub use ferry::v1::*;

/// The encoded `FileDescriptorSet` of the contract, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ferry_descriptor");

/// The encoded `FileDescriptorSet` of `google/rpc/error_details.proto`: the details
/// every error carries, served by reflection so generic clients can show them.
pub const ERROR_DETAILS_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("error_details_descriptor");

/// The canonical upper-case name (`NOT_FOUND`), as grpcurl and the docs write it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

/// A ferry message printed as JSON (the client's `--output json`, the REST door's
/// events): its full proto name finds its descriptor.
pub trait Described: prost::Message {
    const NAME: &'static str;
}

macro_rules! described {
    ($($message:ident),* $(,)?) => {$(
        impl Described for $message {
            const NAME: &'static str = concat!("ferry.v1.", stringify!($message));
        }
    )*};
}

described!(
    Import,
    ImportError,
    ImportErrorReport,
    Export,
    ExportDownload,
    Mapping,
    Entity,
    Caller
);

/// The contract and the error details (a job's `error` may carry them).
static POOL: LazyLock<Option<DescriptorPool>> = LazyLock::new(|| {
    let mut pool = DescriptorPool::decode(FILE_DESCRIPTOR_SET).ok()?;
    pool.decode_file_descriptor_set(ERROR_DETAILS_DESCRIPTOR_SET)
        .ok()?;
    Some(pool)
});

/// `message` in the proto3 JSON mapping.
pub fn to_json<M: Described>(message: &M) -> serde_json::Value {
    let dynamic = POOL
        .as_ref()
        .and_then(|pool| pool.get_message_by_name(M::NAME))
        .and_then(|descriptor| DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice()).ok());
    let options = SerializeOptions::new()
        .skip_default_fields(false)
        .stringify_64_bit_integers(false);
    dynamic
        .and_then(|dynamic| {
            dynamic
                .serialize_with_options(serde_json::value::Serializer, &options)
                .ok()
        })
        .unwrap_or(serde_json::Value::Null)
}
