//! The admission webhooks, served by every replica over TLS:
//!
//! - `/validate/connect` (CONNECT pods/exec, pods/attach; UPDATE
//!   pods/ephemeralcontainers): always admits (unless an opt-in policy denies
//!   a namespace) and queues an interaction record ([`queue`] → [`record`]);
//!   the request path never waits on the API server.
//! - `/validate/eviction` (CREATE pods/eviction): refuses the eviction of a
//!   protected pod with 429 naming the logins, and records who asked
//!   ([`eviction`]).
//! - `/mutate/pods` and `/validate/pods` (UPDATE pods): the guard on our
//!   annotations. The mutating half writes `extended-by` from the
//!   authenticated user whenever the extension changes; the validating half
//!   refuses every other change to our keys and bad or oversized durations.
//!
//! Only the API server can reach them: every path carries a secret token
//! ([`token`]) that only the webhook configurations hold; anything else gets
//! 404 and records nothing.
//!
//! Certificates come from [`certs`] (a CA and serving cert in a Secret shared
//! by the replicas, caBundle patched into the webhook configurations, a
//! certificate served only once its CA is trusted there) or from mounted
//! files (cert-manager); [`tls`] swaps them in without a restart.

pub mod certs;
pub mod eviction;
pub mod interaction;
pub mod manifests;
pub mod metrics;
pub mod queue;
pub mod record;
pub mod review;
pub mod server;
pub mod tls;
pub mod token;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::Client;
use kube::api::{Api, PostParams};
use prometheus_client::registry::Registry;

use sessionguard_core::duration::{flag, positive_flag};

use crate::error::{Error, Result};
use crate::face::blocked::BlockedDrains;
use crate::io::cache::Cache;
use crate::io::metrics::Metrics as WriteMetrics;

/// Flags of the admission webhooks (all off unless `--webhook true`).
#[derive(Clone, Debug, Args)]
pub struct WebhookConfig {
    /// Serve the exec/attach/debug and annotation-guard admission webhooks.
    #[arg(long = "webhook", env = "SESSIONGUARD_WEBHOOK", default_value_t = false, action = clap::ArgAction::Set)]
    pub enabled: bool,

