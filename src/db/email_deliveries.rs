//! Queries on `email_deliveries`: one row per export and recipient.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::Conn;
use super::schema::email_deliveries;
use crate::with_conn;

pub const PENDING: &str = "pending";
/// Handed to the mail transport; a row left here by a dead worker is never resent.
pub const SENDING: &str = "sending";
pub const SENT: &str = "sent";
pub const FAILED: &str = "failed";

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = email_deliveries, treat_none_as_default_value = false)]
pub struct DeliveryRow {
    pub job_id: String,
    pub recipient: String,
    pub state: String,
    pub message_id: Option<String>,
    pub error: Option<String>,
    pub updated_at: i64,
    pub sent_at: Option<i64>,
}

pub async fn list(conn: &mut Conn, job_id: &str) -> QueryResult<Vec<DeliveryRow>> {
    with_conn!(conn, |c| {
        email_deliveries::table
            .filter(email_deliveries::job_id.eq(job_id))
            .select(DeliveryRow::as_select())
            .load(c)
            .await
    })
}

/// Writes a recipient's state (insert or replace).
pub async fn put(conn: &mut Conn, row: &DeliveryRow) -> QueryResult<()> {
    with_conn!(conn, |c| {
        diesel::insert_into(email_deliveries::table)
            .values(row)
            .on_conflict((email_deliveries::job_id, email_deliveries::recipient))
            .do_update()
            .set((
                email_deliveries::state.eq(&row.state),
                email_deliveries::message_id.eq(&row.message_id),
                email_deliveries::error.eq(&row.error),
                email_deliveries::updated_at.eq(row.updated_at),
                email_deliveries::sent_at.eq(row.sent_at),
            ))
            .execute(c)
            .await
            .map(drop)
    })
}
