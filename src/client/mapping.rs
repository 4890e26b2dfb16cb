//! `ferry mapping …`: saved header mappings (file header -> ferry column).

use clap::{Args, Subcommand};

use super::output::{short, time};
use super::session::Session;
use super::{ClientError, Exit, listing};
use crate::proto;

#[derive(Debug, Subcommand)]
pub enum MappingCommand {
    /// Save a mapping: `--column 'Tax number=tax_id'` for each renamed header.
    Create(CreateArgs),
    /// The organization's mappings.
    List {
        /// At most this many (0: all).
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// One mapping with its columns.
    Get { id: String },
    /// Rename, re-kind or re-map a mapping (`--column` replaces the whole map).
    Update(UpdateArgs),
    /// Delete a mapping.
    Delete { id: String },
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    pub id: String,
    /// A new name.
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, value_enum)]
    pub kind: Option<Kind>,
    /// `HEADER=column` (repeat): the new map, replacing the stored one.
    #[arg(long = "column", value_name = "HEADER=COLUMN")]
    pub columns: Vec<String>,
}

/// `HEADER=column` pairs as a map (the last `=` splits, so a header may hold one).
fn column_pairs(pairs: &[String]) -> Result<std::collections::HashMap<String, String>, ClientError> {
    pairs
        .iter()
        .map(|pair| {
            pair.rsplit_once('=')
                .map(|(header, column)| (header.to_string(), column.trim().to_string()))
                .ok_or_else(|| ClientError::Input(format!("--column {pair}: expected HEADER=COLUMN")))
        })
        .collect()
}

fn kind_of(kind: Kind) -> proto::MappingKind {
    match kind {
        Kind::Person => proto::MappingKind::EntityPerson,
        Kind::Company => proto::MappingKind::EntityCompany,
        Kind::Mixed => proto::MappingKind::EntityMixed,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Person,
    Company,
    Mixed,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[arg(long)]
    pub name: String,
    /// Which entities the files hold.
    #[arg(long, value_enum, default_value_t = Kind::Mixed)]
    pub kind: Kind,
    /// `HEADER=column`: the file's header and the ferry column it fills (repeat).
    #[arg(long = "column", value_name = "HEADER=COLUMN", required = true)]
    pub columns: Vec<String>,
}

pub async fn run(session: &Session, command: MappingCommand) -> Result<Exit, ClientError> {
    let mut client = session.mappings();
    match command {
        MappingCommand::Create(args) => {
            let columns = column_pairs(&args.columns)?;
            let kind = kind_of(args.kind);
            let mapping = client
                .create_mapping(session.request(proto::CreateMappingRequest {
                    name: args.name,
                    kind: kind as i32,
                    columns,
                }))
                .await?;
            print(session, &mapping.into_inner());
        }
        MappingCommand::List { limit } => {
            let mappings = listing::collect(limit, |page_size, page_token| {
                let request = session.request(proto::ListMappingsRequest {
                    page_size,
                    page_token,
                });
                async move {
                    let page = session.mappings().list_mappings(request).await?.into_inner();
                    Ok((page.mappings, page.next_page_token))
                }
            })
            .await?;
            session.output.list(
                &mappings,
                &["ID", "NAME", "KIND", "COLUMNS", "CREATED AT"],
                |mapping| {
                    vec![
                        mapping.id.clone(),
                        mapping.name.clone(),
                        kind_name(mapping.kind).to_string(),
                        mapping.columns.len().to_string(),
                        time(&mapping.create_time),
                    ]
                },
            );
        }
        MappingCommand::Get { id } => {
            let mapping = client
                .get_mapping(session.request(proto::GetMappingRequest { id }))
                .await?;
            print(session, &mapping.into_inner());
        }
        MappingCommand::Update(args) => {
            let mapping = client
                .update_mapping(session.request(proto::UpdateMappingRequest {
                    id: args.id,
                    name: args.name.unwrap_or_default(),
                    kind: args.kind.map(kind_of).unwrap_or(proto::MappingKind::Unspecified) as i32,
                    columns: column_pairs(&args.columns)?,
                }))
                .await?;
            print(session, &mapping.into_inner());
        }
        MappingCommand::Delete { id } => {
            client
                .delete_mapping(session.request(proto::DeleteMappingRequest { id: id.clone() }))
                .await?;
            session.output.done("deleted", &id);
        }
    }
    Ok(Exit::Ok)
}

fn kind_name(value: i32) -> &'static str {
    proto::MappingKind::try_from(value)
        .map(|kind| short(kind.as_str_name(), "MAPPING_KIND_"))
        .unwrap_or("")
}

fn print(session: &Session, mapping: &proto::Mapping) {
    let mut columns: Vec<String> = mapping
        .columns
        .iter()
        .map(|(header, column)| format!("{header} -> {column}"))
        .collect();
    columns.sort();
    session.output.one(
        mapping,
        vec![
            ("id", mapping.id.clone()),
            ("name", mapping.name.clone()),
            ("kind", kind_name(mapping.kind).to_string()),
            ("columns", columns.join("; ")),
            ("created at", time(&mapping.create_time)),
        ],
    );
}
