//! Organizations: plans (which set the import row limit) and feature flags.

use std::fmt;

use crate::config::{Config, PlansConfig};
use crate::db::organizations::{self, OrganizationRow};
use futures::future::BoxFuture;

use crate::audit::{self, Actor};
use crate::db::{Conn, Db, DbError, new_id, notify, now_ms};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    Freemium,
    Starter,
    Growth,
    Enterprise,
    UsageBased,
}

impl Plan {
    pub const ALL: [Plan; 5] = [
        Plan::Freemium,
        Plan::Starter,
        Plan::Growth,
        Plan::Enterprise,
        Plan::UsageBased,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Plan::Freemium => "freemium",
            Plan::Starter => "starter",
            Plan::Growth => "growth",
            Plan::Enterprise => "enterprise",
            Plan::UsageBased => "usage_based",
        }
    }

    pub fn parse(text: &str) -> Option<Plan> {
        Plan::ALL
            .into_iter()
            .find(|p| p.as_str() == text.trim().to_ascii_lowercase())
    }

    /// Rows one import may hold on this plan, before the server-wide cap.
    pub fn import_row_limit(self, plans: &PlansConfig) -> u64 {
        match self {
            Plan::Freemium => plans.freemium_import_rows,
            Plan::Starter => plans.starter_import_rows,
            Plan::Growth => plans.growth_import_rows,
            Plan::Enterprise => plans.enterprise_import_rows,
            Plan::UsageBased => plans.usage_based_import_rows,
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// Exports may be delivered by e-mail.
    GlobalSenderEmail,
    /// The organization may run bulk imports.
    BulkAutomaticEntityImport,
}

impl Feature {
    pub const ALL: [Feature; 2] = [Feature::GlobalSenderEmail, Feature::BulkAutomaticEntityImport];

    pub fn as_str(self) -> &'static str {
        match self {
            Feature::GlobalSenderEmail => "global_sender_email",
            Feature::BulkAutomaticEntityImport => "bulk_automatic_entity_import",
        }
    }

    pub fn parse(text: &str) -> Option<Feature> {
        Feature::ALL.into_iter().find(|f| f.as_str() == text.trim())
    }
}

/// An organization as the rest of ferry sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Organization {
    pub id: String,
    pub name: String,
    pub plan: Plan,
    pub features: Vec<Feature>,
    pub created_at: i64,
}

impl Organization {
    pub fn has(&self, feature: Feature) -> bool {
        self.features.contains(&feature)
    }

    /// Rows per import: the plan's limit lowered by the server cap (0 = no cap).
    pub fn import_row_limit(&self, config: &Config) -> u64 {
        let plan = self.plan.import_row_limit(&config.plans);
        match config.bulk_import.max_items {
            0 => plan,
            cap => plan.min(cap),
        }
    }