    /// HTTPS address of the webhooks.
    #[arg(
        long = "webhook-addr",
        env = "SESSIONGUARD_WEBHOOK_ADDR",
        default_value = "0.0.0.0:8443"
    )]
    pub addr: SocketAddr,

    /// Use tls.crt/tls.key from this directory (e.g. a cert-manager Secret
    /// volume), reloaded when they change; no Secret is generated and no
    /// caBundle is patched (cert-manager's CA injector does that).
    #[arg(long = "webhook-cert-dir", env = "SESSIONGUARD_WEBHOOK_CERT_DIR")]
    pub cert_dir: Option<PathBuf>,

    /// With --webhook-cert-dir: a file holding the secret path token the
    /// webhook configurations carry (`/s/<token>/validate/connect`), re-read
    /// every check (the previous value stays accepted). Without
    /// --webhook-cert-dir the token is generated into --webhook-secret and
    /// published by the controller.
    #[arg(
        long = "webhook-path-token-file",
        env = "SESSIONGUARD_WEBHOOK_PATH_TOKEN_FILE"
    )]
    pub path_token_file: Option<PathBuf>,

    /// Verify the API server's client certificate: a PEM file with the CA(s)
    /// that sign the certificate the cluster's AdmissionConfiguration gives
    /// the API server for this webhook (`kubeConfigFile`). A request without
    /// a certificate gets 404 and records nothing, like one without the path
    /// token (which is still required); one with a certificate the CA did not
    /// sign fails the TLS handshake. Read at start.
    #[arg(long = "webhook-client-ca", env = "SESSIONGUARD_WEBHOOK_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,

    /// Secret (in the controller's namespace) holding the generated CA and
    /// serving certificate, shared by all replicas.
    #[arg(
        long = "webhook-secret",
        env = "SESSIONGUARD_WEBHOOK_SECRET",
        default_value = "sessionguard-webhook-tls"
    )]
    pub secret: String,

    /// The webhook Service's name; the serving certificate covers
    /// NAME, NAME.NS, NAME.NS.svc and NAME.NS.svc.cluster.local.
    #[arg(
        long = "webhook-service",
        env = "SESSIONGUARD_WEBHOOK_SERVICE",
        default_value = "sessionguard-webhook"
    )]
    pub service: String,

    /// Extra subject alternative names (DNS names or IP addresses), comma-separated.
    #[arg(
        long = "webhook-extra-sans",
        env = "SESSIONGUARD_WEBHOOK_EXTRA_SANS",
        value_delimiter = ','
    )]
    pub extra_sans: Vec<String>,

    /// ValidatingWebhookConfiguration whose caBundle the controller keeps current.
    #[arg(
        long = "webhook-validating-config",
        env = "SESSIONGUARD_WEBHOOK_VALIDATING_CONFIG",
        default_value = "sessionguard"
    )]
    pub validating_config: String,

    /// MutatingWebhookConfiguration whose caBundle the controller keeps current.
    #[arg(
        long = "webhook-mutating-config",
        env = "SESSIONGUARD_WEBHOOK_MUTATING_CONFIG",
        default_value = "sessionguard"
    )]
    pub mutating_config: String,

    /// Lifetime of the generated serving certificate.
    #[arg(long = "webhook-cert-validity", env = "SESSIONGUARD_WEBHOOK_CERT_VALIDITY", value_parser = positive_flag, default_value = "90d")]
    pub cert_validity: Duration,

    /// Renew the generated serving certificate when less than this is left
    /// (same CA, so the caBundle does not change).
    #[arg(long = "webhook-cert-renew-before", env = "SESSIONGUARD_WEBHOOK_CERT_RENEW_BEFORE", value_parser = flag, default_value = "30d")]
    pub cert_renew_before: Duration,

    /// Lifetime of the generated CA. A new one is added to the caBundle
    /// when less than a serving certificate's life and renewal margin is left
    /// (at most half its life), and signs only once every webhook
    /// configuration trusts it.
    #[arg(long = "webhook-ca-validity", env = "SESSIONGUARD_WEBHOOK_CA_VALIDITY", value_parser = positive_flag, default_value = "1825d")]
    pub ca_validity: Duration,

    /// How often the Secret, the caBundles and mounted files are checked.
    #[arg(long = "webhook-cert-check-interval", env = "SESSIONGUARD_WEBHOOK_CERT_CHECK_INTERVAL", value_parser = positive_flag, default_value = "30s")]
    pub cert_check_interval: Duration,

    /// Opt-in policy: deny exec, attach and debug in these namespaces
    /// (comma-separated). Empty (the default) never denies.
    #[arg(
        long = "webhook-deny-namespaces",
        env = "SESSIONGUARD_WEBHOOK_DENY_NAMESPACES",
        value_delimiter = ','
    )]
    pub deny_namespaces: Vec<String>,

    /// Largest extension a user may request (the annotation's total value).
    /// The controller also caps evict-at with it, webhook or not, so a value
    /// written while the webhook was down (failurePolicy Ignore) or by a
    /// privileged user cannot go past it.
    #[arg(long = "webhook-max-extension", env = "SESSIONGUARD_WEBHOOK_MAX_EXTENSION", value_parser = flag, default_value = "7d")]
    pub max_extension: Duration,

    /// Users besides the controller itself (found with a SelfSubjectReview)
    /// that may change every sessionguard annotation (comma-separated).
    /// Their extensions still get `extended-by` from the mutating webhook.
    #[arg(
        long = "webhook-privileged-users",
        env = "SESSIONGUARD_WEBHOOK_PRIVILEGED_USERS",
        value_delimiter = ','
    )]
    pub privileged_users: Vec<String>,

    /// Interaction records waiting to be written; beyond this, records are
    /// dropped (counted in sessionguard_webhook_records_total{outcome="shed"})
    /// rather than slowing down exec.
    #[arg(
        long = "webhook-queue-capacity",
        env = "SESSIONGUARD_WEBHOOK_QUEUE_CAPACITY",
        default_value_t = 1024
    )]
    pub queue_capacity: usize,

    /// Parallel record writers per replica.
    /// Threads of the admission runtime, which serves the webhooks apart
    /// from watches and reconciles.
    #[arg(
        long = "webhook-threads",
        env = "SESSIONGUARD_WEBHOOK_THREADS",
        default_value_t = 1
    )]
    pub threads: usize,

    #[arg(
        long = "webhook-record-workers",
        env = "SESSIONGUARD_WEBHOOK_RECORD_WORKERS",
        default_value_t = 4
    )]
    pub record_workers: usize,
}

/// The username this process authenticates as: its own writes (the
/// interaction record, protection annotations) must pass the guard.
pub async fn whoami(client: &Client) -> Result<String> {
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = api
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .map_err(|source| Error::Kube {
            op: "self_subject_review",
            source,
        })?;
    review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .ok_or_else(|| Error::Webhook("SelfSubjectReview returned no username".into()))
}

/// The webhooks' metrics, in the process's registry when the webhooks are
/// on: registered before `/metrics` is served, which comes before anything
/// that waits on the API server (so an outage at start-up can be seen).
pub fn register(wh: &WebhookConfig, registry: &mut Registry) -> Option<metrics::Metrics> {
    wh.enabled.then(|| {
        let metrics = metrics::Metrics::default();
        metrics.register(registry);
        metrics
    })
}

