//! Opaque AIP-158 page tokens: where the last page ended plus a fingerprint of the
//! request, so a token is only accepted with the filter and order it came from.
//! Free of the API's types, so the decoder can be fuzzed on its own.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

#[derive(Serialize, serde::Deserialize)]
struct Token<C> {
    /// Cursor: the sort value and id of the last row returned.
    c: C,
    /// Fingerprint of the request's filter and order.
    f: String,
}

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a token this service issued")]
    Foreign,
    #[error("the token belongs to a listing with another filter or order")]
    OtherListing,
}

/// A short fingerprint of whatever defines the listing (filter, order).
pub fn fingerprint(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hex::encode(&hasher.finalize()[..8])
}

pub fn encode<C: Serialize>(cursor: &C, fingerprint: &str) -> String {
    let token = Token {
        c: cursor,
        f: fingerprint.to_string(),
    };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).unwrap_or_default())
}

/// The cursor of a token; `None` for an empty token (first page).
pub fn decode<C: DeserializeOwned>(token: &str, fingerprint: &str) -> Result<Option<C>, TokenError> {
    if token.is_empty() {
        return Ok(None);
    }
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| TokenError::Foreign)?;
    let token: Token<C> = serde_json::from_slice(&bytes).map_err(|_| TokenError::Foreign)?;
    if token.f != fingerprint {
        return Err(TokenError::OtherListing);
    }
    Ok(Some(token.c))
}
