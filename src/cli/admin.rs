//! `ferry admin …`: organizations, API keys, e-mail domains and senders, the
//! enrichment catalogue and usage, straight against the database.

use anyhow::{Context, bail};
use clap::Subcommand;

use futures::future::BoxFuture;

use crate::audit::{self, Actor, Door};
use crate::auth::{Permission, keys};
use crate::db::email::{self, EmailDomainRow, EmailSenderRow};
use crate::db::enrichments::{self, EnrichmentGroupRow, EnrichmentRow};
use crate::db::{Conn, api_keys, new_id, now_ms, usage};
use crate::orgs::{self, Feature, Plan};
use crate::server::App;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    #[command(subcommand)]
    Org(OrgCommand),
    #[command(subcommand)]
    Key(KeyCommand),
    #[command(subcommand)]
    Domain(DomainCommand),
    #[command(subcommand)]
    Sender(SenderCommand),
    #[command(subcommand)]
    Enrichment(EnrichmentCommand),
    #[command(subcommand)]
    Storage(StorageCommand),
    /// Usage totals of an organization by kind and month.
    Usage {
        #[arg(long)]
        org: String,
    },
    /// The organization's audit trail, oldest first: who changed what, and which
    /// links were handed out.
    Audit {
        #[arg(long)]
        org: String,
        /// From when: a duration back from now (`24h`, `7d`) or a time
        /// (`2026-12-01T00:00:00Z`); default: everything kept.
        #[arg(long)]
        since: Option<String>,
        /// At most this many events.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        /// One JSON object per line instead of columns.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum StorageCommand {
    /// Files and bytes in the store per organization and kind (exports, imports,
    /// staged), listed from the store itself.
    Usage {
        /// Only this organization.
        #[arg(long)]
        org: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an organization.
    Create {
        #[arg(long)]
        name: String,
        /// freemium, starter, growth, enterprise or usage_based.
        #[arg(long, default_value = "freemium")]
        plan: String,
        /// A feature to enable (repeatable): global_sender_email, bulk_automatic_entity_import.
        #[arg(long = "feature")]
        features: Vec<String>,
    },
    List,
    SetPlan {
        #[arg(long)]
        org: String,
        #[arg(long)]
        plan: String,
    },
    EnableFeature {
        #[arg(long)]
        org: String,
        #[arg(long)]
        feature: String,
    },
    DisableFeature {
        #[arg(long)]
        org: String,
        #[arg(long)]
        feature: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create an API key; its secret is printed once.
    Create {
        #[arg(long)]
        org: String,
        #[arg(long, default_value = "cli")]
        name: String,
        /// A permission (repeatable); default: all of entities:export,
        /// entities:bulk_import, entities:read.
        #[arg(long = "permission")]
        permissions: Vec<String>,
        /// Another organization this service key may act for (repeatable; `*` for any).
        #[arg(long = "allow-org")]
        allow_orgs: Vec<String>,
        /// The key stops working this long after now (`90d`, `12h`, `30m`); default: never.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<std::time::Duration>,
    },
    /// The organization's keys: state, expiry, last use and other organizations.
    List {
        #[arg(long)]
        org: String,
    },
    /// Replace a key: a successor with the same permissions (printed once), while the
    /// old key keeps working for the grace period.
    Rotate {
        /// The key id (the part after `ferry_`).
        #[arg(long)]
        key: String,
        /// How long the old key keeps working (`24h`, `7d`, `0s`).
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        grace: std::time::Duration,
    },
    Revoke {
        /// The key id (the part after `ferry_`).
        #[arg(long)]
        key: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DomainCommand {
    Add {
        #[arg(long)]
        org: String,
        #[arg(long)]
        domain: String,
    },
    Verify {
        #[arg(long)]
        org: String,
        #[arg(long)]
        domain: String,
    },
    List {
        #[arg(long)]
        org: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SenderCommand {
    Add {
        #[arg(long)]
        org: String,
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "")]
        name: String,
    },
    List {
        #[arg(long)]
        org: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum EnrichmentCommand {
    /// Add or change an enrichment code of the organization's catalogue.
    Set {
        #[arg(long)]
        org: String,
        #[arg(long)]
        code: String,
        /// person, company or any.
        #[arg(long = "type", default_value = "any")]
        entity_type: String,
        /// Keep the code in the catalogue but inactive.
        #[arg(long)]
        inactive: bool,
    },
    /// Define an enrichment group (a slug naming several codes).
    Group {
        #[arg(long)]
        org: String,
        #[arg(long)]
        slug: String,
        /// Codes separated by `,`.
        #[arg(long)]
        codes: String,
    },
    List {
        #[arg(long)]
        org: String,
    },
}

pub async fn run(app: &App, command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::Org(c) => org(app, c).await,
        AdminCommand::Key(c) => key(app, c).await,
        AdminCommand::Domain(c) => domain(app, c).await,
        AdminCommand::Sender(c) => sender(app, c).await,
        AdminCommand::Enrichment(c) => enrichment(app, c).await,
        AdminCommand::Storage(StorageCommand::Usage { org }) => storage_usage(app, org.as_deref()).await,
        AdminCommand::Usage { org } => usage_report(app, &org).await,
        AdminCommand::Audit {
            org,
            since,
            limit,
            json,
        } => audit_report(app, &org, since.as_deref(), limit, json).await,
    }
}

/// The operator as the audit trail names them (`admin:<user>`), for `command`;
/// the domain functions file the record under the organization they change.
fn operator(command: &str) -> Actor {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    Actor {
        principal: format!("admin:{user}"),
        organization_id: String::new(),
        door: Door::Admin,
        method: format!("admin {command}"),
        request_id: new_id(),
    }
}

/// Runs `change` and its audit record (as the operator's, for `organization_id`)
/// in one transaction: either both are written or neither.
async fn audited<F>(
    app: &App,
    organization_id: &str,
    command: &str,
    target: &str,
    detail: &str,
    change: F,
) -> anyhow::Result<()>
where
    F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, anyhow::Result<()>> + Send + 'static,
{
    let actor = operator(command).for_organization(organization_id);
    let (target, detail) = (target.to_string(), detail.to_string());
    app.db
        .transaction(move |conn| {
            Box::pin(async move {
                change(conn).await?;
                actor.record_detailed(conn, &target, audit::OK, &detail).await?;
                Ok::<_, anyhow::Error>(())
            })
        })
        .await
}

/// `--since`: a duration back from now, or a time.
fn parse_since(text: &str) -> anyhow::Result<i64> {
    if let Ok(ago) = humantime::parse_duration(text) {
        return Ok(now_ms().saturating_sub(crate::db::millis(ago)));
    }
    let at = humantime::parse_rfc3339_weak(text).with_context(|| {
        format!("--since `{text}`: give a duration (`24h`) or a time (`2026-12-01T00:00:00Z`)")
    })?;
    Ok(at
        .duration_since(std::time::UNIX_EPOCH)
        .map(crate::db::millis)
        .unwrap_or_default())
}

async fn audit_report(
    app: &App,
    org: &str,
    since: Option<&str>,
    limit: u32,
    json: bool,
) -> anyhow::Result<()> {
    let since = since.map(parse_since).transpose()?.unwrap_or(0);
    for row in audit::list(&app.db, org, since, i64::from(limit.max(1))).await? {
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "id": row.id,
                    "time": crate::api::convert::iso(row.at),
                    "organizationId": row.organization_id,
                    "principal": row.principal,
                    "door": row.door,
                    "method": row.method,
                    "targetId": row.target_id,
                    "requestId": row.request_id,
                    "outcome": row.outcome,
                    "detail": row.detail,
                })
            );
        } else {
            println!(
                "{}  {:<5} {:<28} {:<48} target={} outcome={} request={}{}",
                crate::api::convert::iso(row.at),
                row.door,
                row.principal,
                row.method,
                row.target_id,
                row.outcome,
                row.request_id,
                if row.detail.is_empty() {
                    String::new()
                } else {
                    format!("  {}", row.detail)
                }
            );
        }
    }
    Ok(())
}

fn parse_plan(text: &str) -> anyhow::Result<Plan> {
    Plan::parse(text).with_context(|| {
        let names: Vec<&str> = Plan::ALL.iter().map(|p| p.as_str()).collect();
        format!("unknown plan `{text}`; use one of {}", names.join(", "))
    })
}

fn parse_feature(text: &str) -> anyhow::Result<Feature> {
    Feature::parse(text).with_context(|| {
        let names: Vec<&str> = Feature::ALL.iter().map(|f| f.as_str()).collect();
        format!("unknown feature `{text}`; use one of {}", names.join(", "))
    })
}

fn print_org(org: &orgs::Organization) {
    let features: Vec<&str> = org.features.iter().map(|f| f.as_str()).collect();
    println!(
        "{}  {:<20} plan={:<12} features=[{}]",
        org.id,
        org.name,
        org.plan,
        features.join(",")
    );
}

async fn org(app: &App, command: OrgCommand) -> anyhow::Result<()> {
    let db = &app.db;
    let org = match command {
        OrgCommand::Create { name, plan, features } => {
            if name.trim().is_empty() {
                bail!("--name must not be empty");
            }
            let features = features
                .iter()
                .map(|f| parse_feature(f))
                .collect::<anyhow::Result<Vec<_>>>()?;
            orgs::create(
                db,
                name.trim(),
                parse_plan(&plan)?,
                &features,
                Some(&operator("org create")),
            )
            .await?
        }
        OrgCommand::List => {
            for org in orgs::list(db).await? {
                print_org(&org);
            }
            return Ok(());
        }
        OrgCommand::SetPlan { org, plan } => {
            orgs::set_plan(db, &org, parse_plan(&plan)?, Some(&operator("org set-plan"))).await?
        }
        OrgCommand::EnableFeature { org, feature } => {
            let by = operator("org enable-feature");
            orgs::set_feature(db, &org, parse_feature(&feature)?, true, Some(&by)).await?
        }
        OrgCommand::DisableFeature { org, feature } => {
            let by = operator("org disable-feature");
            orgs::set_feature(db, &org, parse_feature(&feature)?, false, Some(&by)).await?
        }
    };
    print_org(&org);
    Ok(())
}

async fn key(app: &App, command: KeyCommand) -> anyhow::Result<()> {
    let db = &app.db;
    match command {
        KeyCommand::Create {
            org,
            name,
            permissions,
            allow_orgs,
            expires_in,
        } => {
            orgs::find(db, &org).await?;
            let permissions = if permissions.is_empty() {
                Permission::ALL.to_vec()
            } else {
                permissions
                    .iter()
                    .map(|p| Permission::parse(p).with_context(|| format!("unknown permission `{p}`")))
                    .collect::<anyhow::Result<Vec<_>>>()?
            };
            let expires_at = match expires_in {
                None => None,
                Some(d) if d.is_zero() => bail!("--expires-in must be longer than 0s"),
                Some(d) => Some(now_ms().saturating_add(crate::db::millis(d))),
            };
            let by = operator("key create");
            let (row, token) =
                keys::create_expiring(db, &org, &name, &permissions, &allow_orgs, expires_at, Some(&by))
                    .await?;
            println!(
                "key {} created for organization {}{}",
                row.id,
                row.organization_id,
                row.expires_at
                    .map(|at| format!(", expires {}", crate::api::convert::iso(at)))
                    .unwrap_or_default()
            );
            println!("{token}");
            eprintln!("(the key is shown once; store it now)");
        }
        KeyCommand::List { org } => {
            let now = now_ms();
            for row in api_keys::list_for_org(&mut db.conn().await?, &org).await? {
                println!(
                    "{}  {:<16} {:<8} expires={} last_used={} allow_org={} permissions={}",
                    row.id,
                    row.name,
                    keys::state_of(&row, now).as_str(),
                    row.expires_at
                        .map(crate::api::convert::iso)
                        .unwrap_or_else(|| "never".into()),
                    row.last_used_at
                        .map(crate::api::convert::iso)
                        .unwrap_or_else(|| "never".into()),
                    row.allowed_organizations,
                    row.permissions
                );
            }
        }
        KeyCommand::Rotate { key, grace } => {
            let Some((row, token)) = keys::rotate(db, &key, grace, Some(&operator("key rotate"))).await?
            else {
                bail!("no active key `{key}`");
            };
            println!(
                "key {} replaces key {key}, which keeps working for {}",
                row.id,
                humantime::format_duration(grace)
            );
            println!("{token}");
            eprintln!("(the key is shown once; store it now)");
        }
        KeyCommand::Revoke { key } => {
            if !keys::revoke(db, &key, Some(&operator("key revoke"))).await? {
                bail!("no active key `{key}`");
            }
            println!("key {key} revoked");
        }
    }
    Ok(())
}

/// A lower-case domain name of letters, digits, `-` and dots.
fn normalize_domain(text: &str) -> anyhow::Result<String> {
    let domain = text.trim().trim_end_matches('.').to_ascii_lowercase();
    let valid = domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !valid {
        bail!("`{text}` is not a domain name");
    }
    Ok(domain)
}

async fn domain(app: &App, command: DomainCommand) -> anyhow::Result<()> {
    let db = &app.db;
    match command {
        DomainCommand::Add { org, domain } => {
            orgs::find(db, &org).await?;
            let row = EmailDomainRow {
                id: new_id(),
                organization_id: org,
                domain: normalize_domain(&domain)?,
                verified: false,
                verification_token: keys::NewKey::generate().secret[..32].to_string(),
                created_at: now_ms(),
                verified_at: None,
            };
            let saved = row.clone();
            audited(
                app,
                &row.organization_id,
                "domain add",
                &row.domain,
                "",
                move |conn| Box::pin(async move { Ok(email::insert_domain(conn, &saved).await?) }),
            )
            .await?;
            println!(
                "domain {} added (unverified); verification token {}",
                row.domain, row.verification_token
            );
        }
        DomainCommand::Verify { org, domain } => {
            let domain = normalize_domain(&domain)?;
            let (owner, name) = (org.clone(), domain.clone());
            audited(app, &org, "domain verify", &domain, "", move |conn| {
                Box::pin(async move {
                    if email::verify_domain(conn, &owner, &name, now_ms()).await? == 0 {
                        bail!("organization {owner} has no domain {name}");
                    }
                    Ok(())
                })
            })
            .await?;
            println!("domain {domain} verified");
        }
        DomainCommand::List { org } => {
            for row in email::list_domains(&mut db.conn().await?, &org).await? {
                println!(
                    "{}  {:<30} {}",
                    row.id,
                    row.domain,
                    if row.verified { "verified" } else { "unverified" }
                );
            }
        }
    }
    Ok(())
}

async fn sender(app: &App, command: SenderCommand) -> anyhow::Result<()> {
    let db = &app.db;
    match command {
        SenderCommand::Add {
            org,
            email: address,
            name,
        } => {
            orgs::find(db, &org).await?;
            let address = address.trim().to_ascii_lowercase();
            let Some((local, domain)) = address.split_once('@') else {
                bail!("`{address}` is not an e-mail address");
            };
            if local.is_empty() {
                bail!("`{address}` is not an e-mail address");
            }
            normalize_domain(domain)?;
            let row = EmailSenderRow {
                id: new_id(),
                organization_id: org,
                email: address,
                display_name: name,
                created_at: now_ms(),
            };
            let saved = row.clone();
            audited(
                app,
                &row.organization_id,
                "sender add",
                &row.id,
                &row.email,
                move |conn| Box::pin(async move { Ok(email::insert_sender(conn, &saved).await?) }),
            )
            .await?;
            println!("sender {} added: {}", row.id, row.email);
        }
        SenderCommand::List { org } => {
            for row in email::list_senders(&mut db.conn().await?, &org).await? {
                println!("{}  {}  {}", row.id, row.email, row.display_name);
            }
        }
    }
    Ok(())
}

async fn enrichment(app: &App, command: EnrichmentCommand) -> anyhow::Result<()> {
    let db = &app.db;
    match command {
        EnrichmentCommand::Set {
            org,
            code,
            entity_type,
            inactive,
        } => {
            orgs::find(db, &org).await?;
            if !matches!(entity_type.as_str(), "person" | "company" | "any") {
                bail!("--type must be person, company or any");
            }
            let code = code.trim().to_string();
            if code.is_empty() {
                bail!("--code must not be empty");
            }
            let row = EnrichmentRow {
                organization_id: org,
                code,
                entity_type,
                active: !inactive,
                created_at: now_ms(),
            };
            let saved = row.clone();
            audited(
                app,
                &row.organization_id,
                "enrichment set",
                &row.code,
                &row.entity_type,
                move |conn| Box::pin(async move { Ok(enrichments::upsert(conn, &saved).await?) }),
            )
            .await?;
            println!(
                "enrichment {} ({}) {}",
                row.code,
                row.entity_type,
                if row.active { "active" } else { "inactive" }
            );
        }
        EnrichmentCommand::Group { org, slug, codes } => {
            orgs::find(db, &org).await?;
            let codes: Vec<String> = codes
                .split(',')
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
                .collect();
            if codes.is_empty() {
                bail!("--codes must name at least one code");
            }
            let row = EnrichmentGroupRow {
                organization_id: org,
                slug: slug.trim().to_string(),
                codes: serde_json::Value::from(codes).to_string(),
                created_at: now_ms(),
            };
            let saved = row.clone();
            audited(
                app,
                &row.organization_id,
                "enrichment group",
                &row.slug,
                &row.codes,
                move |conn| Box::pin(async move { Ok(enrichments::upsert_group(conn, &saved).await?) }),
            )
            .await?;
            println!("group {} = {}", row.slug, row.codes);
        }
        EnrichmentCommand::List { org } => {
            let mut conn = db.conn().await?;
            for row in enrichments::list(&mut conn, &org).await? {
                println!(
                    "{:<40} {:<8} {}",
                    row.code,
                    row.entity_type,
                    if row.active { "active" } else { "inactive" }
                );
            }
            for row in enrichments::list_groups(&mut conn, &org).await? {
                println!("group {:<34} {}", row.slug, row.codes);
            }
        }
    }
    Ok(())
}

async fn storage_usage(app: &App, org: Option<&str>) -> anyhow::Result<()> {
    let table = app.storage.usage().await?;
    println!(
        "{:<36} {:<8} {:>8} {:>14}",
        "organization", "kind", "files", "bytes"
    );
    for ((organization, kind), usage) in table {
        if org.is_some_and(|wanted| wanted != organization) {
            continue;
        }
        println!(
            "{organization:<36} {kind:<8} {:>8} {:>14}",
            usage.files, usage.bytes
        );
    }
    Ok(())
}

async fn usage_report(app: &App, org: &str) -> anyhow::Result<()> {
    let events = usage::list_for_org(&mut app.db.conn().await?, org).await?;
    let mut totals: std::collections::BTreeMap<(String, String), i64> = Default::default();
    for event in events {
        *totals
            .entry((crate::calendar::year_month(event.created_at), event.kind))
            .or_default() += event.quantity;
    }
    println!("{:<8} {:<24} {:>10}", "month", "kind", "quantity");
    for ((month, kind), quantity) in totals {
        println!("{month:<8} {kind:<24} {quantity:>10}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_lower_cased_and_checked() {
        assert_eq!(normalize_domain(" Example.COM. ").unwrap(), "example.com");
        assert!(normalize_domain("no_dots").is_err());
        assert!(normalize_domain("bad..example").is_err());
    }
}
