//! The protobuf codec of every ferry service and client: prost, with smaller
//! per-stream buffers and malformed input reported as the caller's error.
//!
//! tonic's default codec gives every stream an 8 KiB encode buffer (and the client
//! an 8 KiB decode buffer) and carves each message out of it: 10,000 idle watchers
//! held 80 MiB of buffers, and each state sent to them cost a fresh 8 KiB allocation
//! per stream. ferry's messages are a few hundred bytes, so buffers start at 1 KiB
//! and grow only for the rare large message (an upload chunk).
//!
//! A message that is not valid protobuf is INVALID_ARGUMENT `MALFORMED_MESSAGE`
//! with ErrorInfo, not INTERNAL: the bytes came from the caller.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstDecoder, ProstEncoder};

use super::error::ApiError;

/// Initial buffer of a stream, and how much is encoded before yielding.
fn buffers() -> BufferSettings {
    BufferSettings::new(1024, 32 * 1024)
}

#[derive(Debug, Clone)]
pub struct FerryCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for FerryCodec<T, U> {
    fn default() -> Self {
        FerryCodec { _pd: PhantomData }
    }
}

impl<T, U> Codec for FerryCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = CheckedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(buffers())
    }

    fn decoder(&mut self) -> Self::Decoder {
        CheckedDecoder(ProstDecoder::new(buffers()))
    }
}

/// prost's decoder with malformed input mapped to INVALID_ARGUMENT.
#[derive(Debug)]
pub struct CheckedDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for CheckedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| {
            ApiError::new(
                tonic::Code::InvalidArgument,
                "MALFORMED_MESSAGE",
                format!("the message is not valid protobuf: {}", status.message()),
            )
            .into_status("")
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        buffers()
    }
}
