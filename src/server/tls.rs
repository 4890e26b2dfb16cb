//! TLS on both listeners. One certificate (`server.tls_cert`/`tls_key`), re-read
//! when its files change, and one client-certificate verifier (`tls_client_ca`) are
//! shared by an acceptor per listener (ALPN `h2` for gRPC, `http/1.1` for HTTP).
//! Handshakes run on tasks of their own, bounded in time, so a slow or silent
//! client never holds up the accept loop; accepted connections reach tonic as a
//! stream and axum as a [`axum::serve::Listener`], each carrying its [`Peer`].

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Context as _, bail};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::auth::certificates::ClientCertificate;
use crate::config::{ClientAuth, ServerConfig};
use crate::reload::Reloading;
use crate::request::Peer;

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepted connections waiting for the server to take them.
const BACKLOG: usize = 256;

/// ALPN of the gRPC listener.
pub const GRPC_ALPN: &[&[u8]] = &[b"h2"];
/// ALPN of the HTTP listener (axum serves HTTP/1.1 here).
pub const HTTP_ALPN: &[&[u8]] = &[b"http/1.1"];

/// The TLS settings both listeners share; `None` from [`Tls::from_config`] when no
/// certificate is configured.
pub struct Tls {
    certificate: Arc<ReloadingCert>,
    verifier: Option<Arc<dyn ClientCertVerifier>>,
    provider: Arc<CryptoProvider>,
    require: bool,
}

impl Tls {
    /// Reads the certificate, key and client CA now, so a bad file fails the start.
    pub fn from_config(server: &ServerConfig) -> anyhow::Result<Option<Tls>> {
        if server.tls_cert.is_empty() {
            return Ok(None);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certificate = Arc::new(ReloadingCert::load(
            Path::new(&server.tls_cert),
            Path::new(&server.tls_key),
        )?);
        let verifier = if server.tls_client_ca.is_empty() {
            None
        } else {
            Some(client_verifier(
                Path::new(&server.tls_client_ca),
                server.tls_client_auth,
                provider.clone(),
            )?)
        };
        Ok(Some(Tls {
            certificate,
            verifier,
            provider,
            require: server.tls_require,
        }))
    }

    /// How a listener speaking `alpn` treats its connections.
    pub fn transport(&self, alpn: &[&[u8]]) -> anyhow::Result<Transport> {
        let builder = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?;
        let builder = match &self.verifier {
            Some(verifier) => builder.with_client_cert_verifier(verifier.clone()),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(self.certificate.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Transport {
            acceptor: Some(TlsAcceptor::from(Arc::new(config))),
            require: self.require,
        })
    }
}

/// A listener's treatment of connections: plaintext, TLS only, or either (told
/// apart by the first byte, a TLS handshake's 0x16) while a fleet migrates.
#[derive(Clone, Default)]
pub struct Transport {
    acceptor: Option<TlsAcceptor>,
    require: bool,
}

impl Transport {
    pub fn plaintext() -> Transport {
        Transport::default()
    }

    pub fn is_tls(&self) -> bool {
        self.acceptor.is_some()
    }

    /// The connection as the server will use it, after the handshake if any.
    async fn secure(&self, stream: TcpStream, remote: SocketAddr) -> io::Result<Accepted> {
        let plain = |stream| Accepted {
            io: Io::Plain(stream),
            peer: Peer {
                remote: Some(remote),
                tls: false,
                certificate: None,
            },
        };
        let Some(acceptor) = &self.acceptor else {
            return Ok(plain(stream));
        };
        if !self.require && !starts_a_tls_handshake(&stream).await? {
            return Ok(plain(stream));
        }
        let tls = acceptor.accept(stream).await?;
        let certificate = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|cert| Arc::new(identity_of(cert)));
        Ok(Accepted {
            io: Io::Tls(Box::new(tls)),
            peer: Peer {
                remote: Some(remote),
                tls: true,
                certificate,
            },
        })
    }
}

/// Whether the client's first byte opens a TLS record (a handshake).
async fn starts_a_tls_handshake(stream: &TcpStream) -> io::Result<bool> {
    let mut first = [0u8; 1];
    let read = stream.peek(&mut first).await?;
    Ok(read == 1 && first[0] == 0x16)
}

/// The identities of a verified client certificate: URI SANs (SPIFFE ids) first,
/// then DNS SANs. A certificate that cannot be parsed here was still verified by
/// rustls; it simply has no identity to map.
fn identity_of(cert: &CertificateDer<'_>) -> ClientCertificate {
    use x509_parser::extensions::GeneralName;
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return ClientCertificate::default();
    };
    let names = match parsed.subject_alternative_name() {
        Ok(Some(san)) => san.value.general_names.clone(),
        _ => Vec::new(),
    };
    let uris = names.iter().filter_map(|name| match name {
        GeneralName::URI(uri) => Some(uri.to_string()),
        _ => None,
    });
    let dns = names.iter().filter_map(|name| match name {
        GeneralName::DNSName(dns) => Some(dns.to_string()),
        _ => None,
    });
    ClientCertificate {
        identities: uris.chain(dns).collect(),
    }
}

