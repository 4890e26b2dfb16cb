//! The auth matrix, generated from the compiled contract: every method against every
//! way a caller can be refused.

use ferry::auth::permissions::Access;
use ferry::auth::{Permission, keys};
use ferry::db::{api_keys, now_ms};
use ferry::proto::{ListEntitiesRequest, entity_service_client::EntityServiceClient};
use prost::Message;
use tonic::Code;

use crate::on_both_backends;
use crate::support::{Backend, TestApp, reason, with_auth};

on_both_backends!(
    every_method_refuses_callers_without_valid_credentials_or_permission,
    a_method_without_a_permission_entry_is_denied,
    a_valid_key_reaches_the_service,
    a_service_key_may_act_for_the_organizations_it_names,
    a_key_expires_on_time_even_while_the_cache_holds_it,
);

/// The `cause` of an authentication refusal (ErrorInfo metadata).
fn cause(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_details_error_info()
        .and_then(|i| i.metadata.get("cause").cloned())
        .unwrap_or_default()
}

/// Every rpc path of the ferry services, read from the descriptor set.
fn contract_methods() -> Vec<String> {
    let set = prost_types::FileDescriptorSet::decode(ferry::proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut methods = Vec::new();
    for file in set.file.iter().filter(|f| f.package() == "ferry.v1") {
        for service in &file.service {
            for method in &service.method {
                methods.push(format!("/ferry.v1.{}/{}", service.name(), method.name()));
            }
        }
    }
    assert_eq!(methods.len(), 23, "the contract changed: {methods:?}");
    methods
}

/// Calls `path` with an empty message and the given metadata; returns the status.
async fn call_raw(app: &TestApp, path: &str, key: Option<&str>, org: &str) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(app.channel.clone());
    grpc.ready().await.unwrap();
    let request = match key {
        Some(key) => with_auth((), key, org),
        None => tonic::Request::new(()),
    };
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let path: http::uri::PathAndQuery = path.parse().unwrap();
    match grpc.unary(request, path, codec).await {
        Ok(_) => tonic::Status::ok(""),
        Err(status) => status,
    }
}

async fn every_method_refuses_callers_without_valid_credentials_or_permission(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (other_org, _) = app.other_org().await;
    let (revoked_row, revoked) = keys::create(app.db(), &app.org_id, "old", &Permission::ALL, &[])
        .await
        .unwrap();
    api_keys::revoke(&mut app.db().conn().await.unwrap(), &revoked_row.id, now_ms())
        .await
        .unwrap();
    let (_, expired) = keys::create_expiring(
        app.db(),
        &app.org_id,
        "expired",
        &Permission::ALL,
        &[],
        Some(now_ms() - 1),
        None,
    )
    .await
    .unwrap();
    let unknown = keys::NewKey::generate().token();
    // One key per permission, holding every permission but that one.
    let mut lacking = Vec::new();
    for missing in Permission::ALL {
        let others: Vec<Permission> = Permission::ALL.into_iter().filter(|p| *p != missing).collect();
        let (_, key) = keys::create(app.db(), &app.org_id, "partial", &others, &[])
            .await
            .unwrap();
        lacking.push((missing, key));
    }

    let (_, powerless) = keys::create(app.db(), &app.org_id, "none", &[], &[])
        .await
        .unwrap();

    for method in contract_methods() {
        let access = ferry::auth::permissions::required_access(&method).unwrap();
        let cases: Vec<(&str, Option<&str>, &str, Code, &str)> = vec![
            ("no key", None, &app.org_id, Code::Unauthenticated, "UNAUTHORIZED"),
            (
                "unknown key",
                Some(&unknown),
                &app.org_id,
                Code::Unauthenticated,
                "UNAUTHORIZED",
            ),
            (
                "revoked key",
                Some(&revoked),
                &app.org_id,
                Code::Unauthenticated,
                "UNAUTHORIZED",
            ),
            (
                "expired key",
                Some(&expired),
                &app.org_id,
                Code::Unauthenticated,
                "UNAUTHORIZED",
            ),
            (
                "another organization",
                Some(&app.key),
                &other_org,
                Code::PermissionDenied,
                "ORGANIZATION_NOT_ALLOWED",
            ),
        ];
        for (case, key, org, code, expected_reason) in cases {
            let status = call_raw(&app, &method, key, org).await;
            assert_eq!(status.code(), code, "{method} with {case}: {status:?}");
            assert_eq!(reason(&status), expected_reason, "{method} with {case}");
        }
        let status = call_raw(&app, &method, Some(&powerless), &app.org_id).await;
        match access {
            Access::Needs(needed) => {
                assert_eq!(
                    status.code(),
                    Code::PermissionDenied,
                    "{method} with no permission"
                );
                let key = &lacking.iter().find(|(p, _)| *p == needed).unwrap().1;
                let status = call_raw(&app, &method, Some(key), &app.org_id).await;
                assert_eq!(status.code(), Code::PermissionDenied, "{method} without {needed}");
                assert_eq!(reason(&status), "MISSING_PERMISSION", "{method} without {needed}");
            }
            // Described as such in the table: a key holding no permission passes.
            Access::AnyCredential => assert_eq!(status.code(), Code::Ok, "{method}: {status:?}"),
        }
    }
    app.stop().await;
}

