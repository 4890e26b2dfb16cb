//! The Tower layer in front of every gRPC service: checks the API key and the
//! organization, then the method's permission, and puts the [`Principal`] in the
//! request's extensions. Health and reflection pass through; unknown methods fail.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::HeaderMap;
use tower::{Layer, Service};

use super::Principal;
use super::cache::{AuthCache, LoadError};
use super::certificates::{ClientCertificate, Identities};
use super::keys;
use super::permissions::{Access, Permission, is_public, required_access};
use crate::db::api_keys;
use crate::db::{Db, DbError, now_ms};
use crate::orgs::Organization;
use crate::request::RequestId;

/// Why a call was refused; mapped to a gRPC status by the API layer's one mapping.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing credentials: send `authorization: Bearer <api key>`")]
    MissingCredentials,
    #[error("the authorization header does not hold a ferry API key")]
    MalformedKey,
    #[error("two different API keys in one request (`authorization` and `x-api-key`): send one")]
    ConflictingKeys,
    #[error("unknown API key")]
    UnknownKey,
    #[error("this API key was revoked")]
    RevokedKey,
    #[error("this API key has expired: ask for a new one")]
    ExpiredKey,
    /// An identity-provider token that does not verify; `cause` goes in the
    /// ErrorInfo metadata (`expired_token`, `wrong_audience`, …).
    #[error("identity-provider token refused: {detail}")]
    Token { cause: &'static str, detail: String },
    /// A client certificate without a bearer credential whose identity is not in
    /// `server.tls_identities`.
    #[error(
        "no service is mapped to the client certificate `{0}` (server.tls_identities): send an API key or a token"
    )]
    UnmappedCertificate(String),
    #[error("`x-organization-id` is not a valid organization id")]
    InvalidOrganizationHeader,
    #[error("this API key may not act for organization {0}")]
    OrganizationNotAllowed(String),
    #[error("method {0} is not open to API keys")]
    MethodNotAllowed(String),
    #[error("this API key lacks the permission `{0}`")]
    MissingPermission(Permission),
    /// A hub session cookie that names no open session (signed out, idle too long,
    /// or the server restarted).
    #[error("your hub session has ended: sign in again")]
    SessionEnded,
    /// A hub session's state-changing request without its CSRF token.
    #[error("this request must carry the page's CSRF token (`x-csrf-token`): reload the page")]
    CsrfTokenInvalid,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl AuthError {
    /// Whether the credential itself no longer works (rather than this one call
    /// being refused): a hub session acting with it must end.
    pub fn ends_sessions(&self) -> bool {
        matches!(
            self,
            AuthError::UnknownKey | AuthError::RevokedKey | AuthError::ExpiredKey | AuthError::Token { .. }
        )
    }
}

impl From<diesel::result::Error> for AuthError {
    fn from(err: diesel::result::Error) -> Self {
        AuthError::Db(DbError::Query(err))
    }
}

/// Last-use timestamps are written at most this often per key.
const TOUCH_INTERVAL_MS: i64 = 60_000;

/// Keys whose last use is remembered before the ledger is cleared.
const TOUCH_LEDGER_MAX: usize = 100_000;

pub struct Authenticator {
    db: Db,
    cache: AuthCache,
    /// Identity-provider tokens (`auth.jwt_jwks`); `None`: API keys only.
    jwt: Option<Arc<super::jwt::JwtVerifier>>,
    /// Client-certificate identities -> service principals (`server.tls_identities`).
    identities: Arc<Identities>,
    /// When this process last wrote each key's `last_used_at`.
    touched: Mutex<HashMap<String, i64>>,
}

impl Authenticator {
    pub fn new(db: Db, cache: AuthCache) -> Authenticator {
        Authenticator {
            db,
            cache,
            jwt: None,
            identities: Arc::default(),
            touched: Mutex::new(HashMap::new()),
        }
    }

    /// Accepts identity-provider tokens too.
    pub fn with_jwt(mut self, jwt: Option<Arc<super::jwt::JwtVerifier>>) -> Authenticator {
        self.jwt = jwt;
        self
    }

