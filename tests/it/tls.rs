//! TLS on both listeners, mutual TLS with certificates mapped to services, a
//! renewed certificate picked up without a restart, and the client commands over
//! TLS. Every certificate is made by the test (see `pki`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferry::config::{ClientAuth, Config};
use ferry::proto;
use ferry::proto::account_service_client::AccountServiceClient;
use ferry::server::{self, App};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::pki::{Pair, TestCa};
use crate::support::{Backend, TestApp, Workers};

const BILLING: &str = "spiffe://acme.test/ns/billing/sa/exporter";

/// A CA, the server's certificate, and the files the settings name.
struct World {
    dir: tempfile::TempDir,
    ca: TestCa,
    ca_file: PathBuf,
    server: Pair,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().expect("dir");
        let ca = TestCa::new("ferry test CA");
        let ca_file = ca.write_ca(dir.path(), "ca.pem");
        let server = ca.server(dir.path(), "server");
        World {
            dir,
            ca,
            ca_file,
            server,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// TLS with client certificates verified against the world's CA.
    fn configure(&self, config: &mut Config) {
        config.server.tls_cert = self.server.cert.display().to_string();
        config.server.tls_key = self.server.key.display().to_string();
        config.server.tls_client_ca = self.ca_file.display().to_string();
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read")
}

/// A gRPC channel trusting `ca` (PEM), showing `identity` when given.
async fn channel(addr: std::net::SocketAddr, ca: &str, identity: Option<&Pair>) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some(pair) = identity {
        tls = tls.identity(Identity::from_pem(read(&pair.cert), read(&pair.key)));
    }
    Channel::from_shared(format!("https://{addr}"))
        .expect("uri")
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))
}

async fn whoami(
    channel: Channel,
    key: Option<&str>,
    org: Option<&str>,
) -> Result<proto::Caller, tonic::Status> {
    let mut request = tonic::Request::new(proto::WhoAmIRequest {});
    if let Some(key) = key {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().expect("header"));
    }
    if let Some(org) = org {
        request
            .metadata_mut()
            .insert("x-organization-id", org.parse().expect("header"));
    }
    AccountServiceClient::new(channel)
        .who_am_i(request)
        .await
        .map(|r| r.into_inner())
}

/// `curl` with `args`: (HTTP status, body); status 0 when no HTTP answer came.
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn cause(status: &tonic::Status) -> String {
    tonic_types::StatusExt::get_details_error_info(status)
        .and_then(|i| i.metadata.get("cause").cloned())
        .unwrap_or_default()
}

