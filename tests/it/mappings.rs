//! MappingService: saved header mappings, per organization.

use ferry::proto::{
    CreateMappingRequest, DeleteMappingRequest, GetMappingRequest, ListMappingsRequest, MappingKind,
    UpdateMappingRequest, mapping_service_client::MappingServiceClient,
};
use tonic::Code;

use crate::on_both_backends;
use crate::support::{Backend, TestApp, curl, violated_fields, with_auth};

on_both_backends!(
    mappings_are_created_listed_read_and_deleted_per_organization,
    a_mapping_is_renamed_and_remapped_over_rest_and_grpc_as_one_object,
    a_mapping_being_edited_is_previewed_as_the_import_would_apply_it,
);

async fn mappings_are_created_listed_read_and_deleted_per_organization(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut client = MappingServiceClient::new(app.channel.clone());
    let request = |name: &str, columns: &[(&str, &str)]| CreateMappingRequest {
        name: name.into(),
        kind: MappingKind::EntityMixed as i32,
        columns: columns
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
    };
    let first = client
        .create_mapping(app.request(request(
            "bank",
            &[("Documento", "taxId"), ("País de origen", "country")],
        )))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.columns["documento"], "taxid");
    assert_eq!(first.columns["país_de_origen"], "country");
    let second = client
        .create_mapping(app.request(request("crm", &[("CUIT", "tax_id")])))
        .await
        .unwrap()
        .into_inner();

    let got = client
        .get_mapping(app.request(GetMappingRequest { id: first.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, first);
    let page = client
        .list_mappings(app.request(ListMappingsRequest {
            page_size: 1,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (page.total_size, page.mappings[0].id.clone()),
        (2, second.id.clone())
    );
    let rest = client
        .list_mappings(app.request(ListMappingsRequest {
            page_size: 1,
            page_token: page.next_page_token,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.mappings[0].id, first.id);
    assert!(rest.next_page_token.is_empty());

    // Bad input names the field; removed columns name their replacements.
    let status = client
        .create_mapping(app.request(request("x", &[("Checks", "checks")])))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["columns[Checks]"]);
    let mut no_kind = request("x", &[("a", "tax_id")]);
    no_kind.kind = 0;
    assert_eq!(
        violated_fields(&client.create_mapping(app.request(no_kind)).await.unwrap_err()),
        ["kind"]
    );

    // Another organization sees nothing.
    let (other, key) = app.other_org().await;
    let status = client
        .get_mapping(with_auth(
            GetMappingRequest { id: first.id.clone() },
            &key,
            &other,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = client
        .delete_mapping(with_auth(
            DeleteMappingRequest { id: first.id.clone() },
            &key,
            &other,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    client
        .delete_mapping(app.request(DeleteMappingRequest { id: first.id.clone() }))
        .await
        .unwrap();
    let status = client
        .get_mapping(app.request(GetMappingRequest { id: first.id }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    app.stop().await;
}

/// The REST routes and MappingService serve one object: made over REST, renamed
/// over gRPC, re-mapped over REST, each change checked whole and audited, another
/// organization's id not found, a deleted one gone from both doors.
async fn a_mapping_is_renamed_and_remapped_over_rest_and_grpc_as_one_object(backend: Backend) {
    let app = TestApp::start(backend).await;
    let url = format!("http://{}/batch-import/mappings", app.http_addr());
    let auth = format!("authorization: Bearer {}", app.key);
    let json = "content-type: application/json";
    let created = curl(&[
        "-H",
        &auth,
        "-H",
        json,
        "--data",
        r#"{"name":"Bank","kind":"entity_person","columns":{"Documento":"taxId"}}"#,
        &url,
    ])
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let created = created.json();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["columns"]["documento"], "taxid");
    assert_eq!(created["kind"], "entity_person");

    let mut client = MappingServiceClient::new(app.channel.clone());
    let renamed = client
        .update_mapping(app.request(UpdateMappingRequest {
            id: id.clone(),
            name: "Bank AR".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renamed.name, "Bank AR");
    assert_eq!(renamed.kind, MappingKind::EntityPerson as i32, "the kind is kept");
    assert_eq!(renamed.columns["documento"], "taxid", "the columns are kept");

    let item = format!("{url}/{id}");
    let patched = curl(&[
        "-X",
        "PATCH",
        "-H",
        &auth,
        "-H",
        json,
        "--data",
        r#"{"kind":"MAPPING_KIND_ENTITY_MIXED","columns":{"CUIT":"tax_id","Pais":"country"}}"#,
        &item,
    ])
    .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    let got = client
        .get_mapping(app.request(GetMappingRequest { id: id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.name, "Bank AR");
    assert_eq!(got.kind, MappingKind::EntityMixed as i32);
    assert_eq!(
        got.columns.len(),
        2,
        "the map is replaced whole: {:?}",
        got.columns
    );
    assert_eq!(got.columns["cuit"], "tax_id");

    // A change that would break the mapping is refused whole, naming the field.
    let bad = curl(&[
        "-X",
        "PATCH",
        "-H",
        &auth,
        "-H",
        json,
        "--data",
        r#"{"name":"","columns":{"Checks":"checks"}}"#,
        &item,
    ])
    .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    let fields: Vec<String> = bad.json()["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(fields, ["name", "columns[Checks]"]);
    let kind = curl(&[
        "-X",
        "PATCH",
        "-H",
        &auth,
        "-H",
        json,
        "--data",
        r#"{"kind":"robots"}"#,
        &item,
    ])
    .await;
    assert_eq!(kind.status, 400, "{}", kind.body);
    assert_eq!(kind.json()["error"]["details"][0]["field"], "kind");
    let status = client
        .update_mapping(app.request(UpdateMappingRequest {
            id: id.clone(),
            columns: [("A".to_string(), "checks".to_string())].into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["columns[A]"]);
    let unchanged = client
        .get_mapping(app.request(GetMappingRequest { id: id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unchanged, got);

    // Another organization's key finds nothing to change.
    let (other, key) = app.other_org().await;
    let status = client
        .update_mapping(with_auth(
            UpdateMappingRequest {
                id: id.clone(),
                name: "mine".into(),
                ..Default::default()
            },
            &key,
            &other,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    let listed = curl(&["-H", &auth, &url]).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.json()["meta"]["total"], 1);
    assert_eq!(listed.json()["data"][0]["name"], "Bank AR");

    let deleted = curl(&["-X", "DELETE", "-H", &auth, &item]).await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    assert_eq!(curl(&["-H", &auth, &item]).await.status, 404);
    let status = client
        .get_mapping(app.request(GetMappingRequest { id: id.clone() }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    // Every change is in the audit trail, through the door that made it.
    let events = ferry::audit::list(app.db(), &app.org_id, 0, 1000).await.unwrap();
    let seen: Vec<(&str, &str, &str)> = events
        .iter()
        .filter(|e| e.target_id == id)
        .map(|e| (e.method.as_str(), e.door.as_str(), e.outcome.as_str()))
        .collect();
    for expected in [
        ("POST /batch-import/mappings", "rest", "OK"),
        ("/ferry.v1.MappingService/UpdateMapping", "grpc", "OK"),
        ("PATCH /batch-import/mappings/{mappingId}", "rest", "OK"),
        ("PATCH /batch-import/mappings/{mappingId}", "rest", "HTTP 400"),
        (
            "/ferry.v1.MappingService/UpdateMapping",
            "grpc",
            "INVALID_ARGUMENT",
        ),
        ("DELETE /batch-import/mappings/{mappingId}", "rest", "OK"),
    ] {
        assert!(seen.contains(&expected), "{expected:?} not in {seen:?}");
    }
    app.stop().await;
}

/// The hub's editor previews a mapping before it is saved: the draft map goes
/// through the same check and the same placement as a saved one.
async fn a_mapping_being_edited_is_previewed_as_the_import_would_apply_it(backend: Backend) {
    let app = TestApp::start(backend).await;
    let url = format!("http://{}/batch-import/import/entities/preview", app.http_addr());
    let auth = format!("authorization: Bearer {}", app.key);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ventas.csv");
    std::fs::write(&file, "Documento,Pais,Segmento\nA1,AR,retail\n").unwrap();
    let form = format!("file=@{}", file.display());
    let draft = r#"columns={"Documento":"tax_id","Pais":"country"}"#;
    let answer = curl(&["-H", &auth, "-F", &form, "-F", draft, &url]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let preview = answer.json();
    let columns = preview["columns"].as_array().unwrap();
    let seen: Vec<(&str, &str, &str)> = columns
        .iter()
        .map(|c| {
            (
                c["key"].as_str().unwrap(),
                c["goesTo"].as_str().unwrap(),
                c["how"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("documento", "tax_id", "mapping"),
            ("pais", "country_code", "mapping"),
            ("segmento", "attributes.segmento", "attribute"),
        ]
    );
    let wrong = curl(&[
        "-H",
        &auth,
        "-F",
        &form,
        "-F",
        r#"columns={"Segmento":"checks"}"#,
        &url,
    ])
    .await;
    assert_eq!(wrong.status, 400, "{}", wrong.body);
    assert_eq!(wrong.json()["error"]["details"][0]["field"], "columns[Segmento]");
    let garbled = curl(&["-H", &auth, "-F", &form, "-F", "columns=[1,2]", &url]).await;
    assert_eq!(garbled.status, 400, "{}", garbled.body);
    assert_eq!(garbled.json()["error"]["details"][0]["field"], "columns");
    app.stop().await;
}
