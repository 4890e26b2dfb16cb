//! Service principals for client certificates (mTLS). `server.tls_identities` names
//! a TOML file mapping a certificate's identity — a URI SAN such as a SPIFFE id, or
//! a DNS SAN — to the organizations the service may act for and its permissions, so
//! a service authenticates with its certificate alone, without a shared secret.
//!
//! ```toml
//! [[identity]]
//! name = "spiffe://acme.test/ns/billing/sa/exporter"
//! organizations = ["0190d7a4-…"]        # the first is used when a call names none
//! permissions = ["entities:export", "entities:read"]
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::Permission;
use super::layer::organization_id_of;
use crate::reload::Reloading;

/// What the listener learnt from a verified client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCertificate {
    /// URI SANs first (SPIFFE ids), then DNS SANs, in certificate order.
    pub identities: Vec<String>,
}

impl ClientCertificate {
    /// The identity to name in logs and errors.
    pub fn display_name(&self) -> &str {
        self.identities
            .first()
            .map_or("(a certificate without SAN)", String::as_str)
    }
}

/// A mapped service: who it is, whom it may act for, what it may do.
#[derive(Debug, Clone, PartialEq)]
pub struct ServicePrincipal {
    pub identity: String,
    pub organizations: Vec<String>,
    pub permissions: Vec<Permission>,
}

/// The mapping file could not be used; names the file and the entry.
#[derive(Debug, thiserror::Error)]
pub enum IdentityMapError {
    #[error("cannot read server.tls_identities {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("server.tls_identities {path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MappingFile {
    #[serde(default)]
    identity: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    organizations: Vec<String>,
    #[serde(default)]
    permissions: Vec<String>,
}

/// Certificate identity -> service principal; empty when no file is configured.
#[derive(Debug, Default)]
pub struct IdentityMap {
    by_identity: HashMap<String, Arc<ServicePrincipal>>,
}

impl IdentityMap {
    /// Reads and checks the file at start, so a typo fails the start rather than a
    /// service's first call.
    pub fn load(path: &Path) -> Result<IdentityMap, IdentityMapError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| IdentityMapError::Read {
            path: shown.clone(),
            source,
        })?;
        IdentityMap::parse(&text).map_err(|message| IdentityMapError::Invalid { path: shown, message })
    }

    fn parse(text: &str) -> Result<IdentityMap, String> {
        let file: MappingFile = toml::from_str(text).map_err(|err| err.to_string())?;
        let mut by_identity = HashMap::new();
        for entry in file.identity {
            let principal = principal_of(entry)?;
            let name = principal.identity.clone();
            if by_identity.insert(name.clone(), Arc::new(principal)).is_some() {
                return Err(format!("identity `{name}` is mapped twice"));
            }
        }
        Ok(IdentityMap { by_identity })
    }

    /// The principal of the first of the certificate's identities that is mapped.
    pub fn principal_for(&self, certificate: &ClientCertificate) -> Option<Arc<ServicePrincipal>> {
        certificate
            .identities
            .iter()
            .find_map(|identity| self.by_identity.get(identity).cloned())
    }

    pub fn len(&self) -> usize {
        self.by_identity.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_identity.is_empty()
    }
}

/// The mapping of `server.tls_identities`, re-read when the file changes (a new
/// service is let in without a restart; a broken edit keeps the previous mapping).
/// Empty when no file is configured.
#[derive(Debug, Default)]
pub struct Identities(Option<Reloading<IdentityMap>>);

impl Identities {
    /// Reads the file now: a mistake stops the start, naming the identity.
    pub fn load(path: &Path) -> anyhow::Result<Identities> {
        let map = Reloading::load("server.tls_identities", vec![path.to_path_buf()], |paths| {
            Ok(IdentityMap::load(&paths[0])?)
        })?;
        Ok(Identities(Some(map)))
    }

    /// The mapping as the file says now.
    pub fn current(&self) -> Arc<IdentityMap> {
        self.0.as_ref().map(Reloading::current).unwrap_or_default()
    }
}

fn principal_of(entry: Entry) -> Result<ServicePrincipal, String> {
    let name = entry.name.trim().to_string();
    if name.is_empty() {
        return Err("an identity has an empty `name`".into());
    }
    if entry.organizations.is_empty() {
        return Err(format!("identity `{name}` lists no `organizations`"));
    }
    let organizations = entry
        .organizations
        .iter()
        .map(|org| {
            organization_id_of(org)
                .ok_or_else(|| format!("identity `{name}`: `{org}` is not an organization id"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let permissions = entry
        .permissions
        .iter()
        .map(|p| {
            Permission::parse(p).ok_or_else(|| {
                let known: Vec<_> = Permission::ALL.iter().map(|p| p.as_str()).collect();
                format!(
                    "identity `{name}`: unknown permission `{p}` (known: {})",
                    known.join(", ")
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ServicePrincipal {
        identity: name,
        organizations,
        permissions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORG: &str = "0190d7a4-5a1c-7cc0-9d3e-2f1b5c6a7e80";

    #[test]
    fn a_certificate_is_mapped_by_its_first_known_identity() {
        let map = IdentityMap::parse(&format!(
            "[[identity]]\nname = \"spiffe://acme.test/billing\"\norganizations = [\"{ORG}\"]\npermissions = [\"entities:read\"]\n"
        ))
        .unwrap();
        let cert = ClientCertificate {
            identities: vec![
                "spiffe://acme.test/other".into(),
                "spiffe://acme.test/billing".into(),
            ],
        };
        let principal = map.principal_for(&cert).unwrap();
        assert_eq!(principal.organizations, vec![ORG.to_string()]);
        assert_eq!(principal.permissions, vec![Permission::EntitiesRead]);
        assert!(map.principal_for(&ClientCertificate::default()).is_none());
    }

    #[test]
    fn a_mapping_with_a_bad_permission_or_organization_names_the_identity() {
        let bad_permission = IdentityMap::parse(&format!(
            "[[identity]]\nname = \"svc\"\norganizations = [\"{ORG}\"]\npermissions = [\"entities:write\"]\n"
        ))
        .unwrap_err();
        assert!(
            bad_permission.contains("svc") && bad_permission.contains("entities:write"),
            "{bad_permission}"
        );
        let bad_org =
            IdentityMap::parse("[[identity]]\nname = \"svc\"\norganizations = [\"acme\"]\n").unwrap_err();
        assert!(bad_org.contains("not an organization id"), "{bad_org}");
        let none = IdentityMap::parse("[[identity]]\nname = \"svc\"\norganizations = []\n").unwrap_err();
        assert!(none.contains("no `organizations`"), "{none}");
    }
}
