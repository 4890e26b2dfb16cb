//! Synthetic entities for benchmarks (~150 bytes of data a row), loaded with COPY on
//! PostgreSQL and with batched inserts in one transaction on SQLite.

use diesel::Connection;
use futures::SinkExt;

use crate::db::entities::EntityRow;
use crate::db::{Conn, Db, schema};

const CHUNK: usize = 20_000;

/// Entity number `n` of a benchmark organization.
pub fn entity(organization_id: &str, n: u64) -> EntityRow {
    let countries = ["AR", "BR", "CL", "MX", "UY"];
    let created = 1_700_000_000_000 + n as i64;
    EntityRow {
        id: uuid::Uuid::now_v7().to_string(),
        organization_id: organization_id.to_string(),
        entity_type: if n.is_multiple_of(3) { "company" } else { "person" }.into(),
        tax_id: format!("{:011}", 20_000_000_000 + n),
        country: countries[(n % 5) as usize].into(),
        name: format!("Entity Name {n}"),
        gender: None,
        external_id: Some(format!("ext-{n}")),
        email: Some(format!("e{n}@example.com")),
        phone: None,
        registration_date: Some("2024-05-17".into()),
        status: "active".into(),
        is_client: n.is_multiple_of(2),
        nationality: None,
        risk_matrix_id: None,
        attributes: format!(r#"{{"segment_tag":"retail","score":{}}}"#, n % 100),
        entity_data: "{}".into(),
        enrichment_plan: None,
        skip_rules_execution: false,
        created_at: created,
        updated_at: created,
    }
}

/// Loads `rows` entities for the organization.
pub async fn load(db: &Db, organization_id: &str, rows: u64) -> anyhow::Result<()> {
    match db.backend() {
        crate::db::Backend::Postgres => copy_in(db.url(), organization_id, rows).await,
        crate::db::Backend::Sqlite => insert_sqlite(db, organization_id, rows).await,
    }
}

async fn copy_in(url: &str, organization_id: &str, rows: u64) -> anyhow::Result<()> {
    let client = crate::db::postgres::client(url, "bench seed").await?;
    let sink = client
        .copy_in(
            "COPY entities (id, organization_id, entity_type, tax_id, country, name, external_id, email, \
             registration_date, status, is_client, attributes, entity_data, skip_rules_execution, created_at, \
             updated_at) FROM STDIN WITH (FORMAT csv)",
        )
        .await?;
    let mut sink = std::pin::pin!(sink);
    let mut start = 0;
    while start < rows {
        let end = (start + CHUNK as u64).min(rows);
        let mut writer = csv::Writer::from_writer(Vec::with_capacity(CHUNK * 200));
        for n in start..end {
            let e = entity(organization_id, n);
            writer.write_record([
                e.id.as_str(),
                &e.organization_id,
                &e.entity_type,
                &e.tax_id,
                &e.country,
                &e.name,
                e.external_id.as_deref().unwrap_or_default(),
                e.email.as_deref().unwrap_or_default(),
                e.registration_date.as_deref().unwrap_or_default(),
                &e.status,
                if e.is_client { "true" } else { "false" },
                &e.attributes,
                &e.entity_data,
                "false",
                &e.created_at.to_string(),
                &e.updated_at.to_string(),
            ])?;
        }
        sink.send(bytes::Bytes::from(writer.into_inner()?)).await?;
        start = end;
    }
    sink.as_mut().finish().await?;
    // Fresh statistics, as after any bulk load; without them the planner may pick a
    // bitmap scan and sort for each keyset batch.
    client.batch_execute("ANALYZE entities").await?;
    Ok(())
}

async fn insert_sqlite(db: &Db, organization_id: &str, rows: u64) -> anyhow::Result<()> {
    let Conn::Sqlite(pooled) = &mut db.conn().await? else {
        anyhow::bail!("not a SQLite database");
    };
    let org = organization_id.to_string();
    pooled
        .spawn_blocking(move |conn| {
            conn.transaction(|conn| {
                use diesel::RunQueryDsl;
                let mut start = 0;
                while start < rows {
                    let end = (start + 500).min(rows);
                    let chunk: Vec<EntityRow> = (start..end).map(|n| entity(&org, n)).collect();
                    diesel::insert_into(schema::entities::table)
                        .values(&chunk)
                        .execute(conn)?;
                    start = end;
                }
                Ok::<_, diesel::result::Error>(())
            })?;
            diesel::connection::SimpleConnection::batch_execute(conn, "ANALYZE entities")
        })
        .await?;
    Ok(())
}
