//! Identity-provider tokens: `authorization: Bearer <JWT>` beside API keys. The
//! signature is checked against a JWKS (`auth.jwt_jwks`: a file, or an HTTP(S) URL),
//! the algorithm comes from the key and never from the token (so `alg: none` and an
//! HMAC token signed with a public key are refused), and `iss`, `aud`, `exp`, `nbf`
//! are checked with a small leeway. The organization and the permissions come from
//! configured claims.
//!
//! An unknown `kid` reloads the JWKS (the identity provider rotated its keys), at
//! most once per [`MIN_RELOAD`], so a flood of tokens with made-up key ids cannot
//! hammer the identity provider.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde_json::Value;

use super::AuthError;
use super::permissions::Permission;
use crate::config::AuthConfig;

/// The shortest time between two loads of the JWKS.
pub const MIN_RELOAD: Duration = Duration::from_secs(5);
/// How long a JWKS fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Who a verified token says the caller is.
#[derive(Debug, Clone)]
pub struct TokenIdentity {
    /// `sub`, for logs and the principal's id (`jwt:<sub>`).
    pub subject: String,
    pub organization_id: String,
    pub permissions: Vec<Permission>,
}

pub struct JwtVerifier {
    jwks: String,
    issuer: String,
    audience: String,
    org_claim: String,
    permissions_claim: String,
    leeway_secs: u64,
    keys: std::sync::RwLock<Arc<JwkSet>>,
    /// When the JWKS was last loaded; the lock also makes concurrent reloads wait
    /// for one another instead of each fetching.
    loaded_at: tokio::sync::Mutex<Option<Instant>>,
    http: reqwest::Client,
}

fn refused(cause: &'static str, detail: impl Into<String>) -> AuthError {
    AuthError::Token {
        cause,
        detail: detail.into(),
    }
}

impl JwtVerifier {
    /// The verifier of `auth.jwt_*`, `None` when `auth.jwt_jwks` is empty. A JWKS
    /// file that cannot be read stops the start; a URL that does not answer is
    /// tried again on the first token (API keys work meanwhile).
    pub async fn from_config(config: &AuthConfig) -> anyhow::Result<Option<Arc<JwtVerifier>>> {
        if config.jwt_jwks.trim().is_empty() {
            return Ok(None);
        }
        // reqwest's rustls has no provider of its own (ring is the tree's only one).
        crate::client::install_crypto_provider();
        let http = reqwest::Client::builder().timeout(FETCH_TIMEOUT).build()?;
        let verifier = JwtVerifier {
            jwks: config.jwt_jwks.trim().to_string(),
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            org_claim: config.jwt_org_claim.clone(),
            permissions_claim: config.jwt_permissions_claim.clone(),
            leeway_secs: config.jwt_leeway_secs,
            keys: std::sync::RwLock::new(Arc::new(JwkSet { keys: Vec::new() })),
            loaded_at: tokio::sync::Mutex::new(None),
            http,
        };
        match verifier.reload().await {
            Ok(()) => {}
            Err(err) if verifier.is_url() => {
                tracing::warn!(error = %err, "auth.jwt_jwks could not be fetched; tried again on the first token")
            }
            Err(err) => anyhow::bail!("auth.jwt_jwks: {err}"),
        }
        Ok(Some(Arc::new(verifier)))
    }

    fn is_url(&self) -> bool {
        self.jwks.starts_with("https://") || self.jwks.starts_with("http://")
    }

    async fn load(&self) -> anyhow::Result<JwkSet> {
        let text = if self.is_url() {
            let response = self.http.get(&self.jwks).send().await?.error_for_status()?;
            response.text().await?
        } else {
            tokio::fs::read_to_string(&self.jwks).await?
        };
        Ok(serde_json::from_str(&text)?)
    }

    /// Loads the JWKS now, unless it was loaded less than [`MIN_RELOAD`] ago.
    async fn reload(&self) -> anyhow::Result<()> {
        let mut loaded_at = self.loaded_at.lock().await;
        if loaded_at.is_some_and(|at| at.elapsed() < MIN_RELOAD) {
            return Ok(());
        }
        *loaded_at = Some(Instant::now());
        let set = self.load().await?;
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(set);
        Ok(())
    }

