//! EntityService: filters, paging and ordering, and organization isolation.

use ferry::db::entities::{self, EntityRow};
use ferry::proto::{
    AttributeEquals, EntityFilter, EntityStatus, EntityType, GetEntityRequest, ListEntitiesRequest,
    TimeRange, entity_service_client::EntityServiceClient,
};
use tonic::Code;

use crate::on_both_backends;
use crate::support::{Backend, TestApp, reason, violated_fields};

on_both_backends!(
    entities_are_filtered_by_every_filter_field,
    paging_walks_every_entity_once_in_order,
    entity_of_another_organization_is_not_found,
    bad_filters_and_tokens_are_invalid_arguments,
    a_filter_over_the_value_limit_is_refused_at_the_call_on_both_backends,
    a_total_is_exact_up_to_a_thousand_and_estimated_above,
);

/// 10,050 entities of the organization: every 7th with `{"score": 42}` (a JSON
/// number), every 11th with `{"score": "42"}` (text), the rest `{}`.
async fn seed_many(app: &TestApp) {
    crate::support::execute(
        app.db(),
        &format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10050) \
             INSERT INTO entities (id, organization_id, entity_type, tax_id, country, name, external_id, status, \
             is_client, attributes, entity_data, skip_rules_execution, created_at, updated_at) \
             SELECT 'many-' || i, '{org}', 'person', 'T' || i, CASE WHEN i <= 50 THEN 'UY' ELSE 'AR' END, \
             'Person ' || i, 'x-' || i, 'active', false, \
             CASE WHEN i % 7 = 0 THEN '{{\"score\":42}}' WHEN i % 11 = 0 THEN '{{\"score\":\"42\"}}' ELSE '{{}}' END, \
             '{{}}', false, 1700000000000 + i, 1700000000000 + i FROM n",
            org = app.org_id
        ),
    )
    .await;
    if app.db().backend() == ferry::db::Backend::Postgres {
        crate::support::execute(app.db(), "ANALYZE entities").await;
    }
}

async fn a_total_is_exact_up_to_a_thousand_and_estimated_above(backend: Backend) {
    let app = TestApp::start(backend).await;
    seed_many(&app).await;
    let total = |filter: EntityFilter| {
        let mut client = EntityServiceClient::new(app.channel.clone());
        let request = app.request(ListEntitiesRequest {
            filter: Some(filter),
            page_size: 100,
            ..Default::default()
        });
        async move { client.list_entities(request).await.unwrap().into_inner() }
    };
    let all = total(EntityFilter::default()).await;
    assert_eq!(all.entities.len(), 100);
    match backend {
        // The planner's estimate, from the statistics ANALYZE just took.
        Backend::Postgres => assert!((10_001..=11_000).contains(&all.total_size), "{}", all.total_size),
        Backend::Sqlite => assert_eq!(all.total_size, 10_050),
    }
    let few = total(EntityFilter {
        countries: vec!["UY".into()],
        ..Default::default()
    })
    .await;
    assert_eq!(few.total_size, 50);
    // A number and a text that read "42" both match; on PostgreSQL through the
    // attributes index, with the same answer.
    let score = total(EntityFilter {
        attributes: vec![AttributeEquals {
            path: "score".into(),
            value: "42".into(),
        }],
        ..Default::default()
    })
    .await;
    let expected = (1..=10_050).filter(|i| i % 7 == 0 || i % 11 == 0).count() as i32;
    match backend {
        Backend::Postgres => assert!(score.total_size > 1_000, "{}", score.total_size),
        Backend::Sqlite => assert_eq!(score.total_size, expected),
    }
    let uy_score = total(EntityFilter {
        countries: vec!["UY".into()],
        attributes: vec![AttributeEquals {
            path: "score".into(),
            value: "42".into(),
        }],
        ..Default::default()
    })
    .await;
    let expected = (1..=50).filter(|i| i % 7 == 0 || i % 11 == 0).count() as i32;
    assert_eq!(uy_score.total_size, expected);
    let search = total(EntityFilter {
        search: "person 1004".into(),
        ..Default::default()
    })
    .await;
    let names: Vec<&str> = search.entities.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(search.total_size, 11, "{names:?}");
    app.stop().await;
}

