//! Opaque AIP-158 page tokens: where the last page ended plus a fingerprint of the
//! request, so a token is only accepted with the filter and order it came from.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

use super::error::ApiError;

pub const DEFAULT_PAGE_SIZE: i64 = 20;
pub const MAX_PAGE_SIZE: i64 = 100;

#[derive(Serialize, serde::Deserialize)]
struct Token<C> {
    /// Cursor: the sort value and id of the last row returned.
    c: C,
    /// Fingerprint of the request's filter and order.
    f: String,
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
pub fn decode<C: DeserializeOwned>(token: &str, fingerprint: &str) -> Result<Option<C>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = |why: &str| ApiError::invalid(vec![("page_token".into(), why.into())]);
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad("not a token this service issued"))?;
    let token: Token<C> =
        serde_json::from_slice(&bytes).map_err(|_| bad("not a token this service issued"))?;
    if token.f != fingerprint {
        return Err(bad("the token belongs to a listing with another filter or order"));
    }
    Ok(Some(token.c))
}

/// `page_size` with AIP-158's default and maximum; negative is invalid.
pub fn page_size(requested: i32) -> Result<i64, ApiError> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n < 0 => Err(ApiError::invalid(vec![(
            "page_size".into(),
            "must not be negative".into(),
        )])),
        n => Ok(i64::from(n).min(MAX_PAGE_SIZE)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_only_with_its_own_fingerprint() {
        let token = encode(&(5_i64, "id-1".to_string()), "abc");
        assert_eq!(
            decode::<(i64, String)>(&token, "abc").unwrap(),
            Some((5, "id-1".into()))
        );
        assert!(decode::<(i64, String)>(&token, "xyz").is_err());
        assert!(decode::<(i64, String)>("garbage!", "abc").is_err());
        assert_eq!(decode::<(i64, String)>("", "abc").unwrap(), None);
    }

    #[test]
    fn page_size_defaults_to_20_and_caps_at_100() {
        assert_eq!(page_size(0).unwrap(), 20);
        assert_eq!(page_size(500).unwrap(), 100);
        assert!(page_size(-1).is_err());
    }
}
