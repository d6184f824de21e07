//! Assembling the `serve` process, in an order where a failed start leaves nothing behind:
//! configuration and data are checked, the listeners are bound, then the store is opened (and,
//! when asked, created and seeded), the follower compiles every tenant, and only then are
//! requests served.
//!
//! Which store gets seeded with what:
//! - the default location ([`DEFAULT_STORE`], no `store` setting) when its store file does not
//!   exist yet: created and seeded with `--data FILE`, else with the bundled demo data (the quick
//!   start);
//! - an explicit location whose store does not exist: created empty, seeded from `--data` only;
//! - an existing store with no tenants: seeded from `--data` only;
//! - an existing store file that is empty or not a store: refused, never re-created.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::clock::Clock;
use crate::control::{follower, ControlPlane, TenantSet};
use crate::fleet;
use crate::model::file::DataFile;
use crate::server::metrics::FleetReport;
use crate::server::tls::Tls;
use crate::server::{self, Config, State, Surface};
use crate::store::embedded::FILE_NAME;

/// Where the embedded store lives when no `store` is configured.
pub const DEFAULT_STORE: &str = "portcullis-data";

/// The file, in the embedded store's directory, that receives a generated admin token.
pub const TOKEN_FILE: &str = "admin-token";

/// The file, in the embedded store's directory, that keeps the generated session signing key.
pub const SESSION_KEY_FILE: &str = "session-key.pem";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("store '{location}': {source}")]
    Store {
        location: String,
        source: crate::store::StoreError,
    },
    #[error(
        "store file '{path}' {problem}: refusing to start (restore it from a backup, or move it \
         away to start with a new, empty store)"
    )]
    NotAStore { path: String, problem: String },
    #[error("store '{0}' is a file, not a directory: give the directory that holds {FILE_NAME}")]
    NotADirectory(String),
    #[error("bundled demo data: {0}")]
    Demo(String),
    #[error("control plane: {0}")]
    Control(#[from] crate::control::ControlError),
    #[error(transparent)]
    Server(#[from] crate::server::StateError),
    #[error("TLS: {0}")]
    Tls(#[from] crate::server::tls::TlsError),
    #[error(
        "no admin token configured: a PostgreSQL store has no directory to keep a generated one \
         in; set admin_token_file (--admin-token-file, PORTCULLIS_ADMIN_TOKEN_FILE)"
    )]
    NoAdminToken,
    #[error("session keys: {0}")]
    SessionKeys(String),
    #[error("portcullis sidecar needs a NATS URL: --nats URL (PORTCULLIS_NATS, nats.url)")]
    NoNats,
    #[error(transparent)]
    Config(#[from] crate::server::config::ConfigError),
    #[error("no admin token configured and the OS random source failed: {0}")]
    Random(getrandom::Error),
    #[error("cannot write the generated admin token to '{path}': {source}")]
    TokenFile {
        path: String,
        source: std::io::Error,
    },
}

/// A random 128-bit token, hex-encoded, from the OS random source; an error (and no token) when
/// that source fails: a bearer secret is never derived from anything guessable.
pub fn random_token() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)?;
    Ok(crate::model::hex(&b))
}

/// A process ready to serve: its state (ready) and its bound listeners.
pub struct Started {
    pub state: Arc<State>,
    listener: TcpListener,
    admin: Option<TcpListener>,
    tls: Option<Arc<Tls>>,
    admin_tls: Option<Arc<Tls>>,
}