    /// Accepts client certificates mapped to service principals.
    pub fn with_identities(mut self, identities: Arc<Identities>) -> Authenticator {
        self.identities = identities;
        self
    }

    /// The caller of `method` given its metadata and the connection's verified
    /// client certificate, or why it may not call it. A bearer credential decides
    /// who calls when there is one (the certificate then only had to be valid);
    /// without one, the certificate's mapped service does. The key and
    /// organization come from the cache; the secret, revocation, the organization
    /// and the permission are checked on every call.
    pub async fn authorize(
        &self,
        method: &str,
        headers: &HeaderMap,
        certificate: Option<&ClientCertificate>,
    ) -> Result<Principal, AuthError> {
        if let (None, Some(certificate)) = (headers.get(http::header::AUTHORIZATION), certificate) {
            return self.authorize_service(method, headers, certificate).await;
        }
        let token = bearer_token(headers)?;
        if let Some(jwt) = &self.jwt
            && keys::parse(token).is_none()
            && super::jwt::looks_like_jwt(token)
        {
            let identity = jwt.verify(token).await?;
            // The token names its organization; a header may only repeat it.
            let organization_id = match requested_organization(headers)? {
                Some(asked) if asked != identity.organization_id => {
                    return Err(AuthError::OrganizationNotAllowed(asked));
                }
                _ => identity.organization_id,
            };
            let organization = self.organization(organization_id).await?;
            check_access(method, &identity.permissions)?;
            return Ok(Principal {
                key_id: format!("jwt:{}", identity.subject),
                organization,
                permissions: identity.permissions,
            });
        }
        let (key_id, secret) = keys::parse(token).ok_or(AuthError::MalformedKey)?;
        let key = match self.cache.key(key_id).await {
            Ok(key) => key,
            Err(LoadError::NotFound) => return Err(AuthError::UnknownKey),
            Err(LoadError::Unavailable(err)) => return Err(AuthError::Db(DbError::Pool(err))),
        };
        if !keys::secret_matches(&key.secret_hash, secret) {
            return Err(AuthError::UnknownKey);
        }
        let now = now_ms();
        // Against the clock on every call, so a cached key expires on time too.
        match keys::state_of(&key, now) {
            keys::KeyState::Revoked => return Err(AuthError::RevokedKey),
            keys::KeyState::Expired => return Err(AuthError::ExpiredKey),
            keys::KeyState::Active | keys::KeyState::Grace => {}
        }
        let organization_id = requested_organization(headers)?.unwrap_or_else(|| key.organization_id.clone());
        if !keys::may_act_for(&key, &organization_id) {
            return Err(AuthError::OrganizationNotAllowed(organization_id));
        }
        let organization = self.organization(organization_id).await?;
        let permissions = keys::permissions_of(&key);
        check_access(method, &permissions)?;
        self.touch(&key.id, key.last_used_at, now);
        Ok(Principal {
            key_id: key.id.clone(),
            organization,
            permissions,
        })
    }

    /// A call carrying only a client certificate: its mapped service principal.
    async fn authorize_service(
        &self,
        method: &str,
        headers: &HeaderMap,
        certificate: &ClientCertificate,
    ) -> Result<Principal, AuthError> {
        let service = self
            .identities
            .current()
            .principal_for(certificate)
            .ok_or_else(|| AuthError::UnmappedCertificate(certificate.display_name().to_string()))?;
        let organization_id = match requested_organization(headers)? {
            Some(asked) if !service.organizations.contains(&asked) => {
                return Err(AuthError::OrganizationNotAllowed(asked));
            }
            Some(asked) => asked,
            None => service.organizations.first().cloned().unwrap_or_default(),
        };
        let organization = self.organization(organization_id).await?;
        check_access(method, &service.permissions)?;
        Ok(Principal {
            key_id: format!("cert:{}", service.identity),
            organization,
            permissions: service.permissions.clone(),
        })
    }