    fn key(&self, kid: &str) -> Option<Jwk> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .find(kid)
            .cloned()
    }

    /// The key of `kid`, reloading the JWKS once (rate-limited) when it is unknown.
    async fn key_of(&self, kid: &str) -> Result<Jwk, AuthError> {
        if let Some(key) = self.key(kid) {
            return Ok(key);
        }
        if let Err(err) = self.reload().await {
            tracing::warn!(error = %err, "the JWKS could not be reloaded");
        }
        self.key(kid)
            .ok_or_else(|| refused("unknown_signing_key", format!("no key `{kid}` in the JWKS")))
    }

    /// Checks a token and reads who it names.
    pub async fn verify(&self, token: &str) -> Result<TokenIdentity, AuthError> {
        let header = decode_header(token).map_err(|e| refused("malformed_token", e.to_string()))?;
        let kid = header
            .kid
            .ok_or_else(|| refused("malformed_token", "the token names no key (`kid`)"))?;
        let jwk = self.key_of(&kid).await?;
        let algorithm = algorithm_of(&jwk)?;
        if header.alg != algorithm {
            return Err(refused(
                "wrong_algorithm",
                format!(
                    "key `{kid}` signs with {algorithm:?}, the token says {:?}",
                    header.alg
                ),
            ));
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| refused("unknown_signing_key", e.to_string()))?;
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.leeway_secs;
        validation.validate_nbf = true;
        validation.set_audience(&[&self.audience]);
        if !self.issuer.is_empty() {
            validation.set_issuer(&[&self.issuer]);
        }
        validation.set_required_spec_claims(&["exp", "aud"]);
        let claims = decode::<Value>(token, &key, &validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                let cause = match e.kind() {
                    ErrorKind::ExpiredSignature => "expired_token",
                    ErrorKind::ImmatureSignature => "token_not_yet_valid",
                    ErrorKind::InvalidAudience => "wrong_audience",
                    ErrorKind::InvalidIssuer => "wrong_issuer",
                    ErrorKind::InvalidSignature => "bad_signature",
                    ErrorKind::MissingRequiredClaim(_) => "missing_claim",
                    _ => "malformed_token",
                };
                refused(cause, e.to_string())
            })?
            .claims;
        self.identity(&claims)
    }

    fn identity(&self, claims: &Value) -> Result<TokenIdentity, AuthError> {
        let organization_id = claims[&self.org_claim]
            .as_str()
            .and_then(super::layer::organization_id_of)
            .ok_or_else(|| {
                refused(
                    "missing_claim",
                    format!("the token's `{}` is not an organization id", self.org_claim),
                )
            })?;
        let names: Vec<String> = match &claims[&self.permissions_claim] {
            Value::Array(items) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            Value::String(scope) => scope.split_whitespace().map(str::to_string).collect(),
            _ => Vec::new(),
        };
        Ok(TokenIdentity {
            subject: claims["sub"].as_str().unwrap_or_default().to_string(),
            organization_id,
            // Names ferry does not know (other services' scopes) grant nothing.
            permissions: names.iter().filter_map(|n| Permission::parse(n)).collect(),
        })
    }
}

/// The algorithm a key signs with: its `alg`, else what its type implies. Keys
/// shared as secrets (`oct`) are never accepted: anyone holding the JWKS could sign.
fn algorithm_of(jwk: &Jwk) -> Result<Algorithm, AuthError> {
    if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
        return Err(refused(
            "unknown_signing_key",
            "symmetric (`oct`) keys are not accepted",
        ));
    }
    if let Some(alg) = jwk.common.key_algorithm {
        return Algorithm::try_from(alg).map_err(|e| refused("unknown_signing_key", e.to_string()));
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Ok(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Ok(Algorithm::ES256),
            EllipticCurve::P384 => Ok(Algorithm::ES384),
            _ => Err(refused(
                "unknown_signing_key",
                "an elliptic curve ferry does not verify",
            )),
        },
        AlgorithmParameters::OctetKeyPair(_) => Ok(Algorithm::EdDSA),
        _ => Err(refused("unknown_signing_key", "a key type ferry does not verify")),
    }
}

/// Whether a bearer credential is shaped like a JWT (three base64url parts, a JSON
/// header) rather than a ferry API key.
pub fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.split('.').count() == 3
}
