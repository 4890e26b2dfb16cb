//! `ferry entities …`: read the organization's entities.

use clap::Subcommand;

use super::filter::FilterArgs;
use super::output::{short, time};
use super::session::Session;
use super::{ClientError, Exit, listing};
use crate::proto;

// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum EntityCommand {
    /// Entities the filter flags select.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// Sort order, as the API takes it (`create_time desc`).
        #[arg(long)]
        order_by: Option<String>,
        /// At most this many (0: all).
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// One entity with its attributes.
    Get { id: String },
}

pub async fn run(session: &Session, command: EntityCommand) -> Result<Exit, ClientError> {
    match command {
        EntityCommand::List {
            filter,
            order_by,
            limit,
        } => {
            let filter = filter.to_proto()?;
            let entities = listing::collect(limit, |page_size, page_token| {
                let request = session.request(proto::ListEntitiesRequest {
                    filter: Some(filter.clone()),
                    page_size,
                    page_token,
                    order_by: order_by.clone().unwrap_or_default(),
                });
                async move {
                    let page = session.entities().list_entities(request).await?.into_inner();
                    Ok((page.entities, page.next_page_token))
                }
            })
            .await?;
            session.output.list(
                &entities,
                &["ID", "TYPE", "TAX ID", "COUNTRY", "NAME", "STATUS", "UPDATED AT"],
                |entity| {
                    vec![
                        entity.id.clone(),
                        type_name(entity.r#type).to_string(),
                        entity.tax_id.clone(),
                        entity.country.clone(),
                        entity.name.clone(),
                        status_name(entity.status).to_string(),
                        time(&entity.update_time),
                    ]
                },
            );
        }
        EntityCommand::Get { id } => {
            let entity = session
                .entities()
                .get_entity(session.request(proto::GetEntityRequest { id }))
                .await?
                .into_inner();
            let attributes = super::output::to_json(&entity)
                .get("attributes")
                .map(ToString::to_string)
                .unwrap_or_default();
            session.output.one(
                &entity,
                vec![
                    ("id", entity.id.clone()),
                    ("type", type_name(entity.r#type).to_string()),
                    ("tax id", entity.tax_id.clone()),
                    ("country", entity.country.clone()),
                    ("name", entity.name.clone()),
                    ("status", status_name(entity.status).to_string()),
                    ("external id", entity.external_id.clone()),
                    ("email", entity.email.clone()),
                    ("client", entity.is_client.to_string()),
                    ("attributes", attributes),
                    ("created at", time(&entity.create_time)),
                    ("updated at", time(&entity.update_time)),
                ],
            );
        }
    }
    Ok(Exit::Ok)
}

fn type_name(value: i32) -> &'static str {
    proto::EntityType::try_from(value)
        .map(|kind| short(kind.as_str_name(), "ENTITY_TYPE_"))
        .unwrap_or("")
}

fn status_name(value: i32) -> &'static str {
    proto::EntityStatus::try_from(value)
        .map(|status| short(status.as_str_name(), "ENTITY_STATUS_"))
        .unwrap_or("")
}
