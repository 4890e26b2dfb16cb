//! Paging of list calls (AIP-158): page sizes, and page tokens
//! ([`super::page_token`]) as the API's errors.

use serde::de::DeserializeOwned;

use super::error::ApiError;
pub use super::page_token::{encode, fingerprint};

pub const DEFAULT_PAGE_SIZE: i64 = 20;
pub const MAX_PAGE_SIZE: i64 = 100;

/// The cursor of a token; `None` for an empty token (first page). A refused token
/// is INVALID_ARGUMENT naming `page_token`.
pub fn decode<C: DeserializeOwned>(token: &str, fingerprint: &str) -> Result<Option<C>, ApiError> {
    super::page_token::decode(token, fingerprint)
        .map_err(|e| ApiError::invalid(vec![("page_token".into(), e.to_string())]))
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
