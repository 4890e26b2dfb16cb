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
