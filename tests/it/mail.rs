//! E-mail delivery of exports against a real SMTP server on loopback (Python's
//! aiosmtpd writing a maildir): request rules, localized messages whose link
//! downloads the exact file, per-recipient billing, and at-most-once sending.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use ferry::db::email::{self, EmailDomainRow, EmailSenderRow};
use ferry::db::email_deliveries::{self, DeliveryRow};
use ferry::db::{new_id, now_ms, usage};
use ferry::orgs::{self, Feature};
use ferry::proto::{
    CreateExportRequest, DeliveryState, EmailDelivery, Export, GetExportRequest, JobState,
    export_service_client::ExportServiceClient,
};
use sha2::{Digest, Sha256};
use tonic::Code;

use crate::on_both_backends;
use crate::support::{Backend, TestApp, Workers, reason, test_config, violated_fields};

on_both_backends!(
    an_export_is_mailed_to_each_recipient_in_their_language_with_a_link_to_the_exact_file,
    delivery_rules_are_checked_before_the_export_is_queued,
    a_recipient_being_sent_when_the_worker_died_is_never_sent_twice,
    a_restarted_delivery_sends_each_recipient_exactly_one_message,
    a_failed_export_sends_a_failure_notice,
    the_embedded_default_drops_each_message_as_an_eml_file,
    a_hung_mail_relay_holds_up_no_import_and_each_message_goes_once_it_answers,
);

/// A real SMTP server storing messages in a maildir; killed on drop.
struct SmtpServer {
    port: u16,
    maildir: PathBuf,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_smtp() -> SmtpServer {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    start_smtp_on(port).await
}

async fn start_smtp_on(port: u16) -> SmtpServer {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("maildir");
    let child = std::process::Command::new("python3")
        .args([
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            &format!("127.0.0.1:{port}"),
            "-c",
            "aiosmtpd.handlers.Mailbox",
        ])
        .arg(&maildir)
        .spawn()
        .expect("python3 -m aiosmtpd (pip install aiosmtpd)");
    // From here on the guard stops the server whatever happens.
    let server = SmtpServer {
        port,
        maildir,
        child,
        _dir: dir,
    };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the SMTP server did not start");
}

fn use_smtp(config: &mut ferry::config::Config, smtp: &SmtpServer) {
    config.mail.transport = ferry::config::MailTransport::Smtp;
    config.mail.smtp_host = "127.0.0.1".into();
    config.mail.smtp_port = smtp.port;
    config.mail.smtp_tls = ferry::config::SmtpTls::Plain;
}

/// A received message: headers and decoded plain-text body.
#[derive(Debug)]
struct Received {
    to: String,
    from: String,
    subject: String,
    message_id: String,
    text: String,
}

fn received(maildir: &Path) -> Vec<Received> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        let Ok(entries) = std::fs::read_dir(maildir.join(sub)) else {
            continue;
        };
        for entry in entries.flatten() {
            let raw = std::fs::read(entry.path()).unwrap();
            let mail = mailparse::parse_mail(&raw).unwrap();
            let header = |name: &str| {
                mail.headers
                    .iter()
                    .find(|h| h.get_key_ref().eq_ignore_ascii_case(name))
                    .map(|h| h.get_value())
                    .unwrap_or_default()
            };
            let text = mail
                .subparts
                .iter()
                .find(|p| p.ctype.mimetype == "text/plain")
                .map(|p| p.get_body().unwrap())
                .unwrap_or_default();
            out.push(Received {
                to: header("To"),
                from: header("From"),
                subject: header("Subject"),
                message_id: header("Message-ID"),
                text,
            });
        }
    }
    out
}

