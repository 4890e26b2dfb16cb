//! Who is calling: API keys, the permission each gRPC method needs, and the Tower
//! layer that turns credentials into a [`Principal`] in the request's extensions.

pub mod cache;
pub mod certificates;
pub mod jwt;
pub mod keys;
pub mod layer;
pub mod permissions;
pub mod sessions;

pub use layer::{AuthError, AuthLayer, Authenticator};
pub use permissions::Permission;

use crate::orgs::Organization;

/// The authenticated caller of a request, put in its extensions by the auth layer.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key_id: String,
    /// The organization the call acts for (`x-organization-id`).
    pub organization: Organization,
    pub permissions: Vec<Permission>,
}

impl Principal {
    pub fn organization_id(&self) -> &str {
        &self.organization.id
    }
}
