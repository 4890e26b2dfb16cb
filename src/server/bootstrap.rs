//! First start of an empty database: a default organization and an all-permission
//! key, so a new user can call the service at once. The key is printed once and
//! written to `<data_dir>/bootstrap-key` (mode 0600).

use std::path::Path;

use crate::auth::{Permission, keys};
use crate::db::{Db, organizations};
use crate::orgs::{self, Feature, Plan};

/// What the bootstrap created.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub organization_id: String,
    pub token: String,
    pub key_file: std::path::PathBuf,
}

/// Creates the default organization and key when there is no organization yet.
pub async fn run_if_empty(db: &Db, data_dir: &Path) -> anyhow::Result<Option<Bootstrap>> {
    if organizations::count(&mut db.conn().await?).await? > 0 {
        return Ok(None);
    }
    let org = orgs::create(db, "default", Plan::Enterprise, &Feature::ALL, None).await?;
    let (_, token) = keys::create(db, &org.id, "bootstrap", &Permission::ALL, &[]).await?;
    let key_file = data_dir.join("bootstrap-key");
    crate::private_file::write(&key_file, &format!("{token}\n"))?;
    Ok(Some(Bootstrap {
        organization_id: org.id,
        token,
        key_file,
    }))
}
