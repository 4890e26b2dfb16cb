//! The entity filter flags shared by `ferry export create` and `ferry entities list`.

use clap::Args;
use prost_types::Timestamp;

use super::ClientError;
use crate::proto;

#[derive(Debug, Clone, Default, Args)]
pub struct FilterArgs {
    /// Entity type: person or company (repeat for any of them).
    #[arg(long = "filter-type", value_name = "TYPE")]
    pub types: Vec<EntityKind>,
    /// ISO 3166-1 alpha-2 country (repeat for any of them).
    #[arg(long = "filter-country", value_name = "CC")]
    pub countries: Vec<String>,
    /// Status: active, inactive, blocked, under_review, … (repeat for any of them).
    #[arg(long = "filter-status", value_name = "STATUS")]
    pub statuses: Vec<String>,
    /// Tax ID (repeat for any of them).
    #[arg(long = "filter-tax-id", value_name = "TAX_ID")]
    pub tax_ids: Vec<String>,
    /// External ID (repeat for any of them).
    #[arg(long = "filter-external-id", value_name = "ID")]
    pub external_ids: Vec<String>,
    /// Only clients (true) or only non-clients (false).
    #[arg(long = "filter-client", value_name = "BOOL")]
    pub is_client: Option<bool>,
    /// An attribute equal to a value, `path=value` (`tags.tier=gold`); all must match.
    #[arg(long = "filter-attribute", value_name = "PATH=VALUE")]
    pub attributes: Vec<String>,
    /// Risk matrix id.
    #[arg(long = "filter-risk-matrix", value_name = "ID")]
    pub risk_matrix_id: Option<String>,
    /// Case-insensitive substring of name, tax ID or external ID.
    #[arg(long = "filter-search", value_name = "TEXT")]
    pub search: Option<String>,
    /// Created at or after this RFC 3339 time (`2026-01-31T00:00:00Z`).
    #[arg(long, value_name = "TIME")]
    pub created_after: Option<String>,
    /// Created at or before this RFC 3339 time.
    #[arg(long, value_name = "TIME")]
    pub created_before: Option<String>,
    /// Updated at or after this RFC 3339 time.
    #[arg(long, value_name = "TIME")]
    pub updated_after: Option<String>,
    /// Updated at or before this RFC 3339 time.
    #[arg(long, value_name = "TIME")]
    pub updated_before: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EntityKind {
    Person,
    Company,
}

/// An RFC 3339 time from a flag.
pub fn time(flag: &str, text: &Option<String>) -> Result<Option<Timestamp>, ClientError> {
    text.as_deref()
        .map(|text| {
            text.trim().parse::<Timestamp>().map_err(|err| {
                ClientError::Input(format!(
                    "--{flag} {text}: not an RFC 3339 time ({err}); e.g. 2026-01-31T00:00:00Z"
                ))
            })
        })
        .transpose()
}

fn range(
    start_flag: &str,
    start: &Option<String>,
    end_flag: &str,
    end: &Option<String>,
) -> Result<Option<proto::TimeRange>, ClientError> {
    let start = time(start_flag, start)?;
    let end = time(end_flag, end)?;
    Ok((start.is_some() || end.is_some()).then_some(proto::TimeRange { start, end }))
}

/// `active` or `ENTITY_STATUS_ACTIVE`, any case.
fn status(text: &str) -> Result<i32, ClientError> {
    let name = text.trim().to_ascii_uppercase();
    let name = if name.starts_with("ENTITY_STATUS_") {
        name
    } else {
        format!("ENTITY_STATUS_{name}")
    };
    proto::EntityStatus::from_str_name(&name)
        .map(|status| status as i32)
        .ok_or_else(|| ClientError::Input(format!("--filter-status {text}: not an entity status")))
}

impl FilterArgs {
    pub fn to_proto(&self) -> Result<proto::EntityFilter, ClientError> {
        let attributes = self
            .attributes
            .iter()
            .map(|pair| {
                pair.split_once('=')
                    .map(|(path, value)| proto::AttributeEquals {
                        path: path.trim().to_string(),
                        value: value.to_string(),
                    })
                    .ok_or_else(|| {
                        ClientError::Input(format!("--filter-attribute {pair}: expected PATH=VALUE"))
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(proto::EntityFilter {
            types: self
                .types
                .iter()
                .map(|kind| match kind {
                    EntityKind::Person => proto::EntityType::Person as i32,
                    EntityKind::Company => proto::EntityType::Company as i32,
                })
                .collect(),
            countries: self.countries.clone(),
            statuses: self
                .statuses
                .iter()
                .map(|s| status(s))
                .collect::<Result<_, _>>()?,
            created: range(
                "created-after",
                &self.created_after,
                "created-before",
                &self.created_before,
            )?,
            updated: range(
                "updated-after",
                &self.updated_after,
                "updated-before",
                &self.updated_before,
            )?,
            tax_ids: self.tax_ids.clone(),
            external_ids: self.external_ids.clone(),
            is_client: self.is_client,
            attributes,
            risk_matrix_id: self.risk_matrix_id.clone().unwrap_or_default(),
            search: self.search.clone().unwrap_or_default(),
        })
    }
}