impl Started {
    /// The data-plane (and, without a separate one, management) address.
    pub fn addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// Starts everything `portcullis serve` runs, without serving yet. `data` is the data file of
/// `config.data`, already loaded; `admin_token` the configured token (`None`: generate one into
/// the embedded store's directory, see [`TOKEN_FILE`]).
pub async fn start(
    config: Config,
    data: Option<&DataFile>,
    admin_token: Option<String>,
) -> Result<Started, StartError> {
    let location = Location::of(&config);
    if admin_token.is_none() && location.dir().is_none() {
        return Err(StartError::NoAdminToken);
    }
    let registry = Arc::new(crate::engine::plugin_registry_with(config.plugins.limits()));
    // Tenant plugins compile on one background thread: a slow module never holds back the
    // other tenants (its tenant answers 503 not_ready, and /readyz 503, until it is compiled).
    if let Err(e) = registry.compile_in_background() {
        tracing::warn!(error = %e, "no background compile thread; plugins compile inline");
    }
    let mut state = State::new(config, Arc::clone(&registry), Clock::ticking())?;
    // Certificates and keys before any port: a bad file stops the start naming it.
    let tls = Tls::new("tls", &state.config.tls)?;
    let admin_tls = Tls::new("admin_tls", &state.config.admin_tls)?;

    // Listeners first: a port in use stops the start before any store is touched.
    let listener = bind(state.config.listen).await?;
    let admin = match state.config.admin_listen {
        Some(a) => Some(bind(a).await?),
        None => None,
    };

    let created = location.inspect()?;
    let opened = open_store(&location, created.is_some(), data).await;
    let (cp, token) = match opened {
        Ok(cp) => match issue_token(&location, admin_token) {
            Ok(t) => (cp, t),
            Err(e) => {
                drop(cp);
                remove_created(created.as_ref());
                return Err(e);
            }
        },
        Err(e) => {
            remove_created(created.as_ref());
            return Err(e);
        }
    };
    // Compiled plugins kept across restarts: a restart loads them instead of compiling.
    let disk_cache = state
        .config
        .plugins
        .disk_cache_dir
        .clone()
        .or_else(|| location.dir().map(|d| d.join("plugin-cache")));
    if let Some(host) = registry.plugin_host() {
        host.set_debug_tenants(&state.config.plugins.debug_log_tenants);
    }
    if let (Some(host), Some(dir)) = (registry.plugin_host(), disk_cache) {
        if let Err(e) = host.use_disk_cache(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "no disk cache for compiled plugins");
        }
    }
    match session_keys(&state.config, &location)? {
        Some(keys) => {
            state.tokens = crate::server::tokens::Tokens::with_sessions(
                &state.config.tokens,
                &keys.public_keys(),
            )
            .map_err(crate::server::StateError::from)?;
            let cfg = state.config.sign_in.clone();
            state.sign_in = Some(Arc::new(server::admin::identity::SignIn::new(keys, cfg)));
        }
        None => tracing::warn!(
            "sign-in is off: no session signing key (set sign_in.session_keys to sign in on a \
             PostgreSQL store)"
        ),
    }
    follower::start(Arc::clone(&cp), Arc::clone(&registry)).await;
    if let Some(options) = nats_options(&state.config, "portcullis-serve") {
        let n = &state.config.nats;
        let policy = fleet::publish::Policy {
            every_revisions: n.snapshot_every_revisions,
            every: std::time::Duration::from_secs(n.snapshot_every_seconds),
        };
        let status = Arc::new(fleet::publish::Status::default());
        state.sidecars = Some(Arc::new(fleet::follow::Directory::new(fleet::Options {
            name: "portcullis-serve-status".into(),
            ..options.clone()
        })));
        fleet::publish::spawn(
            Arc::clone(&cp),
            registry,
            options,
            policy,
            Arc::clone(&status),
        );
        state.fleet = Some(Box::new(move || publisher_report(&status)));
    }
    state.control = Some(cp);
    state.admin_token = Some(token);
    state.ready.store(true, Ordering::Release);
    Ok(Started {
        state: Arc::new(state),
        listener,
        admin,
        tls,
        admin_tls,
    })
}

/// The NATS connection settings of `config`, when it names a server.
fn nats_options(config: &Config, name: &str) -> Option<fleet::Options> {
    let url = config.nats.url.as_ref()?;
    Some(fleet::Options {
        url: url.0.clone(),
        name: name.to_string(),
        replicas: config.nats.replicas,
    })
}

