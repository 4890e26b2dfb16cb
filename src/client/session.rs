//! One connection to a ferry server with the caller's credentials.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
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
    /// `None` only with a client certificate (the server maps it to a service).
    pub api_key: Option<String>,
    pub org: Option<String>,
    pub tls: ClientTls,
}

/// The client's side of TLS: whom to trust and what certificate to show. Used for
/// the gRPC channel and the downloads alike.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// CA bundle (PEM); `None`: the public web roots.
    pub ca_cert: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl ClientTls {
    fn read(path: &Path, what: &str) -> Result<Vec<u8>, ClientError> {
        std::fs::read(path).map_err(ClientError::io(format!(
            "cannot read the {what} {}",
            path.display()
        )))
    }

    /// The gRPC channel's TLS settings.
    fn channel_config(&self) -> Result<ClientTlsConfig, ClientError> {
        let mut config = ClientTlsConfig::new().with_webpki_roots();
        if let Some(ca) = &self.ca_cert {
            config = config.ca_certificate(Certificate::from_pem(ClientTls::read(
                ca,
                "CA bundle (--ca-cert)",
            )?));
        }
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(
                ClientTls::read(cert, "client certificate (--client-cert)")?,
                ClientTls::read(key, "client key (--client-key)")?,
            ));
        }
        Ok(config)
    }

    /// An HTTP client for download links that trusts and shows the same.
    pub fn http_client(&self) -> Result<reqwest::Client, ClientError> {
        let mut builder = reqwest::Client::builder();
        if let Some(ca) = &self.ca_cert {
            for cert in reqwest::Certificate::from_pem_bundle(&ClientTls::read(ca, "CA bundle (--ca-cert)")?)
                .map_err(|err| ClientError::Input(format!("--ca-cert {}: {err}", ca.display())))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some((cert, key)) = &self.identity {
            let mut pem = ClientTls::read(cert, "client certificate (--client-cert)")?;
            pem.extend(ClientTls::read(key, "client key (--client-key)")?);
            let identity = reqwest::Identity::from_pem(&pem)
                .map_err(|err| ClientError::Input(format!("--client-cert/--client-key: {err}")))?;
            builder = builder.identity(identity);
        }
        builder
            .build()
            .map_err(|err| ClientError::Download(source_chain(&err)))
    }
}

impl Target {
    /// Flags and environment first (clap merged those), then the profile, then the
    /// local default server. A key is required: every ferry call needs one.
    pub fn resolve(args: &ClientArgs, profile: Option<Profile>) -> Result<Target, ClientError> {
        let profile = profile.unwrap_or_default();
        let identity = match (&args.client_cert, &args.client_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            _ => profile
                .client_cert
                .zip(profile.client_key)
                .map(|(cert, key)| (PathBuf::from(cert), PathBuf::from(key))),
        };
        let api_key = args.api_key.clone().or(profile.api_key);
        if api_key.is_none() && identity.is_none() {
            return Err(ClientError::Input(
                "no API key: pass --api-key, set FERRY_API_KEY, save one with `ferry login`, \
                 or show a client certificate the server maps to a service (--client-cert, --client-key)"
                    .into(),
            ));
        }
        let server = normalise_server(
            args.server
                .as_deref()
                .or(profile.server.as_deref())
                .unwrap_or(DEFAULT_SERVER),
        )?;
        let tls = ClientTls {
            ca_cert: args.ca_cert.clone().or(profile.ca_cert.map(PathBuf::from)),
            identity,
        };
        if server.starts_with("http://") && (tls.ca_cert.is_some() || tls.identity.is_some()) {
            return Err(ClientError::Input(format!(
                "--server {server} is plaintext: use https:// with --ca-cert, --client-cert and --client-key"
            )));
        }
        Ok(Target {
            server,
            api_key,
            org: args.org.clone().or(profile.org),
            tls,
        })
    }
}

/// `host:port` means plaintext HTTP/2 to it, `https://` TLS; another scheme is
/// refused here rather than failing obscurely in the transport.
pub fn normalise_server(server: &str) -> Result<String, ClientError> {
    let server = server.trim().trim_end_matches('/');
    if server.is_empty() {
        return Err(ClientError::Input("--server is empty".into()));
    }
    match server.split_once("://") {
        None => Ok(format!("http://{server}")),
        Some(("http" | "https", _)) => Ok(server.to_string()),
        Some((scheme, _)) => Err(ClientError::Input(format!(
            "--server {server}: this client speaks gRPC over http:// or https://; `{scheme}` is not supported"
        ))),
    }
}

pub struct Session {
    channel: Channel,
    key: Option<MetadataValue<Ascii>>,
    org: Option<MetadataValue<Ascii>>,
    pub output: Output,
    pub server: String,
    /// For the downloads: the same trust and certificate as the channel.
    pub tls: ClientTls,
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
        let key = match &target.api_key {
            Some(key) => Some(format!("Bearer {}", key.trim()).parse().map_err(|_| {
                ClientError::Input("the API key has characters a header cannot carry".into())
            })?),
            None => None,
        };
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
        let mut endpoint =
            Endpoint::from_shared(target.server.clone()).map_err(|err| unreachable(err.to_string()))?;
        if target.server.starts_with("https://") {
            endpoint = endpoint
                .tls_config(target.tls.channel_config()?)
                .map_err(|err| unreachable(source_chain(&err)))?;
        }
        let channel = endpoint
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
            tls: target.tls,
        })
    }

    /// `message` with this session's credentials.
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        let metadata = request.metadata_mut();
        if let Some(key) = &self.key {
            metadata.insert("authorization", key.clone());
        }
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
    fn a_bare_address_is_plaintext_https_is_tls_and_other_schemes_are_refused() {
        assert_eq!(
            normalise_server("localhost:50051").unwrap(),
            "http://localhost:50051"
        );
        assert_eq!(normalise_server("http://h:1/").unwrap(), "http://h:1");
        assert_eq!(normalise_server("https://h:1").unwrap(), "https://h:1");
        assert!(normalise_server("ftp://h:1").is_err());
        assert!(normalise_server(" ").is_err());
    }
}