async fn a_filter_over_the_value_limit_is_refused_at_the_call_on_both_backends(backend: Backend) {
    let app = TestApp::start(backend).await;
    let ids = |n: usize| (0..n).map(|i| format!("TAX{i:06}")).collect::<Vec<_>>();
    let list = |tax_ids: Vec<String>| {
        let mut client = EntityServiceClient::new(app.channel.clone());
        let request = app.request(ListEntitiesRequest {
            filter: Some(EntityFilter {
                tax_ids,
                ..Default::default()
            }),
            ..Default::default()
        });
        async move { client.list_entities(request).await }
    };
    // The documented limit itself works on both backends (SQLite binds at most
    // 32,766 values per statement).
    let at_limit = list(ids(entities::MAX_FILTER_VALUES)).await.unwrap().into_inner();
    assert_eq!(at_limit.total_size, 0);
    let status = list(ids(40_000)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["filter.tax_ids"]);
    // An export with it is refused at the call, never queued to fail later.
    let status = ferry::proto::export_service_client::ExportServiceClient::new(app.channel.clone())
        .create_export(app.request(ferry::proto::CreateExportRequest {
            filter: Some(EntityFilter {
                tax_ids: ids(40_000),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["filter.tax_ids"]);
    app.stop().await;
}

fn entity(org: &str, n: i64, name: &str, kind: &str, country: &str) -> EntityRow {
    EntityRow {
        id: format!("00000000-0000-7000-8000-{n:012}"),
        organization_id: org.to_string(),
        entity_type: kind.to_string(),
        tax_id: format!("TAX{n:04}"),
        country: country.to_string(),
        name: name.to_string(),
        gender: None,
        external_id: Some(format!("ext-{n}")),
        email: None,
        phone: None,
        registration_date: None,
        status: if n % 3 == 0 {
            "blocked".into()
        } else {
            "active".into()
        },
        is_client: n % 2 == 0,
        nationality: None,
        risk_matrix_id: (n == 4).then(|| "rm-1".to_string()),
        attributes: if n % 2 == 0 {
            r#"{"segment_tag":"retail","tags":{"tier":"gold"}}"#.into()
        } else {
            r#"{"segment_tag":"corporate"}"#.into()
        },
        entity_data: "{}".into(),
        enrichment_plan: None,
        skip_rules_execution: false,
        created_at: 1_000 * n,
        updated_at: 1_000 * n + 500,
    }
}

/// Ten entities: 1..=10, persons when odd, AR for 1-5 and BR for 6-10.
async fn seed(app: &TestApp) -> Vec<EntityRow> {
    let names = [
        "Ana", "Bruno", "Carla", "Diego", "Elena", "Fabio", "Gabi", "Hugo", "Ines", "Juan",
    ];
    let rows: Vec<EntityRow> = (1..=10)
        .map(|n| {
            let kind = if n % 2 == 1 { "person" } else { "company" };
            let country = if n <= 5 { "AR" } else { "BR" };
            entity(&app.org_id, n, names[n as usize - 1], kind, country)
        })
        .collect();
    entities::insert(&mut app.db().conn().await.unwrap(), &rows)
        .await
        .unwrap();
    rows
}

async fn names(app: &TestApp, filter: EntityFilter) -> Vec<String> {
    let mut client = EntityServiceClient::new(app.channel.clone());
    let request = ListEntitiesRequest {
        filter: Some(filter),
        page_size: 100,
        order_by: "create_time asc".into(),
        ..Default::default()
    };
    let response = client
        .list_entities(app.request(request))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.total_size as usize, response.entities.len());
    response.entities.into_iter().map(|e| e.name).collect()
}

fn ts(ms: i64) -> prost_types::Timestamp {
    ferry::api::convert::timestamp(ms)
}

async fn entities_are_filtered_by_every_filter_field(backend: Backend) {
    let app = TestApp::start(backend).await;
    seed(&app).await;
    let f = EntityFilter::default;
    assert_eq!(names(&app, f()).await.len(), 10);
    assert_eq!(
        names(
            &app,
            EntityFilter {
                types: vec![EntityType::Company as i32],
                ..f()
            }
        )
        .await,
        ["Bruno", "Diego", "Fabio", "Hugo", "Juan"]
    );
    assert_eq!(
        names(
            &app,
            EntityFilter {
                countries: vec!["br".into()],
                ..f()
            }
        )
        .await
        .len(),
        5
    );
    assert_eq!(
        names(
            &app,
            EntityFilter {
                statuses: vec![EntityStatus::Blocked as i32],
                ..f()
            }
        )
        .await,
        ["Carla", "Fabio", "Ines"]
    );
    // Ranges are inclusive at both ends.
    let created = TimeRange {
        start: Some(ts(2_000)),
        end: Some(ts(4_000)),
    };
    assert_eq!(
        names(
            &app,
            EntityFilter {
                created: Some(created),
                ..f()
            }
        )
        .await,
        ["Bruno", "Carla", "Diego"]
    );
    let updated = TimeRange {
        start: Some(ts(9_500)),
        end: None,
    };
    assert_eq!(
        names(
            &app,
            EntityFilter {
                updated: Some(updated),
                ..f()
            }
        )
        .await,
        ["Ines", "Juan"]
    );
    assert_eq!(
        names(
            &app,
            EntityFilter {
                tax_ids: vec!["TAX0007".into()],
                ..f()
            }
        )
        .await,
        ["Gabi"]
    );
    assert_eq!(
        names(
            &app,
            EntityFilter {
                external_ids: vec!["ext-1".into(), "ext-2".into()],
                ..f()
            }
        )
        .await,
        ["Ana", "Bruno"]
    );
    assert_eq!(
        names(
            &app,
            EntityFilter {
                is_client: Some(false),
                ..f()
            }
        )
        .await,
        ["Ana", "Carla", "Elena", "Gabi", "Ines"]
    );
    let retail = AttributeEquals {
        path: "attributes.segment_tag".into(),
        value: "retail".into(),
    };
    assert_eq!(
        names(
            &app,
            EntityFilter {
                attributes: vec![retail],
                ..f()
            }
        )
        .await
        .len(),
        5
    );
    let gold = AttributeEquals {
        path: "tags.tier".into(),
        value: "gold".into(),
    };
    let ar = vec!["AR".into()];
    assert_eq!(
        names(
            &app,
            EntityFilter {
                attributes: vec![gold],
                countries: ar,
                ..f()
            }
        )
        .await,
        ["Bruno", "Diego"]
    );
    assert_eq!(
        names(
            &app,
            EntityFilter {
                risk_matrix_id: "rm-1".into(),
                ..f()
            }
        )
        .await,
        ["Diego"]
    );
    // Search: case-insensitive substring of name, tax ID or external ID.
    assert_eq!(
        names(
            &app,
            EntityFilter {
                search: "ELEN".into(),
                ..f()
            }
        )
        .await,
        ["Elena"]
    );
    assert_eq!(
        names(
            &app,
            EntityFilter {
                search: "tax0010".into(),
                ..f()
            }
        )
        .await,
        ["Juan"]
    );
    assert_eq!(
        names(
            &app,
            EntityFilter {
                search: "ext-3".into(),
                ..f()
            }
        )
        .await,
        ["Carla"]
    );
    // LIKE wildcards in the search are literal.
    assert!(
        names(
            &app,
            EntityFilter {
                search: "%".into(),
                ..f()
            }
        )
        .await
        .is_empty()
    );
    app.stop().await;
}

async fn paging_walks_every_entity_once_in_order(backend: Backend) {
    let app = TestApp::start(backend).await;
    seed(&app).await;
    let mut client = EntityServiceClient::new(app.channel.clone());
    for (order_by, expected_first) in [
        ("", "Juan"),
        ("name asc", "Ana"),
        ("name desc", "Juan"),
        ("update_time asc", "Ana"),
    ] {
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let request = ListEntitiesRequest {
                page_size: 3,
                page_token: token.clone(),
                order_by: order_by.into(),
                ..Default::default()
            };
            let page = client
                .list_entities(app.request(request))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(page.total_size, 10);
            assert!(page.entities.len() <= 3);
            seen.extend(page.entities.into_iter().map(|e| e.name));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(seen.len(), 10, "order `{order_by}`: {seen:?}");
        assert_eq!(seen[0], expected_first, "order `{order_by}`");
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 10, "no entity twice");
    }
    app.stop().await;
}

async fn entity_of_another_organization_is_not_found(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (other_org, other_key) = app.other_org().await;
    let theirs = entity(&other_org, 99, "Secret", "person", "CL");
    entities::insert(&mut app.db().conn().await.unwrap(), std::slice::from_ref(&theirs))
        .await
        .unwrap();
    let mut client = EntityServiceClient::new(app.channel.clone());
    let status = client
        .get_entity(app.request(GetEntityRequest {
            id: theirs.id.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(reason(&status), "NOT_FOUND");
    let listed = client
        .list_entities(app.request(ListEntitiesRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.total_size, 0);
    // Its owner sees it, with every field.
    let request = crate::support::with_auth(
        GetEntityRequest {
            id: theirs.id.clone(),
        },
        &other_key,
        &other_org,
    );
    let found = client.get_entity(request).await.unwrap().into_inner();
    assert_eq!(
        (found.name.as_str(), found.country.as_str(), found.r#type),
        ("Secret", "CL", EntityType::Person as i32)
    );
    assert_eq!(
        found.attributes.unwrap().fields["segment_tag"].kind,
        Some(prost_types::value::Kind::StringValue("corporate".into()))
    );
    app.stop().await;
}

async fn bad_filters_and_tokens_are_invalid_arguments(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut client = EntityServiceClient::new(app.channel.clone());
    let request = ListEntitiesRequest {
        filter: Some(EntityFilter {
            countries: vec!["Argentina".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    let status = client.list_entities(app.request(request)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["filter.countries[0]"]);

    let request = ListEntitiesRequest {
        page_token: "forged".into(),
        ..Default::default()
    };
    let status = client.list_entities(app.request(request)).await.unwrap_err();
    assert_eq!(violated_fields(&status), ["page_token"]);

    // A token is bound to the filter it was issued for.
    seed(&app).await;
    let first = client
        .list_entities(app.request(ListEntitiesRequest {
            page_size: 2,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let request = ListEntitiesRequest {
        page_size: 2,
        page_token: first.next_page_token,
        filter: Some(EntityFilter {
            countries: vec!["AR".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    let status = client.list_entities(app.request(request)).await.unwrap_err();
    assert_eq!(violated_fields(&status), ["page_token"]);

    let request = ListEntitiesRequest {
        order_by: "secret_column".into(),
        ..Default::default()
    };
    let status = client.list_entities(app.request(request)).await.unwrap_err();
    assert_eq!(violated_fields(&status), ["order_by"]);
    app.stop().await;
}