/// Starts what `portcullis sidecar` runs: the data plane only, its tenants loaded from NATS
/// (snapshots, then the event stream) and kept current. Returns once the listener is bound:
/// `/healthz` answers at once, `/readyz` once every followed tenant is loaded.
pub async fn start_sidecar(config: Config) -> Result<Started, StartError> {
    let options = nats_options(&config, "portcullis-sidecar").ok_or(StartError::NoNats)?;
    let set = config.nats.tenant_set()?;
    let registry = Arc::new(crate::engine::plugin_registry_with(config.plugins.limits()));
    if let Err(e) = registry.compile_in_background() {
        tracing::warn!(error = %e, "no background compile thread; plugins compile inline");
    }
    if let (Some(host), Some(dir)) = (registry.plugin_host(), &config.plugins.disk_cache_dir) {
        if let Err(e) = host.use_disk_cache(dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "no disk cache for compiled plugins");
        }
    }
    let mut state = State::new(config, Arc::clone(&registry), Clock::ticking())?;
    // Session tokens are accepted where the sidecar is given the control plane's session keys
    // (only their public halves are used here).
    let pems = configured_session_keys(&state.config)?;
    if !pems.is_empty() {
        let keys =
            crate::identity::SessionKeys::from_pems(&pems).map_err(StartError::SessionKeys)?;
        state.tokens =
            crate::server::tokens::Tokens::with_sessions(&state.config.tokens, &keys.public_keys())
                .map_err(crate::server::StateError::from)?;
    }
    // A sidecar's data plane may serve TLS too (`tls`); it has no management listener.
    let tls = Tls::new("tls", &state.config.tls)?;
    let listener = bind(state.config.listen).await?;
    if set != TenantSet::All {
        state.following = Some(set.clone());
    }
    let status = Arc::new(fleet::follow::Status::default());
    let max = state.config.nats.max_staleness_seconds;
    if max > 0 {
        state.staleness = Some(crate::server::state::Staleness {
            last_contact_ms: Arc::clone(&status.last_contact_ms),
            max_ms: max.saturating_mul(1000),
        });
    }
    let reporting = Arc::clone(&status);
    state.fleet = Some(Box::new(move || sidecar_report(&reporting)));
    let id = sidecar_id(listener.local_addr().map_or(0, |a| a.port()));
    tracing::info!(id = %id, "sidecar status reported to NATS under this id");
    fleet::follow::spawn_reporter(options.clone(), id, set.describe(), Arc::clone(&status));
    let state = Arc::new(state);
    spawn_responder(options.clone(), set.clone(), Arc::clone(&state));
    let source = fleet::follow::Follow::new(options, set, Arc::clone(&status));
    tokio::spawn(async move {
        // The follower runs on (its own task) once the snapshots are installed.
        let _following = follower::start_from(source, registry).await;
    });
    let ready = Arc::clone(&state);
    tokio::spawn(async move {
        while !status.ready.load(Ordering::Acquire) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        ready.ready.store(true, Ordering::Release);
        tracing::info!(
            tenants = ready.registry.len(),
            "sidecar ready: every followed tenant is loaded"
        );
    });
    Ok(Started {
        state,
        listener,
        admin: None,
        tls,
        admin_tls: None,
    })
}