    /// Reads a stored row; unknown plan or feature names (from a newer version) are
    /// treated as the most restrictive value rather than failing the call.
    pub fn from_row(row: OrganizationRow) -> Organization {
        let names: Vec<String> = serde_json::from_str(&row.features).unwrap_or_default();
        Organization {
            plan: Plan::parse(&row.plan).unwrap_or(Plan::Freemium),
            features: names.iter().filter_map(|n| Feature::parse(n)).collect(),
            id: row.id,
            name: row.name,
            created_at: row.created_at,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OrgError {
    #[error("organization {0} not found")]
    NotFound(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for OrgError {
    fn from(err: diesel::result::Error) -> Self {
        OrgError::Db(DbError::Query(err))
    }
}

/// Creates an organization; with an `actor`, recorded in the audit trail in the
/// same transaction.
pub async fn create(
    db: &Db,
    name: &str,
    plan: Plan,
    features: &[Feature],
    actor: Option<&Actor>,
) -> Result<Organization, OrgError> {
    let now = now_ms();
    let row = OrganizationRow {
        id: new_id(),
        name: name.to_string(),
        plan: plan.as_str().to_string(),
        features: features_json(features),
        created_at: now,
        updated_at: now,
    };
    let (saved, actor) = (row.clone(), actor.cloned());
    let detail = format!("name={name} plan={}", plan.as_str());
    db.transaction(move |conn| {
        Box::pin(async move {
            organizations::insert(conn, &saved).await?;
            if let Some(actor) = &actor {
                actor
                    .for_organization(&saved.id)
                    .record_detailed(conn, &saved.id, audit::OK, &detail)
                    .await?;
            }
            Ok::<_, OrgError>(())
        })
    })
    .await?;
    Ok(Organization::from_row(row))
}

pub async fn find(db: &Db, id: &str) -> Result<Organization, OrgError> {
    organizations::find(&mut db.conn().await?, id)
        .await?
        .map(Organization::from_row)
        .ok_or_else(|| OrgError::NotFound(id.to_string()))
}

pub async fn list(db: &Db) -> Result<Vec<Organization>, OrgError> {
    let rows = organizations::list(&mut db.conn().await?).await?;
    Ok(rows.into_iter().map(Organization::from_row).collect())
}

/// Changes the plan; with an `actor`, recorded in the same transaction.
pub async fn set_plan(
    db: &Db,
    id: &str,
    plan: Plan,
    actor: Option<&Actor>,
) -> Result<Organization, OrgError> {
    let detail = format!("plan={}", plan.as_str());
    let plan = plan.as_str();
    change(db, id, actor, detail, move |conn, id| {
        Box::pin(async move { Ok(organizations::set_plan(conn, &id, plan, now_ms()).await?) })
    })
    .await
}

/// Turns a feature on or off; returns the organization after the change. With an
/// `actor`, recorded in the same transaction.
pub async fn set_feature(
    db: &Db,
    id: &str,
    feature: Feature,
    enabled: bool,
    actor: Option<&Actor>,
) -> Result<Organization, OrgError> {
    let org = find(db, id).await?;
    let mut features: Vec<Feature> = org.features.into_iter().filter(|f| *f != feature).collect();
    if enabled {
        features.push(feature);
    }
    let json = features_json(&features);
    let detail = format!(
        "feature={} {}",
        feature.as_str(),
        if enabled { "on" } else { "off" }
    );
    change(db, id, actor, detail, move |conn, id| {
        Box::pin(async move { Ok(organizations::set_features(conn, &id, &json, now_ms()).await?) })
    })
    .await
}

/// One change to an organization's row (`update` answers the rows it touched) and
/// its audit record in one transaction; replicas hear of it after the commit.
async fn change<F>(
    db: &Db,
    id: &str,
    actor: Option<&Actor>,
    detail: String,
    update: F,
) -> Result<Organization, OrgError>
where
    F: for<'c> FnOnce(&'c mut Conn, String) -> BoxFuture<'c, Result<usize, OrgError>> + Send + 'static,
{
    let (organization, actor) = (id.to_string(), actor.cloned());
    db.transaction(move |conn| {
        Box::pin(async move {
            if update(conn, organization.clone()).await? == 0 {
                return Err(OrgError::NotFound(organization));
            }
            if let Some(actor) = &actor {
                actor
                    .for_organization(&organization)
                    .record_detailed(conn, &organization, audit::OK, &detail)
                    .await?;
            }
            Ok(())
        })
    })
    .await?;
    let mut conn = db.conn().await?;
    notify::organization_changed(db, &mut conn, id).await;
    drop(conn);
    find(db, id).await
}

fn features_json(features: &[Feature]) -> String {
    serde_json::Value::from(features.iter().map(|f| f.as_str()).collect::<Vec<_>>()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_limits_follow_the_plan_and_the_server_cap() {
        let mut config = Config::default();
        let org = |plan| Organization {
            id: "o".into(),
            name: "o".into(),
            plan,
            features: vec![],
            created_at: 0,
        };
        let limits: Vec<u64> = Plan::ALL
            .iter()
            .map(|p| org(*p).import_row_limit(&config))
            .collect();
        assert_eq!(limits, [4_000, 10_000, 50_000, 100_000, 100_000]);
        config.bulk_import.max_items = 20_000;
        assert_eq!(org(Plan::Growth).import_row_limit(&config), 20_000);
        assert_eq!(org(Plan::Freemium).import_row_limit(&config), 4_000);
    }

    #[test]
    fn plan_names_parse_case_insensitively() {
        assert_eq!(Plan::parse("Usage_Based"), Some(Plan::UsageBased));
        assert_eq!(Plan::parse("platinum"), None);
    }
}
