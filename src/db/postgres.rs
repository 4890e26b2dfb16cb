//! Every PostgreSQL connection ferry opens — the pool's, the dedicated ones, the
//! LISTEN and liveness connections, the export reader and the import's COPY
//! writer — is opened here, over TLS as the URL says, with libpq's meaning of
//! `sslmode` (tokio-postgres itself knows only disable/prefer/require):
//!
//! - `disable`: plaintext.
//! - `allow`, `prefer` (the default, as libpq's): TLS when the server offers it,
//!   the certificate not checked (encryption against passive listeners only).
//! - `require`: TLS or no connection; the certificate checked against
//!   `sslrootcert` when one is given (libpq does the same), else not checked.
//! - `verify-ca`: TLS, the certificate chain checked against `sslrootcert`.
//! - `verify-full`: `verify-ca` and the host name (or IP) in the certificate.
//!
//! `sslrootcert` names a PEM bundle (`system`, or absent: the public web roots);
//! `sslcert` and `sslkey` a client certificate for servers that ask for one.

use std::path::Path;
use std::sync::Arc;

use diesel::ConnectionError;
use diesel_async::AsyncPgConnection;
use percent_encoding::percent_decode_str;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config};
use tokio_postgres_rustls::MakeRustlsConnect;

/// A PostgreSQL URL ferry cannot use; names the parameter.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("database URL: {0}")]
    Url(String),
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
}

/// How long opening a connection may take unless the URL says `connect_timeout`.
const DEFAULT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Nothing,
    Chain,
    ChainAndName,
}

/// The URL split into what tokio-postgres reads and the TLS it is opened with.
struct Target {
    config: Config,
    tls: MakeRustlsConnect,
}

/// A client on its own connection, driven by a task that logs how it ended as
/// `what`.
pub async fn client(url: &str, what: &'static str) -> Result<Client, ConnectError> {
    let target = target(url)?;
    let (client, connection) = target.config.connect(target.tls).await?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::warn!(error = %err, "{what} connection closed");
        }
    });
    Ok(client)
}

/// A diesel connection (the pool's `custom_setup`, dedicated and LISTEN
/// connections); notifications work as with `establish`.
pub async fn establish(url: &str) -> diesel::ConnectionResult<AsyncPgConnection> {
    let target = target(url).map_err(|err| ConnectionError::BadConnection(err.to_string()))?;
    let (client, connection) = target
        .config
        .connect(target.tls)
        .await
        .map_err(|err| ConnectionError::BadConnection(err.to_string()))?;
    AsyncPgConnection::try_from_client_and_connection(client, connection).await
}

/// Reads the URL's TLS parameters (removing those tokio-postgres refuses) and
/// builds the matching rustls configuration.
fn target(url: &str) -> Result<Target, ConnectError> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut kept = Vec::new();
    let (mut mode, mut root, mut cert, mut key) = ("prefer".to_string(), None, None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = percent_decode_str(value).decode_utf8_lossy().to_string();
        match name {
            "sslmode" => mode = decoded,
            "sslrootcert" => root = Some(decoded),
            "sslcert" => cert = Some(decoded),
            "sslkey" => key = Some(decoded),
            _ => kept.push(pair),
        }
    }
    let (ssl_mode, check) = match (mode.as_str(), root.is_some()) {
        ("disable", _) => (SslMode::Disable, Check::Nothing),
        ("allow" | "prefer", _) => (SslMode::Prefer, Check::Nothing),
        ("require", false) => (SslMode::Require, Check::Nothing),
        ("require", true) | ("verify-ca", _) => (SslMode::Require, Check::Chain),
        ("verify-full", _) => (SslMode::Require, Check::ChainAndName),
        (other, _) => {
            return Err(ConnectError::Url(format!(
                "sslmode `{other}` is not one of disable, allow, prefer, require, verify-ca, verify-full"
            )));
        }
    };
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut config: Config = rest
        .parse()
        .map_err(|err: tokio_postgres::Error| ConnectError::Url(err.to_string()))?;
    config.ssl_mode(ssl_mode);
    // A server that accepts the TCP connection and never answers (frozen, or a
    // stalled fail-over) must not hold a connect for ever; `connect_timeout` in
    // the URL overrides it.
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    let tls = tls_config(check, root.as_deref(), cert.as_deref().zip(key.as_deref()))?;
    Ok(Target {
        config,
        tls: MakeRustlsConnect::new(tls),
    })
}

fn tls_config(
    check: Check,
    root: Option<&str>,
    identity: Option<(&str, &str)>,
) -> Result<ClientConfig, ConnectError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots(root)?), provider.clone())
        .build()
        .map_err(|err| ConnectError::Url(format!("sslrootcert: {err}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = match check {
        Check::ChainAndName => webpki,
        Check::Chain | Check::Nothing => Arc::new(Lenient { webpki, check }),
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| ConnectError::Url(err.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|err| ConnectError::Url(format!("sslcert {cert}: {err}")))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|err| ConnectError::Url(format!("sslkey {key}: {err}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|err| ConnectError::Url(format!("sslcert/sslkey: {err}")))
        }
    }
}

/// The CAs of `sslrootcert`; the public web roots for `system` or none given.
fn roots(root: Option<&str>) -> Result<RootCertStore, ConnectError> {
    let Some(path) = root.filter(|p| *p != "system") else {
        return Ok(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        });
    };
    let mut store = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(Path::new(path))
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| ConnectError::Url(format!("sslrootcert {path}: {err}")))?;
    for cert in certs {
        store
            .add(cert)
            .map_err(|err| ConnectError::Url(format!("sslrootcert {path}: {err}")))?;
    }
    if store.is_empty() {
        return Err(ConnectError::Url(format!(
            "sslrootcert {path}: holds no certificate"
        )));
    }
    Ok(store)
}

/// The server checks of `verify-ca` and of `prefer`/`require` without a root; the
/// handshake's own signatures are always verified.
///
/// - `Chain` (`verify-ca`): the chain must lead to a trusted CA; the name is not
///   compared (webpki checks the chain before the name, so a name mismatch means
///   the chain itself was good).
/// - `Nothing`: libpq encrypts without checking who answers; so does ferry.
#[derive(Debug)]
struct Lenient {
    webpki: Arc<WebPkiServerVerifier>,
    check: Check,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.check == Check::Nothing {
            return Ok(ServerCertVerified::assertion());
        }
        match self
            .webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_ssl_modes_are_read_and_unknown_ones_named() {
        let checked = target("postgres://u@h/db?sslmode=verify-ca&application_name=x").unwrap();
        assert_eq!(checked.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(checked.config.get_application_name(), Some("x"));
        let plain = target("postgres://u@h/db?sslmode=disable").unwrap();
        assert_eq!(plain.config.get_ssl_mode(), SslMode::Disable);
        assert_eq!(
            target("postgres://u@h/db").unwrap().config.get_ssl_mode(),
            SslMode::Prefer
        );
        let err = target("postgres://u@h/db?sslmode=verify_full")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("verify_full") && err.contains("verify-full"),
            "{err}"
        );
        let missing = target("postgres://u@h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")
            .err()
            .unwrap()
            .to_string();
        assert!(missing.contains("sslrootcert /nonexistent/ca.pem"), "{missing}");
    }
}
