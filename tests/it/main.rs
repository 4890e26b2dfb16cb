//! Integration tests: the real server on loopback, called with the generated tonic
//! clients, on SQLite and again on PostgreSQL (`FERRY_TEST_DATABASE_URL`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failed test setup should panic"
)]

mod pki;
mod support;

mod audit;
mod auth;
mod cli;
mod client;
mod entities;
mod exports;
mod graceful_stop;
mod hub;
mod imports;
mod jwt;
mod load;
mod mail;
mod mappings;
mod outages;
mod plans;
mod queue;
mod replicas;
mod rest;
mod retention;
mod round_trip;
mod s3;
mod server;

/// A plain entity for tests that need many rows.
pub fn entities_fixture(org: &str, n: i64) -> ferry::db::entities::EntityRow {
    ferry::db::entities::EntityRow {
        id: format!("0190f000-1111-7000-8000-{n:012}"),
        organization_id: org.to_string(),
        entity_type: "person".into(),
        tax_id: format!("FX-{n}"),
        country: "AR".into(),
        name: format!("Entity {n}"),
        gender: None,
        external_id: Some(format!("ext-{n}")),
        email: None,
        phone: None,
        registration_date: None,
        status: "active".into(),
        is_client: false,
        nationality: None,
        risk_matrix_id: None,
        attributes: r#"{"segment_tag":"retail"}"#.into(),
        entity_data: "{}".into(),
        enrichment_plan: None,
        skip_rules_execution: false,
        created_at: 1_700_000_000_000 + n,
        updated_at: 1_700_000_000_000 + n,
    }
}
mod postgres_tls;
mod tls;
