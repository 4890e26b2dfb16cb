//! API keys `ferry_<id>_<secret>`: the id finds the row, the secret is checked
//! against its stored SHA-256 in constant time. Secrets are 256 random bits, so a
//! fast hash is enough; the database never holds a usable key.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::audit::{self, Actor};
use crate::db::api_keys::{self, ApiKeyRow};
use crate::db::{Db, DbError, notify, now_ms};

use super::Permission;

const PREFIX: &str = "ferry_";

/// A freshly made key: the full text is shown once and never stored.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub id: String,
    pub secret: String,
}

impl NewKey {
    pub fn generate() -> NewKey {
        let mut id = [0u8; 8];
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut id);
        rand::rng().fill_bytes(&mut secret);
        NewKey {
            id: hex::encode(id),
            secret: hex::encode(secret),
        }
    }

    /// The text a client sends as `Bearer <key>`.
    pub fn token(&self) -> String {
        format!("{PREFIX}{}_{}", self.id, self.secret)
    }
}

/// Splits `ferry_<id>_<secret>`; `None` when the text is not shaped like a key.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hexish = |s: &str| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hexish(id) && hexish(secret)).then_some((id, secret))
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Constant-time comparison of a presented secret with a stored hash.
pub fn secret_matches(stored_hash: &str, secret: &str) -> bool {
    let presented = hash_secret(secret);
    presented.as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

/// Creates a key for an organization that never expires; returns the row and the
/// one-time token. `allowed_organizations` lets a service key act for other
/// organizations (`*`: all).
pub async fn create(
    db: &Db,
    organization_id: &str,
    name: &str,
    permissions: &[Permission],
    allowed_organizations: &[String],
) -> Result<(ApiKeyRow, String), DbError> {
    create_expiring(
        db,
        organization_id,
        name,
        permissions,
        allowed_organizations,
        None,
        None,
    )
    .await
}

/// [`create`] with an expiry (epoch milliseconds; `None`: never); with an `actor`,
/// recorded in the audit trail in the same transaction.
pub async fn create_expiring(
    db: &Db,
    organization_id: &str,
    name: &str,
    permissions: &[Permission],
    allowed_organizations: &[String],
    expires_at: Option<i64>,
    actor: Option<&Actor>,
) -> Result<(ApiKeyRow, String), DbError> {
    let (row, token) = new_row(
        organization_id,
        name,
        permissions,
        allowed_organizations,
        expires_at,
    );
    let (saved, actor) = (row.clone(), actor.cloned());
    db.transaction(move |conn| {
        Box::pin(async move {
            api_keys::insert(conn, &saved).await?;
            if let Some(actor) = &actor {
                let detail = format!(
                    "name={} permissions={} allow_org={}",
                    saved.name, saved.permissions, saved.allowed_organizations
                );
                actor
                    .for_organization(&saved.organization_id)
                    .record_detailed(conn, &saved.id, audit::OK, &detail)
                    .await?;
            }
            Ok::<_, DbError>(())
        })
    })
    .await?;
    Ok((row, token))
}

fn new_row(
    organization_id: &str,
    name: &str,
    permissions: &[Permission],
    allowed_organizations: &[String],
    expires_at: Option<i64>,
) -> (ApiKeyRow, String) {
    let key = NewKey::generate();
    let row = ApiKeyRow {
        id: key.id.clone(),
        organization_id: organization_id.to_string(),
        name: name.to_string(),
        secret_hash: hash_secret(&key.secret),
        permissions: serde_json::Value::from(permissions.iter().map(|p| p.as_str()).collect::<Vec<_>>())
            .to_string(),
        allowed_organizations: serde_json::Value::from(allowed_organizations.to_vec()).to_string(),
        created_at: now_ms(),
        revoked_at: None,
        last_used_at: None,
        expires_at,
    };
    (row, key.token())
}

/// Replaces a key: the successor has the same organization, name, permissions,
/// other organizations and lifetime (an expiring key's successor expires as long
/// after its creation as the old one did), and the old key keeps working for
/// `grace` so the clients that hold it can move over. One transaction: either both
/// happen (and the `actor`'s audit record) or neither. `None` when no active key
/// has this id.
pub async fn rotate(
    db: &Db,
    id: &str,
    grace: std::time::Duration,
    actor: Option<&Actor>,
) -> Result<Option<(ApiKeyRow, String)>, DbError> {
    let actor = actor.cloned();
    let now = now_ms();
    let grace_ms = crate::db::millis(grace);
    let until = now.saturating_add(grace_ms);
    let id = id.to_string();
    let rotated = db
        .transaction(move |conn| {
            Box::pin(async move {
                let Some(old) = api_keys::find(conn, &id).await? else {
                    return Ok::<_, DbError>(None);
                };
                if !state_of(&old, now).works() {
                    return Ok(None);
                }
                let lifetime = old.expires_at.map(|at| at - old.created_at);
                let (row, token) = new_row(
                    &old.organization_id,
                    &old.name,
                    &permissions_of(&old),
                    &allowed_organizations_of(&old),
                    lifetime.map(|l| now.saturating_add(l)),
                );
                api_keys::insert(conn, &row).await?;
                api_keys::revoke(conn, &old.id, until).await?;
                if let Some(actor) = &actor {
                    let detail = format!("replaces {}, grace {}", old.id, humantime::format_duration(grace));
                    actor
                        .for_organization(&old.organization_id)
                        .record_detailed(conn, &row.id, audit::OK, &detail)
                        .await?;
                }
                Ok(Some((row, token, old.id)))
            })
        })
        .await?;
    let Some((row, token, old_id)) = rotated else {
        return Ok(None);
    };
    // Replicas drop the old key's cached row, so they see its end of grace.
    let mut conn = db.conn().await?;
    notify::key_changed(db, &mut conn, &old_id).await;
    Ok(Some((row, token)))
}

/// Revokes a key (with the `actor`'s audit record in the same transaction); every
/// replica stops accepting it within the auth cache's bound (at once on
/// PostgreSQL). Returns false when no active key has this id.
/// The names of the API keys among `principals` (key id -> `Ana's laptop`); a
/// principal that is not a key (`jwt:ana@acme.test`) is left out.
pub async fn key_names(
    db: &Db,
    principals: impl IntoIterator<Item = String>,
) -> Result<std::collections::HashMap<String, String>, DbError> {
    let mut principals: Vec<String> = principals.into_iter().collect();
    principals.sort();
    principals.dedup();
    let mut conn = db.conn().await?;
    Ok(api_keys::names(&mut conn, &principals)
        .await?
        .into_iter()
        .collect())
}

pub async fn revoke(db: &Db, id: &str, actor: Option<&Actor>) -> Result<bool, DbError> {
    let (key, actor) = (id.to_string(), actor.cloned());
    let revoked = db
        .transaction(move |conn| {
            Box::pin(async move {
                let Some(row) = api_keys::find(conn, &key).await? else {
                    return Ok::<_, DbError>(false);
                };
                // A key in a rotation's grace period is still active: revoking ends it now.
                if api_keys::revoke(conn, &key, now_ms()).await? == 0 {
                    return Ok(false);
                }
                if let Some(actor) = &actor {
                    actor
                        .for_organization(&row.organization_id)
                        .record(conn, &key, audit::OK)
                        .await?;
                }
                Ok(true)
            })
        })
        .await?;
    if revoked {
        let mut conn = db.conn().await?;
        notify::key_changed(db, &mut conn, id).await;
    }
    Ok(revoked)
}

/// Where a key stands at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Active,
    /// Rotated: still working until its `revoked_at`.
    Grace,
    Expired,
    Revoked,
}

