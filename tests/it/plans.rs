//! Plans that must hold on a shared PostgreSQL: another organization's rows,
//! analyzed before the organization being served existed (its first import into a
//! database other customers filled). These tests read `EXPLAIN`, never a timing: a
//! change that brings back a scan fails here, whatever the machine's speed.

use ferry::db::import_sink::pg_writer::CopyWriter;

use crate::support::{Backend, TestDb, postgres_url};

/// A PostgreSQL database holding 50,000 analyzed entities of `org-a` and, after the
/// statistics were taken, 5,000 of `org-b` (all in MX): the state in which a plan
/// built for `org-b`'s values believes it has about one row.
async fn shared_database() -> (TestDb, tokio_postgres::Client) {
    let (db, client) = migrated_database().await;
    client
        .batch_execute(
            "INSERT INTO organizations (id, name, plan, features, created_at, updated_at) \
             VALUES ('org-a', 'A', 'enterprise', '[]', 0, 0), ('org-b', 'B', 'enterprise', '[]', 0, 0); \
             INSERT INTO entities (id, organization_id, entity_type, tax_id, country, name, status, \
             attributes, entity_data, created_at, updated_at) \
             SELECT md5('a' || g), 'org-a', 'person', lpad(g::text, 11, '0'), \
             (ARRAY['AR','BR','CL','MX','UY'])[g % 5 + 1], 'Entity ' || g, 'active', '{}', '{}', \
             1700000000000 + g, 1700000000000 + g FROM generate_series(1, 50000) g; \
             ANALYZE entities; \
             INSERT INTO entities (id, organization_id, entity_type, tax_id, country, name, status, \
             attributes, entity_data, created_at, updated_at) \
             SELECT md5('b' || g), 'org-b', 'person', 'BENCH' || lpad(g::text, 9, '0'), 'MX', \
             'Entity ' || g, 'active', '{}', '{}', 1800000000000 + g, 1800000000000 + g \
             FROM generate_series(1, 5000) g;",
        )
        .await
        .expect("fill");
    (db, client)
}

/// A fresh PostgreSQL schema with ferry's tables, and a connection to it.
async fn migrated_database() -> (TestDb, tokio_postgres::Client) {
    let db = TestDb::new(Backend::Postgres).await;
    ferry::db::migrate::run(&ferry::db::Db::connect(&db.url, 2).await.expect("connect"))
        .await
        .expect("migrate");
    let client = ferry::db::postgres::client(&db.url, "plan test")
        .await
        .expect("connect");
    (db, client)
}

