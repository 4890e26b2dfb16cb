//! Server assembly in one place: layers (request id and tracing -> auth), services,
//! health, reflection, the HTTP listener, the worker, and graceful shutdown.

pub mod admission;
pub mod bootstrap;
pub mod http;
pub mod observe;
pub mod readiness;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::api;
use crate::auth::cache::AuthCache;
use crate::auth::certificates::Identities;
use crate::auth::{AuthLayer, Authenticator};
use crate::config::Config;
use crate::db::{Db, migrate};
use crate::export::Exports;
use crate::export::job::ExportJob;
use crate::jobs::{JobEvents, Queue, Registry, Worker};
use crate::mail::Mailer;
use crate::metrics::Metrics;
use crate::notifications::{EmailJob, Notices};
use crate::proto;
use crate::request::Peer;
use crate::scratch::Scratch;
use crate::storage::Storage;

/// Everything the services share.
#[derive(Clone)]
pub struct App {
    pub config: Config,
    pub db: Db,
    pub queue: Queue,
    pub storage: Storage,
    pub mailer: Arc<Mailer>,
    pub metrics: Arc<Metrics>,
    /// Verified keys and organizations (see [`AuthCache`]).
    pub auth_cache: AuthCache,
    /// This process's temp folder, locked while it lives.
    pub scratch: Arc<Scratch>,
    /// Identity-provider tokens (`auth.jwt_jwks`), shared by both doors.
    pub jwt: Option<Arc<crate::auth::jwt::JwtVerifier>>,
    /// Client-certificate identities -> services (`server.tls_identities`),
    /// re-read when the file changes.
    pub identities: Arc<Identities>,
}

impl App {
    /// Opens the database (creating the data dir for the embedded default) and
    /// applies pending migrations.
    pub async fn open(config: Config) -> anyhow::Result<App> {
        let url = config.database_url();
        if !crate::db::is_postgres_url(&url) {
            let path = std::path::Path::new(crate::db::sqlite_path(&url));
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create the data directory {}", parent.display()))?;
            }
        }
        let db = Db::connect_with(
            &url,
            config.database.max_connections,
            Duration::from_millis(config.database.acquire_timeout_millis),
        )
        .await
        .with_context(|| {
            format!(
                "cannot open the database (setting `database.url`, {})",
                crate::config::env_name("database.url")
            )
        })?;
        migrate::run(&db).await.context("cannot migrate the database")?;
        let events = JobEvents::new(db.clone(), config.server.max_watchers as usize);
        let auth_cache = AuthCache::new(db.clone(), Duration::from_millis(config.auth.cache_ttl_millis));
        let metrics = Arc::new(Metrics::default());
        let queue = Queue::new(db.clone(), events, config.jobs.clone(), metrics.clone());
        let storage = Storage::from_config(&config)
            .await
            .context("cannot open the file storage")?;
        queue.when_ended(
            crate::import::KIND,
            crate::import::job::upload_leaves_when_done(storage.clone()),
        );
        let mailer = Arc::new(
            Mailer::from_config(&config)
                .context("cannot set up e-mail")?
                .with_breaker_gauge(metrics.mail_relay_breaker_open.clone()),
        );
        let jwt = crate::auth::jwt::JwtVerifier::from_config(&config.auth).await?;
        let identities = match config.server.tls_identities.as_str() {
            "" => Identities::default(),
            path => Identities::load(std::path::Path::new(path))?,
        };
        let temp_root = config.data_dir().join("tmp");
        let (scratch, gone) = Scratch::claim(&temp_root)
            .with_context(|| format!("cannot create a temp folder in {}", temp_root.display()))?;
        // Jobs of an earlier instance on this data folder that died: no need to
        // wait for their leases (the folder's lock says it is gone).
        for instance in &gone {
            let mut conn = db.conn().await?;
            let taken = crate::db::jobs::expire_leases_of_instance(&mut conn, instance)
                .await
                .context("cannot take back the jobs of a stopped instance")?;
            if taken > 0 {
                tracing::warn!(instance = %instance, jobs = taken, "taking back the jobs of a stopped instance");
            }
        }
        Ok(App {
            config,
            db,
            queue,
            storage,
            mailer,
            metrics,
            auth_cache,
            scratch: Arc::new(scratch),
            jwt,
            identities: Arc::new(identities),
        })
    }

    /// Where jobs and uploads write files before storing them: this process's own
    /// folder, which the next start removes if the process dies.
    pub fn temp_dir(&self) -> std::path::PathBuf {
        self.scratch.path().to_path_buf()
    }

    /// Who calls, for both doors: API keys, tokens, client certificates.
    pub fn authenticator(&self) -> Authenticator {
        Authenticator::new(self.db.clone(), self.auth_cache.clone())
            .with_jwt(self.jwt.clone())
            .with_identities(self.identities.clone())
    }

    pub fn exports(&self) -> Exports {
        Exports::new(
            self.queue.clone(),
            self.storage.clone(),
            self.config.exports.clone(),
        )
    }

    /// The signer of links this server checks itself (local downloads, events
    /// URLs): `storage.signing_key`, else the data folder's own key; if that cannot
    /// be read, a random key of this process (its links die with it), logged.
    pub fn url_signer(&self) -> crate::storage::signing::UrlSigner {
        let secret = crate::storage::local::signing_secret(&self.config).unwrap_or_else(|err| {
            tracing::error!(error = %err, "cannot read the URL signing key; signed links will be refused");
            crate::db::new_id().into_bytes()
        });
        crate::storage::signing::UrlSigner::new(&secret)
    }

    pub fn imports(&self) -> crate::import::service::Imports {
        crate::import::service::Imports::new(
            self.queue.clone(),
            self.storage.clone(),
            Arc::new(self.config.clone()),
            self.temp_dir(),
        )
    }

    /// The job kinds this build runs: every kind is registered here.
    pub fn job_kinds(&self) -> Registry {
        let export = Arc::new(ExportJob {
            storage: self.storage.clone(),
            temp_dir: self.temp_dir(),
            retention_ms: self.config.exports.retention_days as i64 * 24 * 3600 * 1000,
            batch_rows: i64::from(self.config.exports.batch_rows),
            batch_pause: Duration::from_millis(self.config.exports.batch_pause_millis),
        });
        let email = Arc::new(EmailJob {
            mailer: self.mailer.clone(),
            storage: self.storage.clone(),
            link_ttl: Duration::from_secs(self.config.mail.link_ttl_secs),
            pause: Duration::from_millis(self.config.mail.pause_millis),
            notices: Notices::default()
                .with(crate::export::KIND, crate::export::notice::ExportNotices)
                .with(crate::import::KIND, crate::import::notice::ImportNotices),
        });
        let import = Arc::new(crate::import::job::ImportJob {
            storage: self.storage.clone(),
            temp_dir: self.temp_dir(),
            batch_rows: self.config.bulk_import.batch_rows as usize,
            report_retention: Duration::from_secs(
                self.config
                    .bulk_import
                    .report_retention_days
                    .saturating_mul(24 * 3600),
            ),
        });
        Registry::new().with(export).with(import).with(email)
    }
}