fn client_verifier(
    ca: &Path,
    auth: ClientAuth,
    provider: Arc<CryptoProvider>,
) -> anyhow::Result<Arc<dyn ClientCertVerifier>> {
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(ca, "server.tls_client_ca")? {
        roots.add(cert).with_context(|| {
            format!(
                "server.tls_client_ca {}: not a usable CA certificate",
                ca.display()
            )
        })?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = match auth {
        ClientAuth::Optional => builder.allow_unauthenticated(),
        ClientAuth::Required => builder,
    };
    builder
        .build()
        .with_context(|| format!("server.tls_client_ca {}", ca.display()))
}

fn read_certificates(path: &Path, setting: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read {setting} {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{setting} {}: not PEM certificates", path.display()))?;
    if certs.is_empty() {
        bail!("{setting} {}: holds no certificate", path.display());
    }
    Ok(certs)
}

/// The chain and key, checked to belong together.
fn certified_key(cert: &Path, key: &Path, provider: &CryptoProvider) -> anyhow::Result<CertifiedKey> {
    let chain = read_certificates(cert, "server.tls_cert")?;
    let private = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("server.tls_key {}: no readable PEM private key", key.display()))?;
    CertifiedKey::from_der(chain, private, provider).with_context(|| {
        format!(
            "server.tls_key {} does not fit server.tls_cert {}",
            key.display(),
            cert.display()
        )
    })
}

/// The server certificate, re-read when its files change (a renewal by
/// cert-manager or certbot needs no restart; a half-written pair or a key that does
/// not fit keeps the previous one).
#[derive(Debug)]
struct ReloadingCert(Reloading<CertifiedKey>);

impl ReloadingCert {
    fn load(cert: &Path, key: &Path) -> anyhow::Result<ReloadingCert> {
        let paths = vec![cert.to_path_buf(), key.to_path_buf()];
        Ok(ReloadingCert(Reloading::load(
            "TLS certificate",
            paths,
            |paths| certified_key(&paths[0], &paths[1], &rustls::crypto::ring::default_provider()),
        )?))
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

/// Accepts on `listener` until `stop`, securing each connection on its own task;
/// the receiver yields them ready for the server.
pub fn accept(
    listener: TcpListener,
    transport: Transport,
    stop: CancellationToken,
) -> mpsc::Receiver<Accepted> {
    let (ready, accepted) = mpsc::channel(BACKLOG);
    tokio::spawn(async move {
        loop {
            let (stream, remote) = tokio::select! {
                _ = stop.cancelled() => return,
                _ = ready.closed() => return,
                next = listener.accept() => match next {
                    Ok(next) => next,
                    Err(err) => {
                        // Out of file descriptors, mostly: wait rather than spin.
                        tracing::warn!(error = %err, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            // Without it a small response waits for the client's delayed ACK
            // (Nagle), about 40 ms per call on loopback.
            let _ = stream.set_nodelay(true);
            let (ready, transport) = (ready.clone(), transport.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, transport.secure(stream, remote)).await {
                    Ok(Ok(connection)) => {
                        let _ = ready.send(connection).await;
                    }
                    Ok(Err(err)) => {
                        tracing::debug!(%remote, error = %err, "connection refused in the TLS handshake")
                    }
                    Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                }
            });
        }
    });
    accepted
}

/// An accepted connection and what is known of its peer.
pub struct Accepted {
    io: Io,
    peer: Peer,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl tonic::transport::server::Connected for Accepted {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for Accepted {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The HTTP listener's side: axum takes connections from the acceptor's queue.
pub struct HttpIncoming {
    accepted: mpsc::Receiver<Accepted>,
    local: SocketAddr,
}

impl HttpIncoming {
    pub fn new(accepted: mpsc::Receiver<Accepted>, local: SocketAddr) -> HttpIncoming {
        HttpIncoming { accepted, local }
    }
}

impl axum::serve::Listener for HttpIncoming {
    type Io = Accepted;
    type Addr = Peer;

    async fn accept(&mut self) -> (Accepted, Peer) {
        match self.accepted.recv().await {
            Some(connection) => {
                let peer = connection.peer.clone();
                (connection, peer)
            }
            // The acceptor stopped (shutdown): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Peer> {
        Ok(Peer {
            remote: Some(self.local),
            ..Peer::default()
        })
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, HttpIncoming>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, HttpIncoming>) -> Peer {
        stream.remote_addr().clone()
    }
}
