//! HMAC-SHA256 signatures of local download URLs: the key, the expiry, the file name
//! and the content type are signed, so none can be changed without a 403.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Clone)]
pub struct UrlSigner {
    secret: Vec<u8>,
}

impl UrlSigner {
    pub fn new(secret: &[u8]) -> UrlSigner {
        UrlSigner {
            secret: secret.to_vec(),
        }
    }

    fn mac(&self, key: &str, expires: i64, name: &str, content_type: &str) -> HmacSha256 {
        // HMAC takes keys of any length.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.secret).unwrap_or_else(|_| unreachable!());
        for part in [key, &expires.to_string(), name, content_type] {
            mac.update(&(part.len() as u64).to_le_bytes());
            mac.update(part.as_bytes());
        }
        mac
    }

    pub fn sign(&self, key: &str, expires: i64, name: &str, content_type: &str) -> String {
        hex::encode(self.mac(key, expires, name, content_type).finalize().into_bytes())
    }

    /// Constant-time check of a presented signature.
    pub fn verify(&self, key: &str, expires: i64, name: &str, content_type: &str, signature: &str) -> bool {
        match hex::decode(signature) {
            Ok(bytes) => self
                .mac(key, expires, name, content_type)
                .verify_slice(&bytes)
                .is_ok(),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_change_to_a_signed_url_breaks_the_signature() {
        let signer = UrlSigner::new(b"secret");
        let sig = signer.sign("k/a.csv", 100, "a.csv", "text/csv");
        assert!(signer.verify("k/a.csv", 100, "a.csv", "text/csv", &sig));
        assert!(!signer.verify("k/b.csv", 100, "a.csv", "text/csv", &sig));
        assert!(!signer.verify("k/a.csv", 101, "a.csv", "text/csv", &sig));
        assert!(!signer.verify("k/a.csv", 100, "b.csv", "text/csv", &sig));
        assert!(!signer.verify("k/a.csv", 100, "a.csv", "text/html", &sig));
        assert!(!UrlSigner::new(b"other").verify("k/a.csv", 100, "a.csv", "text/csv", &sig));
        assert!(!signer.verify("k/a.csv", 100, "a.csv", "text/csv", "zz"));
    }
}