/// A started server: its bound addresses, and the handle to stop it.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops taking calls and jobs, lets running calls finish, returns job leases.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// Binds both listeners and starts serving, with the `kinds` run by the worker.
pub async fn start(app: App, kinds: Registry) -> anyhow::Result<Running> {
    let shutdown = CancellationToken::new();
    let grpc = TcpListener::bind(app.config.grpc_addr()).await.with_context(|| {
        format!(
            "cannot listen on server.grpc_addr {}",
            app.config.server.grpc_addr
        )
    })?;
    let http = TcpListener::bind(app.config.http_addr()).await.with_context(|| {
        format!(
            "cannot listen on server.http_addr {}",
            app.config.server.http_addr
        )
    })?;
    let grpc_addr = grpc.local_addr()?;
    let http_addr = http.local_addr()?;
    let tls = tls::Tls::from_config(&app.config.server).context("cannot set up TLS (server.tls_*)")?;
    let (grpc_transport, http_transport) = match &tls {
        Some(tls) => (tls.transport(tls::GRPC_ALPN)?, tls.transport(tls::HTTP_ALPN)?),
        None => (tls::Transport::plaintext(), tls::Transport::plaintext()),
    };
    let http_scheme = if http_transport.is_tls() { "https" } else { "http" };
    // Local download links point at the port actually bound unless a public URL is set.
    if let Storage::Local(store) = &app.storage
        && app.config.server.public_url.is_empty()
    {
        store.set_base_url(&format!("{http_scheme}://{http_addr}"));
    }
    let grpc = tls::accept(grpc, grpc_transport, shutdown.clone());
    let http = tls::HttpIncoming::new(tls::accept(http, http_transport, shutdown.clone()), http_addr);

    app.queue.events().start(shutdown.clone());
    let readiness = readiness::Readiness::new(app.metrics.clone());
    readiness.start(&app, shutdown.clone());
    // Serve once the auth cache hears other replicas' changes; bounded, so a
    // database that is slow to answer at start does not keep health checks away.
    let mut auth_listening = app.auth_cache.start(shutdown.clone());
    let _ = tokio::time::timeout(Duration::from_secs(5), auth_listening.wait_for(|on| *on)).await;
    // One admission for both doors: gRPC and REST calls share the server's slots
    // and each organization's rate.
    let admission = admission::AdmissionLayer::new(&app.config, app.db.clone(), api::error::refuse);
    let mut tasks = vec![tokio::spawn(
        serve_grpc(
            app.clone(),
            grpc,
            shutdown.clone(),
            admission.clone(),
            readiness.clone(),
        )
        .await?,
    )];
    tasks.push(tokio::spawn(serve_http(
        app.clone(),
        http,
        http_scheme,
        shutdown.clone(),
        admission,
        readiness,
    )));
    if !kinds.kinds().is_empty() {
        let worker = Worker::new(app.queue.clone(), kinds).in_instance(&app.scratch.name());
        tasks.push(tokio::spawn(worker.run(shutdown.clone())));
    }
    tasks.push(tokio::spawn(crate::export::janitor::run(
        app.queue.clone(),
        app.storage.clone(),
        app.temp_dir(),
        Duration::from_millis(app.config.jobs.poll_millis.max(1000)),
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(crate::import::expiry::run(
        app.queue.clone(),
        app.storage.clone(),
        Duration::from_millis(app.config.jobs.poll_millis.max(1000)),
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(crate::jobs::retention::keep_for(
        app.db.clone(),
        app.storage.clone(),
        app.job_kinds(),
        Duration::from_secs(app.config.jobs.retention_days.saturating_mul(24 * 3600)),
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(crate::import::staged::keep_tidy(
        app.db.clone(),
        app.storage.clone(),
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(crate::storage::keep_tidy(
        app.storage.clone(),
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(crate::audit::keep_for(
        app.db.clone(),
        Duration::from_secs(app.config.audit.retention_days.saturating_mul(24 * 3600)),
        shutdown.clone(),
    )));
    tracing::info!(grpc = %grpc_addr, http = %http_addr, "ferry is serving");
    Ok(Running {
        grpc_addr,
        http_addr,
        shutdown,
        tasks,
    })
}

/// Builds the gRPC server; the returned future serves until `shutdown`.
async fn serve_grpc(
    app: App,
    incoming: tokio::sync::mpsc::Receiver<tls::Accepted>,
    shutdown: CancellationToken,
    admission: admission::AdmissionLayer,
    readiness: readiness::Readiness,
) -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use proto::account_service_server::AccountServiceServer;
    use proto::entity_service_server::EntityServiceServer;
    use proto::export_service_server::ExportServiceServer;
    use proto::import_service_server::ImportServiceServer;
    use proto::mapping_service_server::MappingServiceServer;

    let (health, health_service) = tonic_health::server::health_reporter();
    tokio::spawn(follow_readiness(health.clone(), readiness, shutdown.clone()));
    // Reflection describes every service the server answers (health included) and
    // the error details it sends, on both reflection versions grpcurl may ask.
    let described = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(proto::ERROR_DETAILS_DESCRIPTOR_SET)
    };
    let reflection_v1 = described().build_v1()?;
    let reflection_v1alpha = described().build_v1alpha()?;

    // Streams per HTTP/2 connection: hyper's default (200) would make a dashboard
    // multiplexing its watchers on one connection queue behind it; the server-wide
    // limits below (admission, watcher slots) are what protect the process.
    let streams = app
        .config
        .server
        .max_watchers
        .max(app.config.server.max_concurrent_calls);
    let router = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(streams))
        .layer(observe::ObserveLayer::new(
            app.metrics.clone(),
            api::error::restate,
        ))
        .layer(AuthLayer::new(app.authenticator(), api::error::deny))
        .layer(admission)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(EntityServiceServer::new(api::entity::EntityApi::new(
            app.db.clone(),
        )))
        .add_service(ExportServiceServer::new(api::export::ExportApi::new(
            app.exports(),
        )))
        .add_service(
            ImportServiceServer::new(api::import::ImportApi::new(app.imports()))
                .max_decoding_message_size(crate::import::service::MAX_CHUNK_BYTES + 64 * 1024),
        )
        .add_service(MappingServiceServer::new(api::mapping::MappingApi::new(
            app.db.clone(),
        )))
        .add_service(AccountServiceServer::new(api::account::AccountApi::new(
            app.config.clone(),
        )));

    let grace = Duration::from_secs(app.config.server.shutdown_grace_secs);
    Ok(async move {
        let stopping = shutdown.clone();
        let signal = async move {
            stopping.cancelled().await;
            set_health(&health, |_| false).await;
        };
        // The acceptor sets TCP_NODELAY: without it a GetExport loop was capped at
        // ~1,450 calls/s by delayed ACKs with the CPUs mostly idle.
        let incoming = tokio_stream::wrappers::ReceiverStream::new(incoming).map(Ok::<_, std::io::Error>);
        let serve = router.serve_with_incoming_shutdown(incoming, signal);
        tokio::pin!(serve);
        tokio::select! {
            result = &mut serve => if let Err(err) = result {
                tracing::error!(error = %err, "gRPC server failed");
            },
            _ = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!("calls still running after the shutdown grace period were dropped");
            }
        }
    })
}

/// The gRPC services and the dependencies each needs to serve: all need the
/// database; exports and imports need the file store too.
const SERVICE_NEEDS: [(&str, &[&str]); 5] = {
    use proto::account_service_server::AccountServiceServer;
    use proto::entity_service_server::EntityServiceServer;
    use proto::export_service_server::ExportServiceServer;
    use proto::import_service_server::ImportServiceServer;
    use proto::mapping_service_server::MappingServiceServer;
    use tonic::server::NamedService;
    [
        (
            <EntityServiceServer<api::entity::EntityApi> as NamedService>::NAME,
            &["database"],
        ),
        (
            <ExportServiceServer<api::export::ExportApi> as NamedService>::NAME,
            &["database", "storage"],
        ),
        (
            <ImportServiceServer<api::import::ImportApi> as NamedService>::NAME,
            &["database", "storage"],
        ),
        (
            <MappingServiceServer<api::mapping::MappingApi> as NamedService>::NAME,
            &["database"],
        ),
        (
            <AccountServiceServer<api::account::AccountApi> as NamedService>::NAME,
            &["database"],
        ),
    ]
};

/// Sets the overall status ("") and each service's, from whether a dependency is up.
async fn set_health(health: &tonic_health::server::HealthReporter, up: impl Fn(&str) -> bool) {
    use tonic_health::ServingStatus;
    let status = |serving: bool| {
        if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        }
    };
    let mut all = true;
    for (service, needs) in SERVICE_NEEDS {
        let serving = needs.iter().all(|dependency| up(dependency));
        all &= serving;
        health.set_service_status(service, status(serving)).await;
    }
    health.set_service_status("", status(all)).await;
}

/// Keeps gRPC health in step with the readiness probes until shutdown (which
/// sets everything NOT_SERVING itself).
async fn follow_readiness(
    health: tonic_health::server::HealthReporter,
    readiness: readiness::Readiness,
    shutdown: CancellationToken,
) {
    let mut changes = readiness.subscribe();
    loop {
        let snapshot = changes.borrow_and_update().clone();
        set_health(&health, |dependency| snapshot.is_up(dependency)).await;
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
    }
}

async fn serve_http(
    app: App,
    listener: tls::HttpIncoming,
    scheme: &'static str,
    shutdown: CancellationToken,
    admission: admission::AdmissionLayer,
    readiness: readiness::Readiness,
) {
    let hub_config = &app.config.hub;
    let sessions = Arc::new(crate::auth::sessions::Sessions::new(
        std::time::Duration::from_secs(hub_config.session_idle_minutes * 60),
        hub_config.max_sessions as usize,
    ));
    let rest_state = crate::rest::RestState {
        auth: Arc::new(app.authenticator()),
        exports: app.exports(),
        imports: app.imports(),
        mappings: crate::import::mappings::Mappings::new(app.db.clone()),
        signer: Arc::new(app.url_signer()),
        public_url: app.config.server.public_url.trim_end_matches('/').to_string(),
        scheme,
        cors_origins: app.config.http.origins(),
        admission,
        sessions,
    };
    let mut router = http::router(http::HttpState {
        db: app.db.clone(),
        metrics: app.metrics.clone(),
        storage: app.storage.clone(),
        readiness,
    })
    .merge(crate::rest::router(rest_state.clone()));
    match crate::hub::templates::Templates::new() {
        Ok(templates) => {
            router = router.merge(crate::hub::router(crate::hub::HubState {
                rest: rest_state,
                secure: scheme == "https",
                templates: Arc::new(templates),
                sign_ins: Arc::new(crate::hub::security::SignIns::new(hub_config.sign_ins_per_minute)),
            }))
        }
        Err(err) => tracing::error!(error = %err, "the hub's templates do not compile; /hub is not served"),
    }
    // The peer (its client certificate) reaches the REST auth as `ConnectInfo`.
    let served = axum::serve(listener, router.into_make_service_with_connect_info::<Peer>())
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(err) = served {
        tracing::error!(error = %err, "HTTP listener failed");
    }
}