async fn explain(client: &tokio_postgres::Client, sql: &str) -> String {
    client
        .query(&format!("EXPLAIN {sql}"), &[])
        .await
        .expect("explain")
        .iter()
        .map(|row| row.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_into_a_new_organization_looks_its_keys_up_in_the_unique_index() {
    if postgres_url().is_none() {
        return;
    }
    let (db, client) = shared_database().await;
    // The trap is set: planned for these values, the lookup walks one of the
    // organization's ranges (`updated_at`, `external_id`, …) and filters it,
    // which makes an import quadratic.
    let custom = explain(
        &client,
        "SELECT * FROM entities WHERE organization_id = 'org-b' AND country = 'MX' \
         AND tax_id = ANY('{BENCH000000001,BENCH000000002,BENCH000009999}')",
    )
    .await;
    assert!(
        custom.contains("Index Cond: (organization_id = 'org-b'::text)") && custom.contains("Filter"),
        "{custom}"
    );

    let writer = CopyWriter::connect(&db.url).await.expect("import connection");
    let keys: Vec<String> = (1..=2000).map(|i| format!("BENCH{i:09}")).collect();
    let plan = writer
        .explain_lookup("org-b", "MX", &keys)
        .await
        .expect("explain");
    assert_probes_each_key(&plan);
}

/// The lookup probes one key per index descent: the unique key, or
/// `(organization_id, tax_id)` with the country checked on the one row found;
/// never an organization-wide range.
fn assert_probes_each_key(plan: &str) {
    let probes = [
        (
            "Index Scan using entities_organization_id_country_tax_id_key",
            "Index Cond: ((organization_id = $1) AND (country = $2) AND (tax_id = k.tax_id))",
        ),
        (
            "Index Scan using entities_org_tax_id",
            "Index Cond: ((organization_id = $1) AND (tax_id = k.tax_id))",
        ),
    ];
    assert!(
        probes
            .iter()
            .any(|(scan, condition)| plan.contains(scan) && plan.contains(condition)),
        "{plan}"
    );
    assert!(
        !plan.contains("entities_org_updated") && !plan.contains("entities_org_created"),
        "{plan}"
    );
}

/// A fresh database, never analyzed, after the first batch of an import: the
/// lookup of the next batch probes the unique index too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_into_an_empty_database_looks_its_keys_up_in_the_unique_index() {
    if postgres_url().is_none() {
        return;
    }
    let (db, client) = migrated_database().await;
    client
        .batch_execute(
            "INSERT INTO organizations (id, name, plan, features, created_at, updated_at) \
             VALUES ('org-b', 'B', 'enterprise', '[]', 0, 0); \
             INSERT INTO entities (id, organization_id, entity_type, tax_id, country, name, status, \
             attributes, entity_data, created_at, updated_at) \
             SELECT md5('b' || g), 'org-b', 'person', 'BENCH' || lpad(g::text, 9, '0'), 'MX', \
             'Entity ' || g, 'active', '{}', '{}', 1800000000000 + g, 1800000000000 + g \
             FROM generate_series(1, 2000) g;",
        )
        .await
        .expect("fill");
    let writer = CopyWriter::connect(&db.url).await.expect("import connection");
    let keys: Vec<String> = (2001..=4000).map(|i| format!("BENCH{i:09}")).collect();
    let plan = writer
        .explain_lookup("org-b", "MX", &keys)
        .await
        .expect("explain");
    assert_probes_each_key(&plan);
}

/// Scans of `table` and of each of its indexes, from PostgreSQL's statistics.
async fn scans(
    client: &tokio_postgres::Client,
    table: &str,
) -> (i64, std::collections::HashMap<String, i64>) {
    client
        .batch_execute("SELECT pg_stat_clear_snapshot()")
        .await
        .expect("snapshot");
    let seq: i64 = client
        .query_one(
            "SELECT seq_scan FROM pg_stat_user_tables WHERE schemaname = current_schema() AND relname = $1",
            &[&table],
        )
        .await
        .expect("table statistics")
        .get(0);
    let indexes = client
        .query(
            "SELECT indexrelname::text, idx_scan FROM pg_stat_user_indexes \
             WHERE schemaname = current_schema() AND relname = $1",
            &[&table],
        )
        .await
        .expect("index statistics")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    (seq, indexes)
}

type Query = Box<dyn for<'c> FnOnce(&'c mut ferry::db::Conn) -> futures::future::BoxFuture<'c, ()>>;

/// Reports the connection's pending statistics now: a backend reports them when it
/// goes idle, but at most once a second (else ten seconds later), unless told to.
async fn report_statistics(conn: &mut ferry::db::Conn) {
    let ferry::db::Conn::Pg(c) = conn else {
        panic!("a PostgreSQL connection");
    };
    diesel_async::SimpleAsyncConnection::batch_execute(&mut **c, "SELECT pg_stat_force_next_flush()")
        .await
        .expect("flush");
}

/// Runs `query` (ferry's own query function, on a pooled connection) and returns
/// the indexes of `table` it scanned and whether it read the table sequentially.
async fn scanned_by(
    db: &ferry::db::Db,
    reader: &tokio_postgres::Client,
    table: &str,
    query: Query,
) -> (bool, Vec<String>) {
    let mut conn = db.conn().await.expect("a connection");
    report_statistics(&mut conn).await;
    let (seq_before, before) = scans(reader, table).await;
    query(&mut conn).await;
    report_statistics(&mut conn).await;
    for _ in 0..60 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let (seq, after) = scans(reader, table).await;
        let mut used: Vec<String> = after
            .iter()
            .filter(|(name, n)| before.get(*name).copied().unwrap_or(0) < **n)
            .map(|(name, _)| name.clone())
            .collect();
        if seq > seq_before || !used.is_empty() {
            used.sort();
            return (seq > seq_before, used);
        }
    }
    let (seq, after) = scans(reader, table).await;
    panic!("no scan of {table} was reported: {seq_before} {before:?} -> {seq} {after:?}");
}

const COMMON_TERM: &str = "a search every row matches";