    async fn organization(&self, organization_id: String) -> Result<Organization, AuthError> {
        match self.cache.organization(&organization_id).await {
            Ok(org) => Ok(Organization::clone(&org)),
            Err(LoadError::NotFound) => Err(AuthError::OrganizationNotAllowed(organization_id)),
            Err(LoadError::Unavailable(err)) => Err(AuthError::Db(DbError::Pool(err))),
        }
    }

    /// Records the key's use at most once a minute, on a task of its own: the
    /// call neither waits for it nor holds a connection for it.
    fn touch(&self, key_id: &str, stored: Option<i64>, now: i64) {
        {
            let mut touched = self.touched.lock().unwrap_or_else(PoisonError::into_inner);
            let last = touched.get(key_id).copied().or(stored);
            if last.is_some_and(|t| now - t <= TOUCH_INTERVAL_MS) {
                return;
            }
            if touched.len() >= TOUCH_LEDGER_MAX {
                touched.clear();
            }
            touched.insert(key_id.to_string(), now);
        }
        let (db, key_id) = (self.db.clone(), key_id.to_string());
        tokio::spawn(async move {
            // Bookkeeping only: failures are not the caller's problem.
            if let Ok(mut conn) = db.conn().await {
                let _ = api_keys::touch(&mut conn, &key_id, now).await;
            }
        });
    }
}

/// `x-organization-id`, normalised; `None` when the call does not name one.
fn requested_organization(headers: &HeaderMap) -> Result<Option<String>, AuthError> {
    headers
        .get("x-organization-id")
        .map(|value| {
            value
                .to_str()
                .ok()
                .and_then(organization_id_of)
                .ok_or(AuthError::InvalidOrganizationHeader)
        })
        .transpose()
}

/// An organization id as stored (lower-case, hyphenated) from text in any case and
/// either UUID form; `None` when it is not one. Headers and token claims alike.
pub(crate) fn organization_id_of(text: &str) -> Option<String> {
    uuid::Uuid::parse_str(text.trim())
        .ok()
        .map(|id| id.hyphenated().to_string())
}

/// Whether `permissions` open `method` (a method missing from the table is refused).
fn check_access(method: &str, permissions: &[Permission]) -> Result<(), AuthError> {
    let access = required_access(method).ok_or_else(|| AuthError::MethodNotAllowed(method.to_string()))?;
    if let Access::Needs(permission) = access
        && !permissions.contains(&permission)
    {
        return Err(AuthError::MissingPermission(permission));
    }
    Ok(())
}

fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or(AuthError::MissingCredentials)?
        .to_str()
        .map_err(|_| AuthError::MalformedKey)?
        .trim();
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::MalformedKey)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::MalformedKey);
    }
    Ok(token.trim())
}

/// Builds the refusal sent to the client: the API layer's error mapping, given the
/// call's request id.
pub type DenyFn = fn(AuthError, &str) -> tonic::Status;

#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
    deny: DenyFn,
}

impl AuthLayer {
    pub fn new(auth: Authenticator, deny: DenyFn) -> AuthLayer {
        AuthLayer {
            auth: Arc::new(auth),
            deny,
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            auth: self.auth.clone(),
            deny: self.deny,
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Arc<Authenticator>,
    deny: DenyFn,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for AuthService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        // The clone that was polled ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        let deny = self.deny;
        Box::pin(async move {
            let path = request.uri().path().to_string();
            if is_public(&path) {
                return inner.call(request).await;
            }
            let certificate = request
                .extensions()
                .get::<crate::request::Peer>()
                .and_then(|peer| peer.certificate.clone());
            match auth
                .authorize(&path, request.headers(), certificate.as_deref())
                .await
            {
                Ok(principal) => {
                    request.extensions_mut().insert(principal);
                    inner.call(request).await
                }
                Err(err) => {
                    let request_id = RequestId::of(&request);
                    if let AuthError::Db(db) = &err {
                        tracing::error!(error = %db, "authentication could not reach the database");
                    }
                    Ok(deny(err, &request_id).into_http())
                }
            }
        })
    }
}