async fn a_method_without_a_permission_entry_is_denied(backend: Backend) {
    let app = TestApp::start(backend).await;
    let status = call_raw(
        &app,
        "/ferry.v1.ExportService/PurgeEverything",
        Some(&app.key),
        &app.org_id,
    )
    .await;
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(reason(&status), "METHOD_NOT_ALLOWED");
    app.stop().await;
}

async fn a_valid_key_reaches_the_service(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut client = EntityServiceClient::new(app.channel.clone());
    let response = client
        .list_entities(app.request(ListEntitiesRequest::default()))
        .await
        .unwrap();
    assert_eq!(response.into_inner().total_size, 0);
    // Without x-organization-id the key's own organization applies.
    let mut request = tonic::Request::new(ListEntitiesRequest::default());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {}", app.key).parse().unwrap());
    client.list_entities(request).await.unwrap();
    // A header that is not an organization id is a bad request, not a guess.
    let status = client
        .list_entities(with_auth(ListEntitiesRequest::default(), &app.key, "not-a-uuid"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    app.stop().await;
}

async fn a_service_key_may_act_for_the_organizations_it_names(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (other_org, _) = app.other_org().await;
    let (_, service_key) = keys::create(
        app.db(),
        &app.org_id,
        "svc",
        &Permission::ALL,
        std::slice::from_ref(&other_org),
    )
    .await
    .unwrap();
    let mut client = EntityServiceClient::new(app.channel.clone());
    client
        .list_entities(with_auth(
            ListEntitiesRequest::default(),
            &service_key,
            &other_org,
        ))
        .await
        .unwrap();
    let (third_org, _) = app.other_org().await;
    let status = client
        .list_entities(with_auth(
            ListEntitiesRequest::default(),
            &service_key,
            &third_org,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    app.stop().await;
}

async fn a_key_expires_on_time_even_while_the_cache_holds_it(backend: Backend) {
    let app = TestApp::start(backend).await;
    let lifetime = 1_500;
    let (_, key) = keys::create_expiring(
        app.db(),
        &app.org_id,
        "short-lived",
        &Permission::ALL,
        &[],
        Some(now_ms() + lifetime),
        None,
    )
    .await
    .unwrap();
    let mut client = EntityServiceClient::new(app.channel.clone());
    // Used (and so cached) while valid…
    client
        .list_entities(with_auth(ListEntitiesRequest::default(), &key, &app.org_id))
        .await
        .unwrap();
    // …and refused once its time is up, well inside the cache's lifetime.
    tokio::time::sleep(std::time::Duration::from_millis(lifetime as u64 + 100)).await;
    let status = client
        .list_entities(with_auth(ListEntitiesRequest::default(), &key, &app.org_id))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(reason(&status), "UNAUTHORIZED");
    assert_eq!(cause(&status), "expired_key");
    assert!(status.message().contains("expired"), "{}", status.message());
    app.stop().await;
}