/// Serves data-plane requests that arrive by NATS request-reply (`portcullis.api.<tenant>.<endpoint>`,
/// same JSON as over HTTP; the reply carries `Portcullis-Status`, the HTTP status it would have
/// had). Requests about tenants this sidecar does not follow get no reply from it: the sidecars
/// that follow them answer.
fn spawn_responder(options: fleet::Options, set: TenantSet, state: Arc<State>) {
    use futures_util::StreamExt;
    tokio::spawn(async move {
        let (filter, group) = fleet::api_subscription(&set);
        let mut backoff = std::time::Duration::from_millis(200);
        loop {
            let sub = match fleet::Fleet::connect(&options).await {
                Ok(f) => f
                    .client
                    .queue_subscribe(filter.clone(), group.clone())
                    .await
                    .map(|s| (f.client, s))
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let (client, mut sub) = match sub {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "NATS request-reply not served yet; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
                    continue;
                }
            };
            tracing::info!(subject = %filter, queue = %group, "serving data-plane requests over NATS");
            while let Some(msg) = sub.next().await {
                let Some((tenant, endpoint)) = fleet::parse_api_subject(msg.subject.as_str())
                else {
                    continue;
                };
                if !set.contains(&tenant) {
                    continue;
                }
                let Some(reply) = msg.reply.clone() else {
                    continue;
                };
                let (state, client) = (Arc::clone(&state), client.clone());
                let endpoint = endpoint.to_string();
                tokio::spawn(async move {
                    let auth = msg
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("Authorization"))
                        .map(|v| v.as_str().to_string());
                    let (status, body) = match server::router::endpoint_named(&endpoint) {
                        None => {
                            let e = crate::server::error::ApiError::not_found(&endpoint);
                            (e.status.as_u16(), e.body())
                        }
                        Some(_) if body_tenant(&msg.payload).is_some_and(|t| t != tenant) => {
                            let e = crate::server::error::ApiError::bad_request(format!(
                                "the request names another tenant than its subject ('{tenant}')"
                            ));
                            (e.status.as_u16(), e.body())
                        }
                        Some(ep) => {
                            server::router::answer(&state, ep, auth.as_deref(), &msg.payload).await
                        }
                    };
                    let mut h = async_nats::HeaderMap::new();
                    h.insert("Portcullis-Status", status.to_string().as_str());
                    if let Err(e) = client.publish_with_headers(reply, h, body).await {
                        tracing::debug!(error = %e, "NATS reply not sent");
                    }
                });
            }
            tracing::warn!("NATS request subscription ended; subscribing again");
        }
    });
}

/// The `tenant` member of a data-plane request body, if it has one.
fn body_tenant(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct T {
        tenant: String,
    }
    serde_json::from_slice::<T>(body).ok().map(|t| t.tenant)
}

/// A sidecar's id in the fleet's status bucket: its host name (a Kubernetes pod's name) and port.
fn sidecar_id(port: u16) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "sidecar".into());
    format!("{host}-{port}")
}

/// The publisher's status as `/metrics` shows it.
fn publisher_report(s: &fleet::publish::Status) -> FleetReport {
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    FleetReport {
        connected: s.connected.load(Ordering::Acquire),
        last_contact_ms: n(&s.last_contact_ms),
        events: vec![("published", n(&s.events))],
        resyncs: 0,
        snapshots_published: n(&s.snapshots),
        tenants: Vec::new(),
    }
}

/// The sidecar's status as `/metrics` shows it.
fn sidecar_report(s: &fleet::follow::Status) -> FleetReport {
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let tenants = s
        .tenants
        .lock()
        .map(|m| {
            m.iter()
                .map(|(t, (seen, held))| (t.clone(), *seen, *held))
                .collect()
        })
        .unwrap_or_default();
    FleetReport {
        connected: s.connected.load(Ordering::Acquire),
        last_contact_ms: n(&s.last_contact_ms),
        events: vec![
            ("applied", n(&s.events)),
            ("received", n(&s.received)),
            ("corrupt", n(&s.corrupt)),
            ("duplicate", n(&s.duplicates)),
            ("gap", n(&s.gaps)),
            ("reset", n(&s.resets)),
        ],
        resyncs: n(&s.resyncs),
        snapshots_published: 0,
        tenants,
    }
}

