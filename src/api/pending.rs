//! The answer of contract methods whose service is not built yet: UNIMPLEMENTED with
//! reason `NOT_IMPLEMENTED`, after authentication like every other call.

use tonic::{Request, Status};

use super::Call;
use super::error::ApiError;

pub fn not_yet<T>(request: &Request<T>, service: &str) -> Status {
    match Call::of(request) {
        Ok(call) => call.fail(ApiError::new(
            tonic::Code::Unimplemented,
            "NOT_IMPLEMENTED",
            format!("{service} is part of the contract but not served by this version of ferry yet"),
        )),
        Err(status) => status,
    }
}