async fn wait_for_messages(maildir: &Path, count: usize) -> Vec<Received> {
    for _ in 0..300 {
        let messages = received(maildir);
        if messages.len() >= count {
            return messages;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("expected {count} messages, got {}", received(maildir).len());
}

async fn verify_domain(app: &TestApp, domain: &str) {
    let row = EmailDomainRow {
        id: new_id(),
        organization_id: app.org_id.clone(),
        domain: domain.into(),
        verified: true,
        verification_token: "t".into(),
        created_at: now_ms(),
        verified_at: Some(now_ms()),
    };
    email::insert_domain(&mut app.db().conn().await.unwrap(), &row)
        .await
        .unwrap();
}

fn delivery(recipients: &[&str], locale: &str, from_email: &str) -> Option<EmailDelivery> {
    Some(EmailDelivery {
        recipient_emails: recipients.iter().map(|r| r.to_string()).collect(),
        email_locale: locale.into(),
        from_email: from_email.into(),
        from_sender_id: String::new(),
    })
}

async fn get(app: &TestApp, id: &str) -> Export {
    ExportServiceClient::new(app.channel.clone())
        .get_export(app.request(GetExportRequest { id: id.into() }))
        .await
        .unwrap()
        .into_inner()
}

/// Waits until every recipient of the export is SENT or FAILED.
async fn wait_for_deliveries(app: &TestApp, id: &str) -> Export {
    wait_for_deliveries_within(app, id, Duration::from_secs(15)).await
}

async fn wait_for_deliveries_within(app: &TestApp, id: &str, bound: Duration) -> Export {
    let started = Instant::now();
    while started.elapsed() < bound {
        let export = get(app, id).await;
        let done = !export.recipients.is_empty()
            && export
                .recipients
                .iter()
                .all(|r| r.state != DeliveryState::Pending as i32);
        if done {
            return export;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("deliveries did not finish: {:?}", get(app, id).await.recipients);
}

async fn seed(app: &TestApp) {
    let rows: Vec<_> = (1..=10)
        .map(|n| crate::entities_fixture(&app.org_id, n))
        .collect();
    ferry::db::entities::insert(&mut app.db().conn().await.unwrap(), &rows)
        .await
        .unwrap();
}

async fn an_export_is_mailed_to_each_recipient_in_their_language_with_a_link_to_the_exact_file(
    backend: Backend,
) {
    let smtp = start_smtp().await;
    let app = TestApp::start_with(backend, |c| use_smtp(c, &smtp), Workers::Ferry).await;
    seed(&app).await;
    verify_domain(&app, "acme.test").await;
    let subjects = [
        ("es", "Tu exportación de acme está lista"),
        ("pt", "Sua exportação de acme está pronta"),
        ("en", "Your export from acme is ready"),
    ];
    let mut expected_messages = 0;
    for (locale, subject) in subjects {
        let recipients = [
            &format!("ana.{locale}@example.com") as &str,
            &format!("ANA.{locale}@Example.com"),
            &format!("bo.{locale}@example.com"),
        ];
        let request = CreateExportRequest {
            delivery: delivery(&recipients, locale, "exports@acme.test"),
            ..Default::default()
        };
        let created = ExportServiceClient::new(app.channel.clone())
            .create_export(app.request(request))
            .await
            .unwrap()
            .into_inner();
        // Deduplicated case-insensitively: two recipients, the first spelling kept.
        assert_eq!(
            created
                .recipients
                .iter()
                .map(|r| r.email.clone())
                .collect::<Vec<_>>(),
            [recipients[0], recipients[2]]
        );
        let export = wait_for_deliveries(&app, &created.id).await;
        assert_eq!(export.state, JobState::Completed as i32);
        expected_messages += 2;
        let messages = wait_for_messages(&smtp.maildir, expected_messages).await;
        let mine: Vec<&Received> = messages
            .iter()
            .filter(|m| m.to.contains(&format!(".{locale}@")))
            .collect();
        assert_eq!(mine.len(), 2, "{locale}: {mine:?}");
        for message in &mine {
            assert_eq!(message.subject, subject);
            assert_eq!(message.from, "exports@acme.test");
            let recipient = export
                .recipients
                .iter()
                .find(|r| message.to.contains(&r.email))
                .unwrap();
            assert_eq!(recipient.state, DeliveryState::Sent as i32);
            assert_eq!(recipient.message_id, message.message_id);
            let link = message
                .text
                .split_whitespace()
                .find(|w| w.starts_with("http"))
                .unwrap();
            let bytes = reqwest::get(link).await.unwrap().bytes().await.unwrap();
            assert_eq!(
                hex::encode(Sha256::digest(&bytes)),
                export.sha256,
                "{locale}: the link downloads the export"
            );
        }
    }
    // Every link mailed is in the audit trail, naming its recipient and message.
    let trail = ferry::audit::list(app.db(), &app.org_id, 0, 1000).await.unwrap();
    let mailed: Vec<_> = trail.iter().filter(|e| e.door == "email").collect();
    assert_eq!(mailed.len(), expected_messages, "{trail:?}");
    for event in &mailed {
        assert_eq!(event.principal, "system:mail");
        assert_eq!(event.method, "email:export");
        assert!(
            event.detail.starts_with("link to ") && event.detail.contains("@example.com"),
            "{event:?}"
        );
        assert!(!event.request_id.is_empty());
    }
    // Billing: one unit per recipient after deduplication, once per export.
    let events = usage::list_for_org(&mut app.db().conn().await.unwrap(), &app.org_id)
        .await
        .unwrap();
    assert_eq!(events.len(), 3);
    assert!(
        events
            .iter()
            .all(|e| e.quantity == 2 && e.kind == "export_email_recipient")
    );
    app.stop().await;
}

async fn delivery_rules_are_checked_before_the_export_is_queued(backend: Backend) {
    let app = TestApp::start(backend).await;
    verify_domain(&app, "acme.test").await;
    let unverified = EmailDomainRow {
        id: new_id(),
        organization_id: app.org_id.clone(),
        domain: "pending.test".into(),
        verified: false,
        verification_token: "t".into(),
        created_at: now_ms(),
        verified_at: None,
    };
    email::insert_domain(&mut app.db().conn().await.unwrap(), &unverified)
        .await
        .unwrap();
    let sender = EmailSenderRow {
        id: new_id(),
        organization_id: app.org_id.clone(),
        email: "ops@acme.test".into(),
        display_name: "Acme Ops".into(),
        created_at: now_ms(),
    };
    email::insert_sender(&mut app.db().conn().await.unwrap(), &sender)
        .await
        .unwrap();
    let mut client = ExportServiceClient::new(app.channel.clone());
    let create = |d: Option<EmailDelivery>| CreateExportRequest {
        delivery: d,
        ..Default::default()
    };

    // 27 addresses that fold to 26: accepted.
    let mut folding: Vec<String> = (0..26).map(|i| format!("u{i}@example.com")).collect();
    folding.push("U0@EXAMPLE.COM".into());
    let folded: Vec<&str> = folding.iter().map(String::as_str).collect();
    let accepted = client
        .create_export(app.request(create(delivery(&folded, "en", ""))))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(accepted.recipients.len(), 26);
    client
        .cancel_export(app.request(ferry::proto::CancelExportRequest { id: accepted.id }))
        .await
        .unwrap();

    let distinct: Vec<String> = (0..27).map(|i| format!("d{i}@example.com")).collect();
    let distinct: Vec<&str> = distinct.iter().map(String::as_str).collect();
    let mut both = delivery(&["a@example.com"], "en", "exports@acme.test");
    if let Some(d) = both.as_mut() {
        d.from_sender_id = sender.id.clone();
    }
    let mut unknown_sender = delivery(&["a@example.com"], "en", "");
    if let Some(d) = unknown_sender.as_mut() {
        d.from_sender_id = new_id();
    }
    let cases = [
        (
            delivery(&distinct, "en", ""),
            Code::InvalidArgument,
            "TOO_MANY_RECIPIENTS",
        ),
        (both, Code::InvalidArgument, "SENDER_CONFLICT"),
        (
            delivery(&["a@example.com"], "en", "x@pending.test"),
            Code::InvalidArgument,
            "DOMAIN_NOT_VERIFIED",
        ),
        (
            delivery(&["a@example.com"], "en", "x@elsewhere.test"),
            Code::InvalidArgument,
            "DOMAIN_NOT_VERIFIED",
        ),
        (unknown_sender, Code::InvalidArgument, "SENDER_NOT_FOUND"),
        (
            delivery(&["a@example.com"], "fr", ""),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            delivery(&["not-an-address"], "en", ""),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (delivery(&[], "en", ""), Code::InvalidArgument, "INVALID_ARGUMENT"),
        // Header injection through a recipient or the sender address.
        (
            delivery(&["a@example.com\r\nBcc: evil@example.com"], "en", ""),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            delivery(&["a@example.com"], "en", "x@acme.test\r\nBcc: evil@example.com"),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
    ];
    for (d, code, expected) in cases {
        let status = client.create_export(app.request(create(d))).await.unwrap_err();
        assert_eq!(
            (status.code(), reason(&status).as_str()),
            (code, expected),
            "{status:?}"
        );
        assert!(!violated_fields(&status).is_empty(), "{expected} names its field");
    }
    // A sender of the organization is fine, and so is no sender (the system's).
    let mut by_sender = delivery(&["a@example.com"], "pt", "");
    if let Some(d) = by_sender.as_mut() {
        d.from_sender_id = sender.id.clone();
    }
    client
        .create_export(app.request(create(by_sender)))
        .await
        .unwrap();

    // Feature off: PERMISSION_DENIED.
    orgs::set_feature(app.db(), &app.org_id, Feature::GlobalSenderEmail, false, None)
        .await
        .unwrap();
    let status = client
        .create_export(app.request(create(delivery(&["z@example.com"], "en", ""))))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (Code::PermissionDenied, "FEATURE_DISABLED")
    );
    // Nothing refused was billed: only the two accepted exports.
    let events = usage::list_for_org(&mut app.db().conn().await.unwrap(), &app.org_id)
        .await
        .unwrap();
    assert_eq!(events.iter().map(|e| e.quantity).collect::<Vec<_>>(), [26, 1]);
    app.stop().await;
}

async fn a_recipient_being_sent_when_the_worker_died_is_never_sent_twice(backend: Backend) {
    let smtp = start_smtp().await;
    // No worker at first: the export is created, then a previous (dead) worker's
    // state is planted before the real worker runs.
    let app = TestApp::start_with(backend, |c| use_smtp(c, &smtp), Workers::None).await;
    seed(&app).await;
    let request = CreateExportRequest {
        delivery: delivery(&["first@example.com", "second@example.com"], "en", ""),
        ..Default::default()
    };
    let created = ExportServiceClient::new(app.channel.clone())
        .create_export(app.request(request))
        .await
        .unwrap()
        .into_inner();
    let planted = DeliveryRow {
        job_id: created.id.clone(),
        recipient: "first@example.com".into(),
        state: email_deliveries::SENDING.into(),
        message_id: Some("<lost@ferry>".into()),
        error: None,
        updated_at: now_ms(),
        sent_at: None,
    };
    email_deliveries::put(&mut app.db().conn().await.unwrap(), &planted)
        .await
        .unwrap();
    let worker_app = ferry::server::App::open({
        let mut c = test_config(&app.db);
        use_smtp(&mut c, &smtp);
        c
    })
    .await
    .unwrap();
    let handlers = worker_app.job_kinds();
    let running = ferry::server::start(worker_app, handlers).await.unwrap();
    let export = wait_for_deliveries(&app, &created.id).await;
    let messages = wait_for_messages(&smtp.maildir, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let messages_after = received(&smtp.maildir);
    assert_eq!(messages_after.len(), messages.len());
    assert_eq!(messages_after.len(), 1, "{messages_after:?}");
    assert!(messages_after[0].to.contains("second@example.com"));
    let first = export
        .recipients
        .iter()
        .find(|r| r.email == "first@example.com")
        .unwrap();
    assert_eq!(first.state, DeliveryState::Failed as i32);
    assert!(first.error.contains("not resent"));
    running.stop().await;
    app.stop().await;
}

async fn a_restarted_delivery_sends_each_recipient_exactly_one_message(backend: Backend) {
    let smtp = start_smtp().await;
    let slow = |c: &mut ferry::config::Config| {
        use_smtp(c, &smtp);
        c.mail.pause_millis = 1_500;
    };
    let app = TestApp::start_with(backend, slow, Workers::Ferry).await;
    seed(&app).await;
    let request = CreateExportRequest {
        delivery: delivery(&["one@example.com", "two@example.com"], "en", ""),
        ..Default::default()
    };
    let created = ExportServiceClient::new(app.channel.clone())
        .create_export(app.request(request))
        .await
        .unwrap()
        .into_inner();
    // The first message goes out; the process stops before the second.
    wait_for_messages(&smtp.maildir, 1).await;
    let mut config = test_config(&app.db);
    slow(&mut config);
    // The first process stops; its database (and temp folder) stay for the next.
    let mut app = app;
    app.running.take().unwrap().stop().await;
    assert_eq!(received(&smtp.maildir).len(), 1);
    // Another process picks the delivery up.
    let restarted = ferry::server::App::open(config).await.unwrap();
    let handlers = restarted.job_kinds();
    let running = ferry::server::start(restarted.clone(), handlers).await.unwrap();
    let messages = wait_for_messages(&smtp.maildir, 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let messages = if received(&smtp.maildir).len() > messages.len() {
        received(&smtp.maildir)
    } else {
        messages
    };
    let mut to: Vec<String> = messages.iter().map(|m| m.to.clone()).collect();
    to.sort();
    assert_eq!(to, ["one@example.com", "two@example.com"]);
    let rows = email_deliveries::list(&mut restarted.db.conn().await.unwrap(), &created.id)
        .await
        .unwrap();
    assert!(rows.iter().all(|r| r.state == email_deliveries::SENT), "{rows:?}");
    running.stop().await;
    drop(app);
}

async fn a_failed_export_sends_a_failure_notice(backend: Backend) {
    let smtp = start_smtp().await;
    let broken_storage = |c: &mut ferry::config::Config| {
        use_smtp(c, &smtp);
        c.jobs.max_attempts = 1;
        c.storage.backend = ferry::config::StorageBackend::S3;
        c.storage.s3_bucket = "nowhere".into();
        c.storage.s3_region = "us-east-1".into();
        c.storage.s3_endpoint = "http://127.0.0.1:9".into();
        c.storage.s3_force_path_style = true;
        c.storage.s3_access_key_id = "k".into();
        c.storage.s3_secret_access_key = "s".into();
    };
    let app = TestApp::start_with(backend, broken_storage, Workers::Ferry).await;
    seed(&app).await;
    let request = CreateExportRequest {
        delivery: delivery(&["ops@example.com"], "es", ""),
        ..Default::default()
    };
    let created = ExportServiceClient::new(app.channel.clone())
        .create_export(app.request(request))
        .await
        .unwrap()
        .into_inner();
    let export = wait_for_deliveries(&app, &created.id).await;
    assert_eq!(export.state, JobState::Failed as i32);
    let messages = wait_for_messages(&smtp.maildir, 1).await;
    assert_eq!(messages[0].subject, "Tu exportación de acme falló");
    assert!(!messages[0].text.contains("http"), "no link in a failure notice");
    app.stop().await;
}

async fn the_embedded_default_drops_each_message_as_an_eml_file(backend: Backend) {
    let app = TestApp::start_working(backend).await;
    seed(&app).await;
    let request = CreateExportRequest {
        delivery: delivery(&["drop@example.com"], "pt", ""),
        ..Default::default()
    };
    let created = ExportServiceClient::new(app.channel.clone())
        .create_export(app.request(request))
        .await
        .unwrap()
        .into_inner();
    let export = wait_for_deliveries(&app, &created.id).await;
    assert_eq!(export.recipients[0].state, DeliveryState::Sent as i32);
    let drop_dir = app.db.data_dir().join("mail");
    let files: Vec<_> = std::fs::read_dir(&drop_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].extension().is_some_and(|e| e == "eml"));
    let raw = std::fs::read(&files[0]).unwrap();
    let mail = mailparse::parse_mail(&raw).unwrap();
    let header = |name: &str| {
        mail.headers
            .iter()
            .find(|h| h.get_key_ref() == name)
            .map(|h| h.get_value())
            .unwrap_or_default()
    };
    assert_eq!(header("Subject"), "Sua exportação de acme está pronta");
    assert_eq!(header("To"), "drop@example.com");
    assert_eq!(header("From"), "ferry <no-reply@ferry.localhost>");
    app.stop().await;
}

/// When each conversation with the tarpit opened and closed.
type Conversations = Arc<Mutex<Vec<(Instant, Option<Instant>)>>>;

/// A mail relay that accepts connections and never says a word (a tarpit, a
/// firewall dropping packets after the handshake). It records when each
/// conversation opened and closed; dropping it closes them all.
struct Tarpit {
    port: u16,
    conversations: Conversations,
    task: tokio::task::JoinHandle<()>,
}

impl Tarpit {
    async fn start() -> Tarpit {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let conversations: Conversations = Arc::default();
        let log = conversations.clone();
        let task = tokio::spawn(async move {
            let mut held = tokio::task::JoinSet::new();
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let log = log.clone();
                held.spawn(async move {
                    let index = {
                        let mut log = log.lock().unwrap();
                        log.push((Instant::now(), None));
                        log.len() - 1
                    };
                    // Read whatever comes, answer nothing, until the client leaves.
                    let mut sink = [0u8; 1024];
                    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                    log.lock().unwrap()[index].1 = Some(Instant::now());
                });
            }
        });
        Tarpit {
            port,
            conversations,
            task,
        }
    }

    fn closed(&self) -> Vec<Instant> {
        self.conversations
            .lock()
            .unwrap()
            .iter()
            .filter_map(|c| c.1)
            .collect()
    }

    /// The most conversations open at once among those opened at or after `from`.
    fn most_at_once_since(&self, from: Instant) -> usize {
        let log = self.conversations.lock().unwrap();
        let mut edges: Vec<(Instant, i32)> = Vec::new();
        for (opened, closed) in log.iter().filter(|c| c.0 >= from) {
            edges.push((*opened, 1));
            edges.push((closed.unwrap_or_else(Instant::now), -1));
        }
        edges.sort();
        let (mut open, mut most) = (0, 0);
        for (_, step) in edges {
            open += step;
            most = most.max(open);
        }
        most as usize
    }
}

impl Drop for Tarpit {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A relay that accepts and never answers holds no import up: deliveries run in
/// their own lane, at most `jobs.delivery_workers` conversations at once, each
/// bounded by `mail.smtp_send_timeout_secs`; after `mail.smtp_breaker_timeouts`
/// timeouts in a row they wait in the queue without spending attempts. When a
/// real relay answers on the same port, every recipient gets one message.
async fn a_hung_mail_relay_holds_up_no_import_and_each_message_goes_once_it_answers(backend: Backend) {
    let tarpit = Tarpit::start().await;
    let port = tarpit.port;
    let app = TestApp::start_with(
        backend,
        move |c| {
            c.mail.transport = ferry::config::MailTransport::Smtp;
            c.mail.smtp_host = "127.0.0.1".into();
            c.mail.smtp_port = port;
            c.mail.smtp_tls = ferry::config::SmtpTls::Plain;
            c.mail.smtp_send_timeout_secs = 2;
            c.mail.smtp_breaker_timeouts = 3;
            c.mail.smtp_breaker_cooldown_secs = 2;
            c.jobs.workers = 2;
            c.jobs.delivery_workers = 2;
        },
        Workers::Ferry,
    )
    .await;
    seed(&app).await;
    // The readiness probe's first conversation (bounded by its timeout) ends
    // before the deliveries start; its next one is 15 s later, so the
    // conversations counted below are the deliveries' own.
    let started = Instant::now();
    while tarpit.closed().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the readiness probe never gave up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deliveries_from = Instant::now();
    let recipients: Vec<String> = (1..=4).map(|i| format!("r{i}@example.com")).collect();
    let mut exports = Vec::new();
    for recipient in &recipients {
        let request = CreateExportRequest {
            delivery: delivery(&[recipient.as_str()], "en", ""),
            ..Default::default()
        };
        let created = ExportServiceClient::new(app.channel.clone())
            .create_export(app.request(request))
            .await
            .unwrap()
            .into_inner();
        let done = crate::outages::export_end(&app, &created.id).await;
        assert_eq!(done.state, JobState::Completed as i32);
        exports.push(created.id);
    }
    // Deliveries sit in conversations the relay never answers.
    while tarpit.most_at_once_since(deliveries_from) < 2 {
        assert!(
            deliveries_from.elapsed() < Duration::from_secs(10),
            "no delivery reached the relay"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let upload = Instant::now();
    let queued = ferry::proto::import_service_client::ImportServiceClient::new(app.channel.clone())
        .upload_import(app.request(tokio_stream::iter(crate::outages::upload_messages(10))))
        .await
        .unwrap()
        .into_inner();
    let imported = crate::outages::import_end(&app, &queued.id).await;
    let took = upload.elapsed();
    eprintln!("10-row import beside a hung relay: {took:?}");
    assert_eq!(imported.state, JobState::Completed as i32, "{imported:?}");
    assert_eq!(imported.created_items, 10, "{imported:?}");
    assert!(
        took < Duration::from_secs(5),
        "the import waited {took:?} behind the deliveries"
    );
    // Three conversations in a row timed out: the breaker opens and the
    // deliveries wait in the queue.
    while tarpit.closed().iter().filter(|t| **t >= deliveries_from).count() < 3 {
        assert!(
            deliveries_from.elapsed() < Duration::from_secs(30),
            "the conversations never timed out"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.app.metrics.mail_relay_breaker_open.get(), 1);
    let most = tarpit.most_at_once_since(deliveries_from);
    assert!(
        most <= 2,
        "{most} conversations at once; jobs.delivery_workers is 2"
    );
    for id in &exports {
        let export = get(&app, id).await;
        assert!(
            export
                .recipients
                .iter()
                .all(|r| r.state == DeliveryState::Pending as i32),
            "{:?}",
            export.recipients
        );
    }
    // A real relay on the same port: each recipient gets one message.
    drop(tarpit);
    let smtp = start_smtp_on(port).await;
    let mut delivered = Vec::new();
    for id in &exports {
        let export = wait_for_deliveries_within(&app, id, Duration::from_secs(30)).await;
        assert!(
            export
                .recipients
                .iter()
                .all(|r| r.state == DeliveryState::Sent as i32),
            "{:?}",
            export.recipients
        );
        delivered.extend(export.recipients.iter().map(|r| r.email.clone()));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut to: Vec<String> = received(&smtp.maildir).into_iter().map(|m| m.to).collect();
    to.sort();
    assert_eq!(to, recipients, "each recipient exactly once");
    app.stop().await;
}