impl KeyState {
    pub fn works(self) -> bool {
        matches!(self, KeyState::Active | KeyState::Grace)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Grace => "grace",
            KeyState::Expired => "expired",
            KeyState::Revoked => "revoked",
        }
    }
}

/// The one reading of a key's `revoked_at` and `expires_at` against the clock:
/// for the auth layer, rotation and `key list` alike.
pub fn state_of(row: &ApiKeyRow, now: i64) -> KeyState {
    match (row.revoked_at, row.expires_at) {
        (Some(at), _) if at <= now => KeyState::Revoked,
        (_, Some(at)) if at <= now => KeyState::Expired,
        (Some(_), _) => KeyState::Grace,
        _ => KeyState::Active,
    }
}

/// The permissions stored on a key row (unknown names are ignored).
pub fn permissions_of(row: &ApiKeyRow) -> Vec<Permission> {
    let names: Vec<String> = serde_json::from_str(&row.permissions).unwrap_or_default();
    names.iter().filter_map(|n| Permission::parse(n)).collect()
}

/// The other organizations stored on a key row (`*`: any).
fn allowed_organizations_of(row: &ApiKeyRow) -> Vec<String> {
    serde_json::from_str(&row.allowed_organizations).unwrap_or_default()
}

/// Whether the key may act for `organization_id`.
pub fn may_act_for(row: &ApiKeyRow, organization_id: &str) -> bool {
    if row.organization_id == organization_id {
        return true;
    }
    allowed_organizations_of(row)
        .iter()
        .any(|o| o == "*" || o == organization_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_parses_back_and_matches_its_hash() {
        let key = NewKey::generate();
        let token = key.token();
        let (id, secret) = parse(&token).unwrap();
        assert_eq!(id, key.id);
        assert!(secret_matches(&hash_secret(&key.secret), secret));
        assert!(!secret_matches(&hash_secret(&key.secret), "00"));
    }

    #[test]
    fn text_not_shaped_like_a_key_is_rejected() {
        for bad in [
            "",
            "ferry_",
            "ferry_abc",
            "other_ab_cd",
            "ferry_zz_cd",
            "ferry__cd",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