/// [`start_sidecar`], then [`serve`].
pub async fn run_sidecar(config: Config) -> Result<(), RunError> {
    let started = start_sidecar(config).await?;
    serve(started).await.map_err(RunError::Serve)
}

/// Serves a started process until SIGINT/SIGTERM, then drains (`limits.drain_ms`).
pub async fn serve(started: Started) -> std::io::Result<()> {
    let Started {
        state,
        listener,
        admin,
        tls,
        admin_tls,
    } = started;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = move || {
        let mut rx = stopped.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut surface = Surface::All;
    let mut admin_task = None;
    if let Some(l) = admin {
        let tls_sha256 = admin_tls.as_ref().map(|t| t.fingerprint());
        tracing::info!(
            addr = %l.local_addr()?,
            tls = admin_tls.is_some(),
            tls_sha256,
            "management API listening"
        );
        surface = Surface::DataPlane;
        let serving = server::serve(
            Arc::clone(&state),
            l,
            Surface::Admin,
            admin_tls,
            until_stopped(),
        );
        admin_task = Some(tokio::spawn(serving));
    }
    let addr = listener.local_addr()?;
    // Signal handlers before the "listening" line (tests and supervisors act on that line).
    let signalled = server::shutdown_signal();
    tokio::spawn(async move {
        signalled.await;
        let _ = stop.send(true);
    });
    let tls_sha256 = tls.as_ref().map(|t| t.fingerprint());
    tracing::info!(
        %addr,
        tls = tls.is_some(),
        tls_sha256,
        tenants = state.registry.len(),
        "portcullis listening"
    );
    let result = server::serve(state, listener, surface, tls, until_stopped()).await;
    if let Some(t) = admin_task {
        let _ = t.await;
    }
    result
}

/// [`start`], then [`serve`].
pub async fn run(
    config: Config,
    data: Option<&DataFile>,
    admin_token: Option<String>,
) -> Result<(), RunError> {
    let started = start(config, data, admin_token).await?;
    serve(started).await.map_err(RunError::Serve)
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("server: {0}")]
    Serve(std::io::Error),
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// The configured store.
struct Location {
    /// As configured (a directory or a `postgres://` URL).
    text: String,
    /// No `store` setting: the quick start's location.
    default: bool,
}

/// What a start created, to remove when it fails before serving.
enum Created {
    Dir(PathBuf),
    File(PathBuf),
}

impl Location {
    fn of(config: &Config) -> Location {
        Location {
            text: config
                .store
                .clone()
                .unwrap_or_else(|| DEFAULT_STORE.to_string()),
            default: config.store.is_none(),
        }
    }

    /// The embedded store's directory; `None` for PostgreSQL.
    fn dir(&self) -> Option<&Path> {
        let pg = self.text.starts_with("postgres://") || self.text.starts_with("postgresql://");
        (!pg).then(|| Path::new(&self.text))
    }

    /// For an embedded store: refuses a store file that is empty or not a redb database, and
    /// says what opening it will create (`None`: nothing).
    fn inspect(&self) -> Result<Option<Created>, StartError> {
        let Some(dir) = self.dir() else {
            return Ok(None);
        };
        if dir.exists() && !dir.is_dir() {
            return Err(StartError::NotADirectory(self.text.clone()));
        }
        let file = dir.join(FILE_NAME);
        let refuse = |problem: String| StartError::NotAStore {
            path: file.display().to_string(),
            problem,
        };
        match std::fs::metadata(&file) {
            Ok(m) if m.is_file() && m.len() == 0 => Err(refuse("is empty (0 bytes)".into())),
            Ok(m) if m.is_file() => {
                let mut magic = [0u8; 4];
                let read = std::fs::File::open(&file)
                    .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic));
                match read {
                    Ok(()) if &magic == b"redb" => Ok(None),
                    Ok(()) => Err(refuse("is not a Portcullis store (no redb header)".into())),
                    Err(e) => Err(refuse(format!("cannot be read ({e})"))),
                }
            }
            Ok(_) => Err(refuse("is not a regular file".into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Some(if dir.exists() {
                Created::File(file)
            } else {
                Created::Dir(dir.to_path_buf())
            })),
            Err(e) => Err(refuse(format!("cannot be read ({e})"))),
        }
    }
}