/// The queue's, the janitor's and the purges' queries beside 20,000 ended jobs of
/// another organization (and as many audit events), analyzed: each probes its
/// partial index and none reads the table through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_and_the_janitor_probe_their_indexes_beside_many_ended_jobs() {
    use futures::FutureExt;
    if postgres_url().is_none() {
        return;
    }
    let (db, client) = shared_database().await;
    client
        .batch_execute(
            "INSERT INTO jobs (id, organization_id, kind, state, payload, search_text, attempts, max_attempts, \
             run_after, created_at, started_at, finished_at, updated_at, expires_at) \
             SELECT 'j' || g, 'org-a', CASE WHEN g % 2 = 0 THEN 'export' ELSE 'import' END, \
             CASE WHEN g % 10 = 0 THEN 'failed' ELSE 'completed' END, '{}', '', 1, 3, g, g, g, \
             1700000000000 + g, g, CASE WHEN g % 2 = 0 THEN 4000000000000 END \
             FROM generate_series(1, 20000) g; \
             INSERT INTO audit_events (id, at, organization_id, principal, door, method, target_id, request_id, outcome) \
             SELECT 'a' || g, 1700000000000 + g, 'org-a', 'key:x', 'grpc', 'M', 'j' || g, 'r' || g, 'OK' \
             FROM generate_series(1, 20000) g; \
             ANALYZE jobs, audit_events",
        )
        .await
        .expect("fill");
    let pool = ferry::db::Db::connect(&db.url, 2).await.expect("connect");
    let now = ferry::db::now_ms();
    use ferry::db::jobs;
    // (what, table, the indexes that may serve it, ferry's query)
    let cases: Vec<(&str, &str, &[&str], Query)> = vec![
        (
            "active jobs of an organization",
            "jobs",
            &["jobs_active"],
            Box::new(|c| {
                async move {
                    jobs::count_active(c, "org-b", "export").await.unwrap();
                }
                .boxed()
            }),
        ),
        (
            "an active duplicate",
            "jobs",
            &["jobs_active"],
            Box::new(|c| {
                async move {
                    jobs::find_active_duplicate(c, "org-b", "export", "same")
                        .await
                        .unwrap();
                }
                .boxed()
            }),
        ),
        (
            "exports due for expiry",
            "jobs",
            &["jobs_expiring"],
            Box::new(move |c| {
                async move {
                    jobs::due_for_expiry(c, "export", now, 100).await.unwrap();
                }
                .boxed()
            }),
        ),
        (
            "idempotency keys to release",
            "jobs",
            &["jobs_request_ids_held"],
            Box::new(move |c| {
                async move {
                    jobs::release_request_ids(c, now - 86_400_000).await.unwrap();
                }
                .boxed()
            }),
        ),
        (
            "ended jobs past their retention",
            "jobs",
            &["jobs_ended"],
            Box::new(|c| {
                async move {
                    jobs::ended_before(c, 1_000_000_000_000, None, 500).await.unwrap();
                }
                .boxed()
            }),
        ),
        (
            "expired leases",
            "jobs",
            &["jobs_leased", "jobs_active"],
            Box::new(move |c| {
                async move {
                    jobs::reap_expired_leases(c, now, "lost").await.unwrap();
                }
                .boxed()
            }),
        ),
        (
            "audit events past their retention",
            "audit_events",
            &["audit_events_by_time"],
            Box::new(|c| {
                async move {
                    ferry::db::audit::delete_before(c, 1_000_000_000_000, 5000)
                        .await
                        .unwrap();
                }
                .boxed()
            }),
        ),
    ];
    let listing = |filter: ferry::db::entities::EntityFilter| -> Query {
        Box::new(move |c| {
            async move {
                let order = ferry::db::entities::EntityOrder {
                    key: ferry::db::entities::SortKey::CreatedAt,
                    descending: true,
                };
                ferry::db::entities::list(c, "org-a", &filter, order, None, 101)
                    .await
                    .unwrap();
                ferry::db::entities::count_for_listing(c, "org-a", &filter)
                    .await
                    .unwrap();
            }
            .boxed()
        })
    };
    let mut cases = cases;
    cases.push((
        "a search in the big organization",
        "entities",
        &["entities_search"],
        listing(ferry::db::entities::EntityFilter {
            search: Some("entity 4242".into()),
            ..Default::default()
        }),
    ));
    // A term every row holds: walking the organization's creation order finds a
    // page at once, where the trigram bitmap would have to be read whole.
    cases.push((
        COMMON_TERM,
        "entities",
        &["entities_org_created"],
        listing(ferry::db::entities::EntityFilter {
            search: Some("entity".into()),
            ..Default::default()
        }),
    ));
    cases.push((
        "an attribute in the big organization",
        "entities",
        &["entities_attributes"],
        listing(ferry::db::entities::EntityFilter {
            attributes: vec![(vec!["tier".into()], "gold".into())],
            ..Default::default()
        }),
    ));
    for (what, table, indexes, query) in cases {
        let (sequential, used) = scanned_by(&pool, &client, table, query).await;
        if what == COMMON_TERM {
            // Whichever way the planner walks the organization (its creation
            // order, or the table up to the count's limit), never the bitmap.
            assert!(!used.iter().any(|u| u == "entities_search"), "{what}: {used:?}");
            continue;
        }
        assert!(!sequential, "{what}: read {table} sequentially");
        assert!(
            !used.is_empty() && used.iter().all(|u| indexes.contains(&u.as_str())),
            "{what}: scanned {used:?}, not {indexes:?}"
        );
    }
}
