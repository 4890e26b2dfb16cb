//! The hub's sign-in sessions: a person's API key (or identity-provider token) is
//! exchanged for a random session id in an `HttpOnly`, `SameSite=Strict` cookie, so
//! the key never reaches the page's script or storage. The key stays in this
//! process's memory only and is re-checked by the [`crate::auth::Authenticator`] on
//! every request the session makes: a revoked or expired key ends the session within
//! the auth cache's bound, and the session holds exactly the key's permissions.
//!
//! Sessions live in memory: a restart signs everybody out, and a deployment with
//! several replicas behind one address needs sticky sessions for the hub (the
//! README says so). Each session carries its own CSRF token, which every
//! state-changing request must send back (a form field or `x-csrf-token`).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// The session cookie's name.
pub const COOKIE: &str = "ferry_hub";

/// The header a script sends the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// What a session holds: the credential it acts with, never sent to the page.
#[derive(Clone)]
pub struct Session {
    /// `Bearer <key or token>`, as the authenticator reads it.
    pub credential: String,
    /// The `x-organization-id` chosen at sign-in (empty: the key's own).
    pub organization: String,
    /// Sent back by every state-changing request.
    pub csrf: String,
    last_used: Instant,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("organization", &self.organization)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// The request headers the authenticator reads for this session.
    pub fn credentials(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(&self.credential) {
            headers.insert(header::AUTHORIZATION, value);
        }
        if let Ok(value) = HeaderValue::from_str(&self.organization)
            && !self.organization.is_empty()
        {
            headers.insert("x-organization-id", value);
        }
        headers
    }

    /// Whether `sent` is this session's CSRF token (compared in constant time).
    pub fn csrf_matches(&self, sent: &str) -> bool {
        use subtle::ConstantTimeEq;
        !sent.is_empty() && bool::from(self.csrf.as_bytes().ct_eq(sent.as_bytes()))
    }
}

/// Every open session of this process, by the SHA-256 of its cookie value (a
/// memory dump shows no usable cookie).
pub struct Sessions {
    idle: Duration,
    max: usize,
    by_id: Mutex<HashMap<[u8; 32], Session>>,
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    /// Sessions that end after `idle` without use; at most `max` at once (the
    /// longest idle is ended to make room, so sign-ins cannot exhaust memory).
    pub fn new(idle: Duration, max: usize) -> Sessions {
        Sessions {
            idle,
            max: max.max(1),
            by_id: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.by_id.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens a session acting with `credential`; returns the cookie value.
    pub fn open(&self, credential: String, organization: String) -> String {
        let id = random_token();
        let now = Instant::now();
        let mut sessions = self.lock();
        sessions.retain(|_, s| now.duration_since(s.last_used) < self.idle);
        while sessions.len() >= self.max {
            let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.last_used).map(|(k, _)| *k) else {
                break;
            };
            sessions.remove(&oldest);
        }
        sessions.insert(
            digest(&id),
            Session {
                credential,
                organization,
                csrf: random_token(),
                last_used: now,
            },
        );
        id
    }

    /// The session a cookie value names, if it is open and has not been idle too
    /// long; counts as a use.
    pub fn touch(&self, id: &str) -> Option<Session> {
        let key = digest(id);
        let now = Instant::now();
        let mut sessions = self.lock();
        let session = sessions.get_mut(&key)?;
        if now.duration_since(session.last_used) >= self.idle {
            sessions.remove(&key);
            return None;
        }
        session.last_used = now;
        Some(session.clone())
    }

    /// Ends a session (sign-out, or its key no longer works).
    pub fn end(&self, id: &str) {
        self.lock().remove(&digest(id));
    }

    /// Open sessions (for tests and metrics).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The session cookie's value in a request, if any.
pub fn cookie_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_string())
        .filter(|value| !value.is_empty())
}

/// `Set-Cookie` for a new session: script cannot read it, other sites never send
/// it, and over TLS it never travels in clear. No `Max-Age`: the server ends it.
pub fn set_cookie(id: &str, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("ferry_hub=; Path=/; Max-Age=0"))
}

/// `Set-Cookie` that removes the session cookie.
pub fn clear_cookie(secure: bool) -> HeaderValue {
    if secure {
        HeaderValue::from_static("ferry_hub=; Path=/; HttpOnly; SameSite=Strict; Secure; Max-Age=0")
    } else {
        HeaderValue::from_static("ferry_hub=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_ends_when_idle_too_long_and_on_sign_out() {
        let sessions = Sessions::new(Duration::from_millis(50), 10);
        let id = sessions.open("Bearer k".into(), String::new());
        assert!(sessions.touch(&id).is_some());
        std::thread::sleep(Duration::from_millis(80));
        assert!(sessions.touch(&id).is_none(), "idle past the limit");
        let id = sessions.open("Bearer k".into(), String::new());
        sessions.end(&id);
        assert!(sessions.touch(&id).is_none());
        assert!(sessions.touch("made-up").is_none());
    }

    #[test]
    fn the_longest_idle_session_makes_room_at_the_limit() {
        let sessions = Sessions::new(Duration::from_secs(60), 2);
        let first = sessions.open("Bearer a".into(), String::new());
        let second = sessions.open("Bearer b".into(), String::new());
        assert!(sessions.touch(&first).is_some());
        let third = sessions.open("Bearer c".into(), String::new());
        assert_eq!(sessions.len(), 2);
        assert!(sessions.touch(&second).is_none());
        assert!(sessions.touch(&first).is_some() && sessions.touch(&third).is_some());
    }

    #[test]
    fn the_csrf_token_must_match_exactly() {
        let sessions = Sessions::new(Duration::from_secs(60), 2);
        let session = sessions.touch(&sessions.open("Bearer a".into(), String::new()));
        let session = session.expect("open");
        assert!(session.csrf_matches(&session.csrf.clone()));
        assert!(!session.csrf_matches(""));
        assert!(!session.csrf_matches("nope"));
    }

    #[test]
    fn the_cookie_is_found_among_others_and_is_http_only_and_strict() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; ferry_hub=xyz; b=2"),
        );
        assert_eq!(cookie_of(&headers).as_deref(), Some("xyz"));
        let cookie = set_cookie("xyz", true);
        let text = cookie.to_str().unwrap_or_default();
        assert!(text.contains("HttpOnly") && text.contains("SameSite=Strict") && text.contains("Secure"));
        assert!(
            !set_cookie("xyz", false)
                .to_str()
                .unwrap_or_default()
                .contains("Secure")
        );
    }
}