/// Opens the store and seeds it when it holds no tenants: from `data`, else with the demo data
/// when the quick start's store was just created.
async fn open_store(
    location: &Location,
    created: bool,
    data: Option<&DataFile>,
) -> Result<Arc<ControlPlane>, StartError> {
    // For messages and logs: a PostgreSQL URL without its password.
    let shown = crate::store::postgres::redact(&location.text);
    let at = shown.as_str();
    let quick_start = created && location.default && data.is_none();
    let demo;
    let seed = if quick_start {
        tracing::warn!(store = %at, "creating store {at} and seeding the bundled demo data");
        demo = crate::model::file::load_str(crate::engine::DEMO_DATA)
            .map_err(|e| StartError::Demo(e.to_string()))?;
        Some(&demo)
    } else {
        match (created, data) {
            (true, Some(_)) => tracing::warn!(store = %at, "creating a new store at {at}"),
            (true, None) => tracing::warn!(store = %at, "creating a new, empty store at {at}"),
            (false, _) => {}
        }
        data
    };
    let store = crate::store::open(&location.text)
        .await
        .map_err(|source| StartError::Store {
            // An embedded store's problems are its file's: name the file.
            location: match location.dir() {
                Some(d) => d.join(FILE_NAME).display().to_string(),
                None => at.to_string(),
            },
            source,
        })?;
    let cp = Arc::new(ControlPlane::open(store).await?);
    let engine = cp.store_engine();
    if !cp.tenant_ids().is_empty() {
        if data.is_some() {
            tracing::warn!(store = %at, "store already holds tenants; --data ignored");
        }
        tracing::info!(tenants = cp.tenant_ids().len(), store = %at, engine, "store opened");
    } else if let Some(seed) = seed {
        let imported = cp.seed(seed, "import").await?;
        tracing::info!(tenants = imported.len(), store = %at, engine, "store seeded from data file");
    } else {
        tracing::warn!(
            store = %at,
            engine,
            "the store holds no tenants: create them through the management API, or start \
             once with --data FILE"
        );
    }
    Ok(cp)
}

/// The management API token: the configured one, or a generated one written to a 0600 file in
/// the embedded store's directory. Its path is logged, never the token; the token itself is
/// printed to standard error only when that is a terminal.
fn issue_token(location: &Location, configured: Option<String>) -> Result<String, StartError> {
    if let Some(t) = configured {
        return Ok(t);
    }
    let dir = location.dir().ok_or(StartError::NoAdminToken)?;
    let token = random_token().map_err(StartError::Random)?;
    let path = dir.join(TOKEN_FILE);
    write_private(&path, &token).map_err(|source| StartError::TokenFile {
        path: path.display().to_string(),
        source,
    })?;
    tracing::warn!(
        file = %path.display(),
        "no admin token configured (admin_token_file, PORTCULLIS_ADMIN_TOKEN_FILE); generated \
         one for this run into the file"
    );
    let mut err = std::io::stderr();
    if std::io::IsTerminal::is_terminal(&err) {
        let _ = writeln!(err, "management API token for this run: {token}");
    }
    Ok(token)
}

/// The PEM texts of `sign_in.session_keys` (each file must be private: mode 600).
fn configured_session_keys(config: &Config) -> Result<Vec<(Option<String>, String)>, StartError> {
    let err = StartError::SessionKeys;
    let mut pems = Vec::new();
    for k in &config.sign_in.session_keys {
        crate::server::config::check_private_file(&k.private_key_file)
            .map_err(|e| err(e.to_string()))?;
        let pem = std::fs::read_to_string(&k.private_key_file)
            .map_err(|e| err(format!("{}: {e}", k.private_key_file.display())))?;
        pems.push((k.kid.clone(), pem));
    }
    Ok(pems)
}

