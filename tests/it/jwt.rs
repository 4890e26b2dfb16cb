//! Identity-provider tokens beside API keys: RSA and EC keys the test makes
//! (openssl), a JWKS served over local HTTP, tokens good and bad.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ferry::proto::{ListEntitiesRequest, entity_service_client::EntityServiceClient};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tonic::Code;

use crate::on_both_backends;
use crate::support::{Backend, TestApp, Workers, reason, with_auth};

on_both_backends!(identity_provider_tokens_are_verified_against_the_jwks);

const ISSUER: &str = "https://idp.acme.test";

/// A private key made by openssl: PEM text.
fn openssl_key(dir: &std::path::Path, name: &str, args: &[&str]) -> Vec<u8> {
    let path = dir.join(name);
    let status = std::process::Command::new("openssl")
        .args(args)
        .arg("-out")
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success(), "openssl {args:?}");
    std::fs::read(path).unwrap()
}

/// The JWKS on 127.0.0.1:0; counts how often it is fetched.
async fn serve_jwks(jwks: Value) -> (String, Arc<AtomicUsize>) {
    let fetched = Arc::new(AtomicUsize::new(0));
    let count = fetched.clone();
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            count.fetch_add(1, Ordering::SeqCst);
            let jwks = jwks.clone();
            async move { axum::Json(jwks) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/jwks.json"), fetched)
}

fn now() -> i64 {
    ferry::db::now_ms() / 1000
}

async fn call(app: &TestApp, token: &str, org: &str) -> Result<(), tonic::Status> {
    let mut client = EntityServiceClient::new(app.channel.clone());
    client
        .list_entities(with_auth(ListEntitiesRequest::default(), token, org))
        .await
        .map(drop)
}

fn cause(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_details_error_info()
        .and_then(|i| i.metadata.get("cause").cloned())
        .unwrap_or_default()
}

async fn identity_provider_tokens_are_verified_against_the_jwks(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let rsa_pem = openssl_key(
        dir.path(),
        "rsa.pem",
        &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let ec_pem = openssl_key(
        dir.path(),
        "ec.pem",
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ],
    );
    let rsa = EncodingKey::from_rsa_pem(&rsa_pem).unwrap();
    let ec = EncodingKey::from_ec_pem(&ec_pem).unwrap();
    let mut keys = Vec::new();
    for (kid, key, alg) in [("rsa-1", &rsa, Algorithm::RS256), ("ec-1", &ec, Algorithm::ES256)] {
        let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(key, alg).unwrap();
        jwk.common.key_id = Some(kid.into());
        keys.push(serde_json::to_value(jwk).unwrap());
    }
    let (jwks_url, fetched) = serve_jwks(json!({ "keys": keys })).await;
    let app = TestApp::start_with(
        backend,
        |c| {
            c.auth.jwt_jwks = jwks_url.clone();
            c.auth.jwt_issuer = ISSUER.into();
        },
        Workers::None,
    )
    .await;
    let org = app.org_id.clone();
    let claims = |extra: Value| {
        let mut base = json!({
            "sub": "svc-reporting", "iss": ISSUER, "aud": "ferry",
            "exp": now() + 600, "nbf": now() - 5,
            "org_id": org, "permissions": ["entities:read"],
        });
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    };
    let sign = |kid: &str, alg: Algorithm, key: &EncodingKey, claims: &Value| {
        let mut header = Header::new(alg);
        header.kid = Some(kid.into());
        encode(&header, claims, key).unwrap()
    };

    // Good tokens from both keys: a permissions list, or a scope string.
    call(
        &app,
        &sign("rsa-1", Algorithm::RS256, &rsa, &claims(json!({}))),
        &org,
    )
    .await
    .unwrap();
    let scoped = claims(json!({ "permissions": "openid entities:read profile" }));
    call(&app, &sign("ec-1", Algorithm::ES256, &ec, &scoped), &org)
        .await
        .unwrap();

    // Refused, each with its cause.
    let hmac = EncodingKey::from_secret(&rsa_pem).unwrap();
    let tampered = {
        let token = sign("rsa-1", Algorithm::RS256, &rsa, &claims(json!({})));
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let forged = claims(json!({ "permissions": ["entities:read", "entities:export"] }));
        parts[1] = base64_url(&serde_json::to_vec(&forged).unwrap());
        parts.join(".")
    };
    let unsigned = format!(
        "{}.{}.",
        base64_url(br#"{"alg":"none","kid":"rsa-1"}"#),
        base64_url(&serde_json::to_vec(&claims(json!({}))).unwrap())
    );
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            sign(
                "rsa-1",
                Algorithm::RS256,
                &rsa,
                &claims(json!({ "exp": now() - 120 })),
            ),
            "expired_token",
        ),
        (
            "not yet valid",
            sign(
                "rsa-1",
                Algorithm::RS256,
                &rsa,
                &claims(json!({ "nbf": now() + 600 })),
            ),
            "token_not_yet_valid",
        ),
        (
            "other audience",
            sign(
                "rsa-1",
                Algorithm::RS256,
                &rsa,
                &claims(json!({ "aud": "billing" })),
            ),
            "wrong_audience",
        ),
        (
            "other issuer",
            sign(
                "rsa-1",
                Algorithm::RS256,
                &rsa,
                &claims(json!({ "iss": "https://evil.test" })),
            ),
            "wrong_issuer",
        ),
        ("tampered", tampered, "bad_signature"),
        ("alg none", unsigned, "malformed_token"),
        (
            "HMAC with the public key",
            sign("rsa-1", Algorithm::HS256, &hmac, &claims(json!({}))),
            "wrong_algorithm",
        ),
        (
            "EC key claimed as RSA",
            sign("ec-1", Algorithm::RS256, &rsa, &claims(json!({}))),
            "wrong_algorithm",
        ),
        (
            "no organization",
            sign(
                "rsa-1",
                Algorithm::RS256,
                &rsa,
                &claims(json!({ "org_id": null })),
            ),
            "missing_claim",
        ),
    ];
    for (case, token, expected) in cases {
        let status = call(&app, &token, &org).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
        assert_eq!(reason(&status), "UNAUTHORIZED", "{case}");
        assert_eq!(cause(&status), expected, "{case}: {}", status.message());
    }

    // A valid token without the permission, or for another organization.
    let powerless = sign(
        "rsa-1",
        Algorithm::RS256,
        &rsa,
        &claims(json!({ "permissions": [] })),
    );
    let status = call(&app, &powerless, &org).await.unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (Code::PermissionDenied, "MISSING_PERMISSION")
    );
    let (other_org, _) = app.other_org().await;
    let good = sign("rsa-1", Algorithm::RS256, &rsa, &claims(json!({})));
    let status = call(&app, &good, &other_org).await.unwrap_err();
    assert_eq!(reason(&status), "ORGANIZATION_NOT_ALLOWED");

    // A flood of tokens naming unknown keys reloads the JWKS at most once per
    // interval, not once per token.
    let before = fetched.load(Ordering::SeqCst);
    for n in 0..20 {
        let token = sign(
            &format!("made-up-{n}"),
            Algorithm::RS256,
            &rsa,
            &claims(json!({})),
        );
        let status = call(&app, &token, &org).await.unwrap_err();
        assert_eq!(cause(&status), "unknown_signing_key");
    }
    assert!(
        fetched.load(Ordering::SeqCst) - before <= 1,
        "fetched {} times",
        fetched.load(Ordering::SeqCst) - before
    );

    // The REST door takes the same tokens (listing exports needs entities:export).
    let exporter = sign(
        "ec-1",
        Algorithm::ES256,
        &ec,
        &claims(json!({ "permissions": ["entities:export"] })),
    );
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {exporter}"))
        .arg(format!("http://{}/v1/exports", app.http_addr()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");

    // API keys keep working beside tokens.
    call(&app, &app.key, &org).await.unwrap();
    app.stop().await;
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