/// What the webhooks need besides their own flags.
pub struct Shared<'a> {
    pub client: Client,
    /// Registered before `/metrics` is served (`register`).
    pub metrics: metrics::Metrics,
    pub identity: &'a str,
    /// The API user this controller runs as (`whoami`, asked once at start).
    pub user: &'a str,
    /// The controller's namespace: the Secret lives there.
    pub namespace: &'a str,
    /// Time from first interaction to eviction, written into new records.
    pub ttl: Duration,
    pub write_timeout: Duration,
    /// Counts the record writer's API calls with every other write.
    pub write_metrics: WriteMetrics,
    /// This replica's warm cache: the eviction webhook answers from it.
    pub cache: Arc<Cache>,
    /// Where the eviction webhook remembers refusals (the drain-blocked gauge).
    pub blocked: Arc<BlockedDrains>,
}

/// Starts the webhook server, the certificate loop and the record writers.
/// Called on every replica before leader election: admission must work on
/// standbys too, since the Service spreads requests over all of them.
pub async fn start(wh: &WebhookConfig, shared: Shared<'_>) -> Result<()> {
    let Shared {
        client,
        metrics,
        identity,
        user,
        namespace,
        ttl,
        write_timeout,
        write_metrics,
        cache,
        blocked: refusals,
    } = shared;
    if !wh.enabled {
        return Ok(());
    }
    rustls::crypto::ring::default_provider()
        .install_default()
        .ok();
    let myself = user.to_string();
    tracing::info!(user = %myself, "webhook: my own writes pass the annotation guard");
    let mut privileged = wh.privileged_users.clone();
    privileged.push(myself);
    let (queue, rx) = queue::Queue::new(wh.queue_capacity, metrics.clone());
    let writer = Arc::new(record::Writer {
        client: client.clone(),
        ttl,
        write_timeout,
        identity: identity.to_string(),
        metrics: metrics.clone(),
        write_metrics: write_metrics.clone(),
        cache: cache.clone(),
    });
    record::spawn_workers(writer, rx, wh.record_workers.max(1), metrics.clone());
    let (evictions, blocked) = eviction::Evictions::new(cache, refusals);
    eviction::spawn_events(
        client.clone(),
        blocked,
        identity.to_string(),
        write_timeout,
        write_metrics,
    );

    let resolver = Arc::new(tls::Resolver::default());
    let tokens = Arc::new(token::Tokens::default());
    let source = match (&wh.cert_dir, &wh.path_token_file) {
        (Some(dir), Some(token_file)) => certs::Source::Files {
            dir: dir.clone(),
            token_file: token_file.clone(),
        },
        // Serving without a token would let any pod that reaches the port
        // forge interaction records: refuse to start instead.
        (Some(_), None) => {
            return Err(Error::Webhook(
                "--webhook-cert-dir needs --webhook-path-token-file: the secret path token the webhook configurations carry (the chart renders both)".into(),
            ));
        }
        (None, _) => certs::Source::Secret {
            namespace: namespace.to_string(),
            sans: certs::sans(&wh.service, namespace, &wh.extra_sans),
        },
    };
    let manager = certs::Manager {
        client,
        source,
        resolver: resolver.clone(),
        tokens: tokens.clone(),
        config: wh.clone(),
        metrics: metrics.clone(),
        serving_until: Default::default(),
    };
    // The first certificate must be in place before the port answers.
    manager.tick().await?;
    tokio::spawn(manager.run());

    let ctx = Arc::new(review::Context {
        deny_namespaces: wh.deny_namespaces.clone(),
        privileged,
        max_extension: wh.max_extension,
        queue,
        metrics,
        evictions: Some(evictions),
    });
    let listener = sessionguard_http::bind(wh.addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving admission webhooks over TLS");
    let client_cas = wh.client_ca.as_deref().map(tls::client_roots).transpose()?;
    if let Some(ca) = &wh.client_ca {
        tracing::info!(ca = %ca.display(), "webhook: only callers with a client certificate this CA signed are heard");
    }
    let require_client_cert = client_cas.is_some();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(resolver, client_cas)?);
    let handler = Arc::new(server::Admission {
        ctx,
        tokens,
        require_client_cert,
    });
    serve_apart(listener, acceptor, handler, wh.threads.max(1))
}

/// Serves admission on a runtime of its own. On the main runtime a review
/// waited behind whatever held its workers: decoding a page of a large
/// initial list, a burst of reconciles, the record writers' JSON (the scale
/// run's client p99 was 100 ms while its median was 1 ms). Here nothing
/// shares the threads, and a review awaits nothing but its own socket: the
/// handler reads the cache's stores and pushes to a bounded queue, neither
/// of which waits on the API server or on a reconcile.
fn serve_apart(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    handler: Arc<server::Admission>,
    threads: usize,
) -> Result<()> {
    // A tokio socket belongs to the runtime that made it: hand the listener
    // over as a plain one (non-blocking, as tokio left it).
    let listener = listener.into_std()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("admission")
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("admission-runtime".into())
        .spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => {
                        sessionguard_http::serve("admission", listener, Some(acceptor), handler)
                            .await
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "admission: cannot adopt the listener; webhooks are not served")
                    }
                }
            })
        })?;
    Ok(())
}