/// The session signing keys: the configured files, else the one kept in the embedded store's
/// directory (generated on first start). `None` on PostgreSQL without configured keys.
fn session_keys(
    config: &Config,
    location: &Location,
) -> Result<Option<crate::identity::SessionKeys>, StartError> {
    let err = StartError::SessionKeys;
    let mut pems = configured_session_keys(config)?;
    if pems.is_empty() {
        let Some(dir) = location.dir() else {
            return Ok(None);
        };
        let path = dir.join(SESSION_KEY_FILE);
        let pem = match std::fs::read_to_string(&path) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let pem = crate::identity::SessionKeys::generate_pem().map_err(err)?;
                write_private(&path, pem.trim_end())
                    .map_err(|e| err(format!("{}: {e}", path.display())))?;
                tracing::info!(file = %path.display(), "generated a session signing key");
                pem
            }
            Err(e) => return Err(err(format!("{}: {e}", path.display()))),
        };
        pems.push((None, pem));
    }
    crate::identity::SessionKeys::from_pems(&pems)
        .map(Some)
        .map_err(err)
}

/// Writes `token` and a newline to `path`, readable by its owner only, replacing the file
/// atomically.
fn write_private(path: &Path, token: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(&tmp)?;
    f.write_all(token.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Removes what a failed start created (best effort; the error being reported matters more).
fn remove_created(created: Option<&Created>) {
    let removed = match created {
        Some(Created::Dir(d)) => std::fs::remove_dir_all(d).map(|()| d),
        Some(Created::File(f)) => std::fs::remove_file(f).map(|()| f),
        None => return,
    };
    match removed {
        Ok(p) => tracing::info!(path = %p.display(), "start failed; removed the store it created"),
        Err(e) => tracing::warn!(error = %e, "start failed; could not remove the store it created"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn at(dir: &Path) -> Location {
        Location {
            text: dir.display().to_string(),
            default: false,
        }
    }

    #[test]
    fn store_files_that_are_not_stores_are_refused() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(
            at(&d.path().join("new")).inspect(),
            Ok(Some(Created::Dir(_)))
        ));
        assert!(matches!(at(d.path()).inspect(), Ok(Some(Created::File(_)))));
        let file = d.path().join(FILE_NAME);
        std::fs::write(&file, b"").unwrap();
        let e = at(d.path()).inspect().err().unwrap().to_string();
        assert!(e.contains("is empty") && e.contains(FILE_NAME), "{e}");
        std::fs::write(&file, b"hello").unwrap();
        let e = at(d.path()).inspect().err().unwrap().to_string();
        assert!(e.contains("not a Portcullis store"), "{e}");
        std::fs::write(&file, b"redb\x1a\x0a").unwrap();
        assert!(matches!(at(d.path()).inspect(), Ok(None)));
        let e = at(&file).inspect().err().unwrap().to_string();
        assert!(e.contains("is a file, not a directory"), "{e}");
        let pg = Location {
            text: "postgres://u@h/db".into(),
            default: false,
        };
        assert!(pg.dir().is_none() && matches!(pg.inspect(), Ok(None)));
    }

    #[cfg(unix)]
    #[test]
    fn a_generated_token_is_written_for_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let t = issue_token(&at(d.path()), None).unwrap();
        let path = d.path().join(TOKEN_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(crate::server::config::read_token_file(&path).unwrap(), t);
        let again = issue_token(&at(d.path()), None).unwrap();
        assert_ne!(t, again, "a new token every run");
        let pg = Location {
            text: "postgres://u@h/db".into(),
            default: false,
        };
        assert!(matches!(
            issue_token(&pg, None),
            Err(StartError::NoAdminToken)
        ));
    }
}
