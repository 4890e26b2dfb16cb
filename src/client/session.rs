//! One connection to a ferry server with the caller's credentials.

use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use super::output::Output;
use super::profile::Profile;
use super::{ClientArgs, ClientError};
use crate::proto;
use crate::proto::account_service_client::AccountServiceClient;
use crate::proto::entity_service_client::EntityServiceClient;
use crate::proto::export_service_client::ExportServiceClient;
use crate::proto::import_service_client::ImportServiceClient;
use crate::proto::mapping_service_client::MappingServiceClient;

/// The server of `ferry serve` with its default settings.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";

/// Where to connect and as whom, after flags, environment and profile are merged.
#[derive(Debug, Clone)]
pub struct Target {
    pub server: String,
    pub api_key: String,
    pub org: Option<String>,
}

impl Target {
    /// Flags and environment first (clap merged those), then the profile, then the
    /// local default server. A key is required: every ferry call needs one.
    pub fn resolve(args: &ClientArgs, profile: Option<Profile>) -> Result<Target, ClientError> {
        let profile = profile.unwrap_or_default();
        let api_key = args.api_key.clone().or(profile.api_key).ok_or_else(|| {
            ClientError::Input(
                "no API key: pass --api-key, set FERRY_API_KEY, or save one with `ferry login`".into(),
            )
        })?;
        Ok(Target {
            server: normalise_server(
                args.server
                    .as_deref()
                    .or(profile.server.as_deref())
                    .unwrap_or(DEFAULT_SERVER),
            )?,
            api_key,
            org: args.org.clone().or(profile.org),
        })
    }
}

/// `host:port` means plaintext HTTP/2 to it; a scheme other than http is refused
/// here rather than failing obscurely in the transport.
pub fn normalise_server(server: &str) -> Result<String, ClientError> {
    let server = server.trim().trim_end_matches('/');
    if server.is_empty() {
        return Err(ClientError::Input("--server is empty".into()));
    }
    match server.split_once("://") {
        None => Ok(format!("http://{server}")),
        Some(("http", _)) => Ok(server.to_string()),
        Some((scheme, _)) => Err(ClientError::Input(format!(
            "--server {server}: this client speaks plaintext gRPC (http://); `{scheme}` is not supported"
        ))),
    }
}

pub struct Session {
    channel: Channel,
    key: MetadataValue<Ascii>,
    org: Option<MetadataValue<Ascii>>,
    pub output: Output,
    pub server: String,
}

impl Session {
    /// Resolves the target and connects (so an unreachable server is reported once,
    /// naming the address, before any file is read).
    pub async fn open(args: &ClientArgs) -> Result<Session, ClientError> {
        let profile = super::profile::load(&args.profile)?;
        let target = Target::resolve(args, profile)?;
        Session::connect(target, args.output).await
    }

    pub async fn connect(target: Target, output: Output) -> Result<Session, ClientError> {
        let key = format!("Bearer {}", target.api_key.trim())
            .parse()
            .map_err(|_| ClientError::Input("the API key has characters a header cannot carry".into()))?;
        let org = match &target.org {
            Some(org) => Some(
                org.trim()
                    .parse()
                    .map_err(|_| ClientError::Input(format!("--org {org}: not a valid organization id")))?,
            ),
            None => None,
        };
        let unreachable = |cause: String| ClientError::Connect {
            server: target.server.clone(),
            cause,
        };
        let channel = Endpoint::from_shared(target.server.clone())
            .map_err(|err| unreachable(err.to_string()))?
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|err| unreachable(source_chain(&err)))?;
        Ok(Session {
            channel,
            key,
            org,
            output,
            server: target.server,
        })
    }

    /// `message` with this session's credentials.
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        let metadata = request.metadata_mut();
        metadata.insert("authorization", self.key.clone());
        if let Some(org) = &self.org {
            metadata.insert("x-organization-id", org.clone());
        }
        request
    }

    pub fn imports(&self) -> ImportServiceClient<Channel> {
        ImportServiceClient::new(self.channel.clone())
    }

    pub fn exports(&self) -> ExportServiceClient<Channel> {
        ExportServiceClient::new(self.channel.clone())
    }

    pub fn mappings(&self) -> MappingServiceClient<Channel> {
        MappingServiceClient::new(self.channel.clone())
    }

    pub fn entities(&self) -> EntityServiceClient<Channel> {
        EntityServiceClient::new(self.channel.clone())
    }

    pub async fn whoami(&self) -> Result<proto::Caller, Status> {
        let mut client = AccountServiceClient::new(self.channel.clone());
        Ok(client
            .who_am_i(self.request(proto::WhoAmIRequest {}))
            .await?
            .into_inner())
    }
}

/// A transport error's causes on one line ("transport error: tcp connect error:
/// Connection refused"): the top level alone says only "transport error".
fn source_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        // hyper repeats a cause's text in its wrapper: say it once.
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_address_is_plaintext_and_other_schemes_are_refused() {
        assert_eq!(
            normalise_server("localhost:50051").unwrap(),
            "http://localhost:50051"
        );
        assert_eq!(normalise_server("http://h:1/").unwrap(), "http://h:1");
        assert!(normalise_server("ftp://h:1").is_err());
        assert!(normalise_server(" ").is_err());
    }
}