/// Restarts `app` on the same database with `adjust`ed settings (the identity
/// map names organizations that exist only once the first start made them).
async fn restart(mut app: TestApp, adjust: impl FnOnce(&mut Config)) -> TestApp {
    if let Some(running) = app.running.take() {
        running.stop().await;
    }
    let mut config = app.app.config.clone();
    adjust(&mut config);
    let opened = App::open(config).await.expect("open");
    let running = server::start(opened.clone(), opened.job_kinds())
        .await
        .expect("start");
    app.app = opened;
    app.running = Some(running);
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_certificate_both_listeners_speak_tls_and_refuse_plaintext() {
    let world = World::new();
    let app = TestApp::start_with(Backend::Sqlite, |c| world.configure(c), Workers::None).await;
    let running = app.running.as_ref().unwrap();

    let tls = channel(running.grpc_addr, &world.ca.pem, None)
        .await
        .expect("TLS channel");
    let caller = whoami(tls, Some(&app.key), None).await.expect("WhoAmI over TLS");
    assert_eq!(caller.organization_id, app.org_id);

    let plaintext = async {
        let channel = Channel::from_shared(format!("http://{}", running.grpc_addr))
            .unwrap()
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        whoami(channel, Some(&app.key), None)
            .await
            .map_err(|e| e.to_string())
    };
    assert!(plaintext.await.is_err(), "a plaintext gRPC call was answered");

    let ca = world.ca_file.to_str().unwrap();
    let https = format!("https://127.0.0.1:{}/healthz", running.http_addr.port());
    assert_eq!(curl(&["--cacert", ca, &https]), (200, "ok\n".to_string()));
    let http = format!("http://127.0.0.1:{}/healthz", running.http_addr.port());
    assert_eq!(curl(&[&http]).0, 0, "plaintext HTTP was answered");
    // A client that does not trust the CA gets no answer either.
    assert_eq!(curl(&[&https]).0, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapped_client_certificate_is_a_service_and_a_bearer_credential_outranks_it() {
    let world = World::new();
    let billing = world.ca.client(world.dir.path(), "billing", BILLING);
    let stranger = world
        .ca
        .client(world.dir.path(), "stranger", "spiffe://acme.test/ns/other/sa/x");
    let app = TestApp::start_with(Backend::Sqlite, |c| world.configure(c), Workers::None).await;
    let (other_org, _) = app.other_org().await;
    let map = world.path("identities.toml");
    std::fs::write(
        &map,
        format!(
            "[[identity]]\nname = \"{BILLING}\"\norganizations = [\"{}\", \"{other_org}\"]\npermissions = [\"entities:export\"]\n",
            app.org_id
        ),
    )
    .unwrap();
    let app = restart(app, |c| c.server.tls_identities = map.display().to_string()).await;
    let addr = app.running.as_ref().unwrap().grpc_addr;

    // The certificate alone: the mapped service, for its first organization.
    let service = channel(addr, &world.ca.pem, Some(&billing)).await.unwrap();
    let caller = whoami(service.clone(), None, None)
        .await
        .expect("mapped certificate");
    assert_eq!(caller.key_id, format!("cert:{BILLING}"));
    assert_eq!(caller.organization_id, app.org_id);
    assert_eq!(caller.permissions, vec!["entities:export".to_string()]);
    // It may name its other organization, and no third.
    let other = whoami(service.clone(), None, Some(&other_org)).await.unwrap();
    assert_eq!(other.organization_id, other_org);
    let refused = whoami(
        service.clone(),
        None,
        Some("0190d7a4-5a1c-7cc0-9d3e-2f1b5c6a7e80"),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    // With a key as well, the key decides who calls.
    let keyed = whoami(service, Some(&app.key), None).await.unwrap();
    assert!(!keyed.key_id.starts_with("cert:"), "{keyed:?}");
    assert_eq!(keyed.permissions.len(), 3);

    // An unmapped certificate without a key is nobody.
    let unmapped = channel(addr, &world.ca.pem, Some(&stranger)).await.unwrap();
    let status = whoami(unmapped.clone(), None, None).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(cause(&status), "unmapped_certificate");
    assert!(
        status.message().contains("spiffe://acme.test/ns/other/sa/x"),
        "{}",
        status.message()
    );
    assert!(
        whoami(unmapped, Some(&app.key), None).await.is_ok(),
        "a valid certificate with a key"
    );
    // A service added to the mapping file is let in without a restart.
    let mut text = std::fs::read_to_string(&map).unwrap();
    text.push_str(&format!(
        "\n[[identity]]\nname = \"spiffe://acme.test/ns/other/sa/x\"\norganizations = [\"{}\"]\n",
        app.org_id
    ));
    std::fs::write(&map, text).unwrap();
    let mut admitted = None;
    for _ in 0..50 {
        let fresh = channel(addr, &world.ca.pem, Some(&stranger)).await.unwrap();
        if let Ok(caller) = whoami(fresh, None, None).await {
            admitted = Some(caller);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let admitted = admitted.expect("the new mapping was not picked up within 10 s");
    assert_eq!(admitted.key_id, "cert:spiffe://acme.test/ns/other/sa/x");
    assert!(admitted.permissions.is_empty());
    // No certificate (client_auth optional) and no key: missing credentials.
    let anonymous = channel(addr, &world.ca.pem, None).await.unwrap();
    assert_eq!(
        cause(&whoami(anonymous, None, None).await.unwrap_err()),
        "missing_credentials"
    );

    // The REST door reads the same certificate.
    let url = format!("https://127.0.0.1:{}/v1/exports", app.http_addr().port());
    let ca = world.ca_file.to_str().unwrap();
    let (cert, key) = (billing.cert.to_str().unwrap(), billing.key.to_str().unwrap());
    let (status, body) = curl(&["--cacert", ca, "--cert", cert, "--key", key, &url]);
    assert_eq!(status, 200, "{body}");
    let (status, body) = curl(&["--cacert", ca, &url]);
    assert_eq!(status, 401, "{body}");
    // Links the REST door builds from the request's Host say https.
    let events = format!(
        "https://127.0.0.1:{}/v1/exports/events-url?ids=0190d7a4-5a1c-7cc0-9d3e-2f1b5c6a7e80",
        app.http_addr().port()
    );
    let (status, body) = curl(&["--cacert", ca, "--cert", cert, "--key", key, &events]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"url\":\"https://127.0.0.1:"), "{body}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_auth_refuses_no_certificate_and_one_from_another_ca() {
    let world = World::new();
    let billing = world.ca.client(world.dir.path(), "billing", BILLING);
    let rogue_ca = TestCa::new("rogue CA");
    let rogue = rogue_ca.client(world.dir.path(), "rogue", BILLING);
    let app = TestApp::start_with(
        Backend::Sqlite,
        |c| {
            world.configure(c);
            c.server.tls_client_auth = ClientAuth::Required;
        },
        Workers::None,
    )
    .await;
    let addr = app.running.as_ref().unwrap().grpc_addr;
    let good = channel(addr, &world.ca.pem, Some(&billing)).await.unwrap();
    assert!(whoami(good, Some(&app.key), None).await.is_ok());
    // The refusal shows on the first call (TLS 1.3 finishes the client's side first).
    for identity in [None, Some(&rogue)] {
        let refused = match channel(addr, &world.ca.pem, identity).await {
            Ok(channel) => whoami(channel, Some(&app.key), None).await.is_err(),
            Err(_) => true,
        };
        assert!(
            refused,
            "a call without a valid certificate was answered ({identity:?})"
        );
    }
    let https = format!("https://127.0.0.1:{}/healthz", app.http_addr().port());
    assert_eq!(curl(&["--cacert", world.ca_file.to_str().unwrap(), &https]).0, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let world = World::new();
    let app = TestApp::start_with(Backend::Sqlite, |c| world.configure(c), Workers::None).await;
    let addr = app.running.as_ref().unwrap().grpc_addr;
    let next_ca = TestCa::new("next CA");
    let answered_by_next = || async {
        match channel(addr, &next_ca.pem, None).await {
            Ok(channel) => whoami(channel, Some(&app.key), None).await.is_ok(),
            Err(_) => false,
        }
    };
    assert!(!answered_by_next().await, "the next CA is not trusted yet");

    // A renewal writes new files in place (certbot, cert-manager).
    let renewed = next_ca.server(world.dir.path(), "renewed");
    std::fs::copy(&renewed.cert, &world.server.cert).unwrap();
    std::fs::copy(&renewed.key, &world.server.key).unwrap();
    let mut picked_up = false;
    for _ in 0..50 {
        if answered_by_next().await {
            picked_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(picked_up, "the renewed certificate was not served within 10 s");
    // Clients that trust only the old CA now fail: the old certificate is gone.
    let old = channel(addr, &world.ca.pem, None).await;
    let old_works = match old {
        Ok(channel) => whoami(channel, Some(&app.key), None).await.is_ok(),
        Err(_) => false,
    };
    assert!(!old_works);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_not_required_one_port_serves_tls_and_plaintext() {
    let world = World::new();
    let app = TestApp::start_with(
        Backend::Sqlite,
        |c| {
            world.configure(c);
            c.server.tls_require = false;
        },
        Workers::None,
    )
    .await;
    let running = app.running.as_ref().unwrap();
    let tls = channel(running.grpc_addr, &world.ca.pem, None).await.unwrap();
    assert!(whoami(tls, Some(&app.key), None).await.is_ok());
    let plain = Channel::from_shared(format!("http://{}", running.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert!(whoami(plain, Some(&app.key), None).await.is_ok());
    let port = running.http_addr.port();
    assert_eq!(curl(&[&format!("http://127.0.0.1:{port}/healthz")]).0, 200);
    let ca = world.ca_file.to_str().unwrap();
    assert_eq!(
        curl(&["--cacert", ca, &format!("https://127.0.0.1:{port}/healthz")]).0,
        200
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_commands_speak_mutual_tls_and_download_over_https() {
    let world = World::new();
    let billing = world.ca.client(world.dir.path(), "billing", BILLING);
    let app = TestApp::start_with(Backend::Sqlite, |c| world.configure(c), Workers::None).await;
    let map = world.path("identities.toml");
    std::fs::write(
        &map,
        format!(
            "[[identity]]\nname = \"{BILLING}\"\norganizations = [\"{}\"]\npermissions = [\"entities:export\", \"entities:read\"]\n",
            app.org_id
        ),
    )
    .unwrap();
    let app = restart(app, |c| c.server.tls_identities = map.display().to_string()).await;
    let server = format!(
        "https://127.0.0.1:{}",
        app.running.as_ref().unwrap().grpc_addr.port()
    );
    let home = tempfile::tempdir().unwrap();
    let ferry = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path().join(".config"))
            .env_remove("FERRY_API_KEY")
            .env_remove("FERRY_URL")
            .env("FERRY_CA_CERT", &world.ca_file)
            .current_dir(home.path())
            .arg("--server")
            .arg(&server)
            .args(args)
            .output()
            .expect("run ferry")
    };
    let (cert, key) = (billing.cert.to_str().unwrap(), billing.key.to_str().unwrap());
    // The certificate alone, no API key.
    let who = ferry(&[
        "--client-cert",
        cert,
        "--client-key",
        key,
        "--output",
        "json",
        "whoami",
    ]);
    assert!(who.status.success(), "{}", String::from_utf8_lossy(&who.stderr));
    let text = String::from_utf8_lossy(&who.stdout);
    assert!(text.contains(&format!("cert:{BILLING}")), "{text}");
    // An export created and downloaded over HTTPS with the same CA and certificate.
    let out = home.path().join("people.csv");
    let exported = ferry(&[
        "--client-cert",
        cert,
        "--client-key",
        key,
        "export",
        "create",
        "--format",
        "csv",
        "--download",
        out.to_str().unwrap(),
    ]);
    assert!(
        exported.status.success(),
        "{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    let saved = std::fs::read(&out).expect("the download was saved");
    let said = String::from_utf8_lossy(&exported.stdout);
    assert!(said.contains(&format!("{} bytes", saved.len())), "{said}");
    // Without the CA the server is not trusted, and the message says so.
    let untrusted = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .env("HOME", home.path())
        .env_remove("FERRY_CA_CERT")
        .args(["--server", &server, "--api-key", &app.key, "whoami"])
        .output()
        .unwrap();
    assert!(!untrusted.status.success());
    let said = String::from_utf8_lossy(&untrusted.stderr).to_lowercase();
    assert!(
        said.contains("certificate") || said.contains("unknownissuer"),
        "{said}"
    );
    app.stop().await;
}
