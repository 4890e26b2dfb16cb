//! Queries on `email_domains` and `email_senders`.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::Conn;
use super::schema::{email_domains, email_senders};
use crate::with_conn;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = email_domains)]
pub struct EmailDomainRow {
    pub id: String,
    pub organization_id: String,
    pub domain: String,
    pub verified: bool,
    pub verification_token: String,
    pub created_at: i64,
    pub verified_at: Option<i64>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = email_senders)]
pub struct EmailSenderRow {
    pub id: String,
    pub organization_id: String,
    pub email: String,
    pub display_name: String,
    pub created_at: i64,
}

pub async fn insert_domain(conn: &mut Conn, row: &EmailDomainRow) -> QueryResult<()> {
    with_conn!(conn, |c| {
        diesel::insert_into(email_domains::table)
            .values(row)
            .execute(c)
            .await
            .map(drop)
    })
}

pub async fn list_domains(conn: &mut Conn, organization_id: &str) -> QueryResult<Vec<EmailDomainRow>> {
    with_conn!(conn, |c| {
        email_domains::table
            .filter(email_domains::organization_id.eq(organization_id))
            .order(email_domains::domain)
            .select(EmailDomainRow::as_select())
            .load(c)
            .await
    })
}

pub async fn find_domain(
    conn: &mut Conn,
    organization_id: &str,
    domain: &str,
) -> QueryResult<Option<EmailDomainRow>> {
    with_conn!(conn, |c| {
        email_domains::table
            .filter(email_domains::organization_id.eq(organization_id))
            .filter(email_domains::domain.eq(domain))
            .select(EmailDomainRow::as_select())
            .first(c)
            .await
            .optional()
    })
}

/// Marks a domain verified; returns 0 when the organization has no such domain.
pub async fn verify_domain(
    conn: &mut Conn,
    organization_id: &str,
    domain: &str,
    now: i64,
) -> QueryResult<usize> {
    with_conn!(conn, |c| {
        diesel::update(
            email_domains::table
                .filter(email_domains::organization_id.eq(organization_id))
                .filter(email_domains::domain.eq(domain)),
        )
        .set((
            email_domains::verified.eq(true),
            email_domains::verified_at.eq(now),
        ))
        .execute(c)
        .await
    })
}

pub async fn insert_sender(conn: &mut Conn, row: &EmailSenderRow) -> QueryResult<()> {
    with_conn!(conn, |c| {
        diesel::insert_into(email_senders::table)
            .values(row)
            .execute(c)
            .await
            .map(drop)
    })
}

pub async fn list_senders(conn: &mut Conn, organization_id: &str) -> QueryResult<Vec<EmailSenderRow>> {
    with_conn!(conn, |c| {
        email_senders::table
            .filter(email_senders::organization_id.eq(organization_id))
            .order(email_senders::email)
            .select(EmailSenderRow::as_select())
            .load(c)
            .await
    })
}

pub async fn find_sender(
    conn: &mut Conn,
    organization_id: &str,
    id: &str,
) -> QueryResult<Option<EmailSenderRow>> {
    with_conn!(conn, |c| {
        email_senders::table
            .filter(email_senders::organization_id.eq(organization_id))
            .filter(email_senders::id.eq(id))
            .select(EmailSenderRow::as_select())
            .first(c)
            .await
            .optional()
    })
}
