//! MappingService: saved header mappings, per organization.

use ferry::proto::{
    CreateMappingRequest, DeleteMappingRequest, GetMappingRequest, ListMappingsRequest, MappingKind,
    mapping_service_client::MappingServiceClient,
};
use tonic::Code;

use crate::on_both_backends;
use crate::support::{Backend, TestApp, violated_fields, with_auth};

on_both_backends!(mappings_are_created_listed_read_and_deleted_per_organization);

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
