//! Server configuration: defaults < config file (YAML or JSON) < `PORTCULLIS_*` environment <
//! command-line flags.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8180";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Data-plane (and management API) listen address.
    pub listen: SocketAddr,
    /// Data file that seeds a store holding no tenants yet.
    pub data: Option<PathBuf>,
    /// Durable store: a directory (embedded engine) or `postgres://…`; `portcullis-data` (with
    /// the bundled demo data on its first start) when absent.
    pub store: Option<String>,
    /// Serve the management API on this separate address (and not on `listen`).
    pub admin_listen: Option<SocketAddr>,
    /// Bearer token of the management API, inline. Prefer `admin_token_file`.
    pub admin_token: Option<Secret>,
    /// File holding the management API's bearer token (one line; not readable or writable by
    /// group or others). With neither this nor `admin_token`, `serve` generates a token.
    pub admin_token_file: Option<PathBuf>,
    /// TLS on `listen` (plain HTTP when no certificate is given). See `server::tls`.
    pub tls: TlsConfig,
    /// TLS on `admin_listen` (plain HTTP when no certificate is given).
    pub admin_tls: TlsConfig,
    pub limits: ServerLimits,
    /// Who may use the data plane, and how much it shows (all off: a loopback sidecar).
    pub data_plane: DataPlaneConfig,
    pub metrics: MetricsConfig,
    /// Token identities (JWT): keys and claim names. See `server::tokens`.
    pub tokens: TokensConfig,
    /// Forward-auth route tables for gateways. See `server::forward`.
    pub forward_auth: ForwardAuthConfig,
    /// Limits of tenant plugin calls (`plugins/ABI.md`).
    pub plugins: PluginConfig,
    /// Sign-in: session signing keys, throttling, invitations. See `identity`.
    pub sign_in: SignInConfig,
    /// NATS JetStream: `serve` publishes changes and snapshots there, `sidecar` follows them.
    pub nats: NatsConfig,
    /// Log filter (`tracing` env-filter syntax), e.g. `info` or `portcullis=debug`.
    pub log: String,
    /// Log format: `text` or `json`.
    pub log_format: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerLimits {
    /// Largest request body accepted (bytes); larger gets 413.
    pub max_body_bytes: usize,
    /// Most checks in one `/v1/check/batch`; more gets 413.
    pub max_batch: usize,
    /// Most resources in one `/v1/filter`; more gets 413.
    pub max_filter: usize,
    /// Time allowed to receive a request's headers (slowloris guard), milliseconds.
    pub header_timeout_ms: u64,
    /// Time allowed to receive a request's body, milliseconds.
    pub body_timeout_ms: u64,
    /// Longest wait for `min_revision` before answering 503, milliseconds.
    pub max_revision_wait_ms: u64,
    /// How long shutdown waits for in-flight requests, milliseconds.
    pub drain_ms: u64,
    /// Most connections that have sent a request (the serving limit); at the limit a new
    /// connection's first request is answered 503 and the connection closed.
    pub max_connections: usize,
    /// Most connections that have not sent a request yet; beyond it the oldest is closed.
    pub max_pending_connections: usize,
    /// Time from accept to a connection's first request (first byte / HTTP/2 preface
    /// timeout), milliseconds; a connection that has sent nothing by then is closed.
    pub first_request_timeout_ms: u64,
    /// A connection with no request in flight for this long is closed (HTTP/1.1 keep-alive,
    /// HTTP/2 PING-only clients), milliseconds.
    pub idle_timeout_ms: u64,
}

/// TLS of one listener: on when `cert_file` and `key_file` are given.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Certificate chain, PEM (the server's certificate first, then intermediates).
    pub cert_file: Option<PathBuf>,
    /// Private key of that certificate, PEM (PKCS#8, PKCS#1 or SEC1); mode 600.
    pub key_file: Option<PathBuf>,
    /// CA certificates (PEM) that sign accepted client certificates (mutual TLS).
    pub client_ca_file: Option<PathBuf>,
    /// Refuse handshakes without a client certificate signed by `client_ca_file`. Without it, a
    /// client certificate is verified when one is presented, and optional.
    pub require_client_cert: bool,
    /// How often `cert_file` and `key_file` are checked for changes (size, mtime), milliseconds;
    /// 0: never (read at start only).
    pub reload_interval_ms: u64,
}

impl Default for TlsConfig {
    fn default() -> TlsConfig {
        TlsConfig {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            require_client_cert: false,
            reload_interval_ms: 5_000,
        }
    }
}

impl TlsConfig {
    /// Is TLS on?
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }

    /// Checks the settings of the block called `name` (`tls`, `admin_tls`) go together.
    fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.cert_file.is_some() != self.key_file.is_some() {
            return bad(format!(
                "{name}.cert_file and {name}.key_file go together: give both or neither"
            ));
        }
        if !self.enabled() && (self.client_ca_file.is_some() || self.require_client_cert) {
            return bad(format!(
                "{name}.client_ca_file and {name}.require_client_cert need {name}.cert_file and \
                 {name}.key_file"
            ));
        }
        if self.require_client_cert && self.client_ca_file.is_none() {
            return bad(format!(
                "{name}.require_client_cert needs {name}.client_ca_file (the CA that signs \
                 client certificates)"
            ));
        }
        Ok(())
    }
}

/// Plugin runtime limits; defaults are `plugin::Limits::default()`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginConfig {
    /// Wall-clock deadline of one call, milliseconds (epoch ticks of 1 ms).
    pub deadline_ms: u64,
    /// Fuel (roughly, wasm instructions) per call.
    pub fuel: u64,
    /// Linear memory cap per instance, bytes.
    pub max_memory_bytes: usize,
    /// Largest module accepted, bytes (at most 4 MiB, the store's cap).
    pub max_module_bytes: usize,
    /// Idle live instances kept per plugin version (0: a fresh instance per call).
    pub idle_per_plugin: usize,
    /// Live instances in the whole process (pooling allocator slots).
    pub max_instances: u32,
    /// Plugin time one data-plane request may spend in all, milliseconds; then its remaining
    /// plugin conditions deny with `plugin_budget_exhausted`.
    pub request_budget_ms: u64,
    /// Requests of one tenant running plugin conditions at once; 0 (the default): half the
    /// cores, at least 1. Excess waits up to the request budget, then 503 `plugin_busy`.
    pub max_concurrent_per_tenant: usize,
    /// Requests running plugin conditions at once in the process (excess: 503 `plugin_busy`).
    pub max_concurrent: usize,
    /// Consecutive limit hits that open a plugin version's circuit breaker (0: never).
    pub breaker_failures: u32,
    /// Window those hits must fall in, milliseconds.
    pub breaker_window_ms: u64,
    /// How long an open breaker denies (`plugin_unavailable`) before a probe, milliseconds.
    pub breaker_cooldown_ms: u64,
    /// Plugins one tenant may hold, for the upload check (`PluginHost::check_plugin_count`).
    pub max_per_tenant: usize,
    /// Compile budget: largest code section (sum of function bodies), bytes.
    pub max_code_bytes: usize,
    /// Compile budget: largest function body, bytes.
    pub max_function_bytes: usize,
    /// Compile budget: most functions in one module.
    pub max_functions: usize,
    /// Compiled modules kept by content hash (shared by all tenants and names).
    pub module_cache: usize,
    /// Directory keeping compiled modules across restarts; none: `<store>/plugin-cache` for
    /// the embedded store, no disk cache with PostgreSQL.
    pub disk_cache_dir: Option<PathBuf>,
    /// Tenants whose plugins' `portcullis.debug_log` lines are logged (INFO, target
    /// `portcullis::plugin::debug`, at most 10 lines a second per plugin version); none by
    /// default.
    pub debug_log_tenants: Vec<String>,
}

impl Default for PluginConfig {
    fn default() -> PluginConfig {
        let l = crate::plugin::Limits::default();
        PluginConfig {
            deadline_ms: l.deadline().as_millis() as u64,
            fuel: l.fuel,
            max_memory_bytes: l.max_memory_bytes,
            max_module_bytes: l.max_module_bytes,
            idle_per_plugin: l.idle_per_plugin,
            max_instances: l.max_instances,
            request_budget_ms: l.request_budget.as_millis() as u64,
            max_concurrent_per_tenant: 0,
            max_concurrent: l.max_concurrent,
            breaker_failures: l.breaker_failures,
            breaker_window_ms: l.breaker_window.as_millis() as u64,
            breaker_cooldown_ms: l.breaker_cooldown.as_millis() as u64,
            max_per_tenant: l.max_per_tenant,
            max_code_bytes: l.max_code_bytes,
            max_function_bytes: l.max_function_bytes,
            max_functions: l.max_functions,
            module_cache: l.module_cache,
            disk_cache_dir: None,
            debug_log_tenants: Vec::new(),
        }
    }
}

impl PluginConfig {
    /// The runtime limits these settings describe.
    pub fn limits(&self) -> crate::plugin::Limits {
        let d = crate::plugin::Limits::default();
        crate::plugin::Limits {
            deadline_ticks: (self.deadline_ms.max(1) as u128 / d.tick.as_millis().max(1)) as u64,
            fuel: self.fuel,
            max_memory_bytes: self.max_memory_bytes,
            max_module_bytes: self.max_module_bytes,
            idle_per_plugin: self.idle_per_plugin,
            max_instances: self.max_instances,
            request_budget: std::time::Duration::from_millis(self.request_budget_ms),
            max_concurrent_per_tenant: match self.max_concurrent_per_tenant {
                0 => d.max_concurrent_per_tenant,
                n => n,
            },
            max_concurrent: self.max_concurrent,
            breaker_failures: self.breaker_failures,
            breaker_window: std::time::Duration::from_millis(self.breaker_window_ms),
            breaker_cooldown: std::time::Duration::from_millis(self.breaker_cooldown_ms),
            max_per_tenant: self.max_per_tenant,
            max_code_bytes: self.max_code_bytes,
            max_function_bytes: self.max_function_bytes,
            max_functions: self.max_functions,
            module_cache: self.module_cache,
            ..d
        }
    }
}

/// NATS JetStream (`src/fleet`): where it is, how often snapshots are published, which tenants a
/// sidecar follows.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server URL (`nats://host:4222`; several: comma-separated). `serve` publishes there when
    /// set; `sidecar` needs it.
    pub url: Option<Secret>,
    /// A changed tenant gets a new snapshot after this many revisions…
    pub snapshot_every_revisions: u64,
    /// …or once its oldest change without a snapshot is this old, seconds.
    pub snapshot_every_seconds: u64,
    /// Replicas of the stream and buckets when Portcullis creates them (a clustered NATS: 3).
    pub replicas: usize,
    /// Sidecar: follow only these tenants (others: 421 `tenant_not_here`).
    pub tenants: Vec<String>,
    /// Sidecar: follow only shard `INDEX/COUNT` of the tenants (FNV-1a of the id, modulo COUNT).
    pub tenant_shard: Option<String>,
    /// Sidecar: with no contact with NATS for longer than this, refuse to decide (503 `stale`)
    /// instead of serving what it holds; 0: never (keep serving the last snapshots).
    pub max_staleness_seconds: u64,
}

impl Default for NatsConfig {
    fn default() -> NatsConfig {
        NatsConfig {
            url: None,
            snapshot_every_revisions: 100,
            snapshot_every_seconds: 60,
            replicas: 1,
            tenants: Vec::new(),
            tenant_shard: None,
            max_staleness_seconds: 0,
        }
    }
}

impl NatsConfig {
    /// The tenants a sidecar follows.
    pub fn tenant_set(&self) -> Result<crate::control::TenantSet, ConfigError> {
        use crate::control::TenantSet;
        match (&self.tenant_shard, self.tenants.is_empty()) {
            (Some(_), false) => Err(ConfigError::Invalid(
                "nats.tenants (--tenants) and nats.tenant_shard (--tenant-shard) are both set: give one".into(),
            )),
            (Some(s), true) => TenantSet::shard(s).map_err(ConfigError::Invalid),
            (None, false) => TenantSet::only(&self.tenants.join(",")).map_err(ConfigError::Invalid),
            (None, true) => Ok(TenantSet::All),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Export per-tenant series (revision, snapshot age). Off by default: cardinality.
    pub per_tenant: bool,
    /// When set, `/metrics` answers only `Authorization: Bearer <the file's token>` (401
    /// otherwise). Same file rules as `admin_token_file`.
    pub bearer_token_file: Option<PathBuf>,
    /// Serve `/metrics` on the `admin_listen` listener only (404 on `listen`); needs
    /// `admin_listen`.
    pub admin_listener_only: bool,
}

/// Exposure of the data plane (`/v1/check`, `/v1/check/batch`, `/v1/filter`, `/v1/scopes`,
/// `/v1/explain`, forward-auth). Every option is off by default.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DataPlaneConfig {
    /// Refuse a bare `subject`: every question must carry a `token` (401 `unauthenticated`).
    pub require_token: bool,
    /// Caller keys bound to tenants. With any key set, every data-plane question must present
    /// `Authorization: Bearer <key>` (401 `unauthenticated`) and may only name its tenants
    /// (403 `forbidden`).
    pub api_keys: Vec<ApiKeyConfig>,
    /// `/v1/explain`: `on`, `off` (404 `not_found`) or `token` (only with a `token` or an API
    /// key; 403 `forbidden` otherwise).
    pub explain: ExplainMode,
    /// Host names (`name` any port, or `name:port`) a request's `Host` / `:authority` must
    /// match, case-insensitive; any host when empty. Not checked: `/healthz`, `/readyz`, and
    /// the `admin_listen` listener. Otherwise 421 `host_not_allowed` (403 on forward-auth).
    pub allowed_hosts: Vec<String>,
}

/// One data-plane API key.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// SHA-256 of the key, hex (e.g. `printf %s "$KEY" | sha256sum`).
    pub sha256: String,
    /// Tenants this key may ask about (at least one).
    pub tenants: Vec<String>,
}

/// Who may call `/v1/explain`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ExplainMode {
    #[default]
    On,
    Off,
    Token,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8180))),
            data: None,
            store: None,
            admin_listen: None,
            admin_token: None,
            admin_token_file: None,
            tls: TlsConfig::default(),
            admin_tls: TlsConfig::default(),
            limits: ServerLimits::default(),
            data_plane: DataPlaneConfig::default(),
            metrics: MetricsConfig::default(),
            tokens: TokensConfig::default(),
            forward_auth: ForwardAuthConfig::default(),
            plugins: PluginConfig::default(),
            sign_in: SignInConfig::default(),
            nats: NatsConfig::default(),
            log: "info".to_string(),
            log_format: "text".to_string(),
        }
    }
}

/// Sign-in settings (`POST /v1/tenants/{t}/sessions`, invitations).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignInConfig {
    /// Session signing keys, Ed25519 PKCS#8 PEM files; the first signs, all verify. Without
    /// any, `serve` keeps one generated key in the embedded store's directory
    /// (`session-key.pem`); on PostgreSQL without keys, sign-in is off (503).
    pub session_keys: Vec<SessionKeyConfig>,
    /// Failed sign-ins per account (email or card) within the window before 429.
    pub max_failures_per_account: u32,
    /// Failed sign-ins per client address within the window before 429.
    pub max_failures_per_client: u32,
    /// The throttling window, seconds.
    pub failure_window_seconds: u64,
    /// How long an invitation can be accepted, hours.
    pub invitation_ttl_hours: u32,
    /// Invitations are also POSTed (JSON) to this `http://` URL; none: only the create call's
    /// answer carries them.
    pub invitation_webhook: Option<String>,
    /// The platform tenant: its owner and administrators are platform administrators — on
    /// every other tenant and on the platform-wide endpoints, as the bootstrap token.
    pub platform_tenant: Option<String>,
}

impl Default for SignInConfig {
    fn default() -> SignInConfig {
        SignInConfig {
            session_keys: Vec::new(),
            max_failures_per_account: 5,
            max_failures_per_client: 20,
            failure_window_seconds: 900,
            invitation_ttl_hours: 72,
            invitation_webhook: None,
            platform_tenant: None,
        }
    }
}

/// One session signing key.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SessionKeyConfig {
    /// Key id in token headers and the JWK set; derived from the key when absent.
    #[serde(default)]
    pub kid: Option<String>,
    /// Ed25519 private key, PKCS#8 PEM (`openssl genpkey -algorithm ed25519`).
    pub private_key_file: PathBuf,
}

/// How JWTs are verified (`Authorization: Bearer`, the `"token"` field of data-plane requests).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    /// Claim holding the user id.
    pub subject_claim: String,
    /// Claim holding the tenant id.
    pub tenant_claim: String,
    /// When set, the `iss` claim must equal it.
    pub issuer: Option<String>,
    /// When set, the `aud` claim (a string or a list) must contain it.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, seconds.
    pub leeway_seconds: u64,
    /// Longest token accepted, bytes.
    pub max_token_bytes: usize,
    /// Longest token lifetime accepted, seconds: a token whose `exp` lies further than this
    /// beyond now (plus leeway) or beyond its `iat` is refused (401).
    pub max_lifetime_seconds: u64,
    /// Verification keys. A token's `kid` header selects one; without `kid`, the single key of
    /// the token's algorithm is used.
    pub keys: Vec<KeyConfig>,
}

impl Default for TokensConfig {
    fn default() -> TokensConfig {
        TokensConfig {
            subject_claim: "sub".into(),
            tenant_claim: "tenant".into(),
            issuer: None,
            audience: None,
            leeway_seconds: 30,
            max_token_bytes: 8 * 1024,
            max_lifetime_seconds: 86_400 * 30,
            keys: Vec::new(),
        }
    }
}

/// One verification key. Exactly one of `secret`, `secret_file` (HS256) or `public_key`,
/// `public_key_file` (RS256, EdDSA; PEM) is given.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Key id, matched against the token header's `kid`.
    #[serde(default)]
    pub kid: Option<String>,
    /// `HS256`, `RS256` or `EdDSA` (Ed25519).
    pub alg: String,
    /// HS256 shared secret (at least 32 bytes), inline.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// HS256 shared secret read from a file (surrounding whitespace ignored).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// RS256/EdDSA public key, PEM (`PUBLIC KEY`, or `RSA PUBLIC KEY` for RS256), inline.
    #[serde(default)]
    pub public_key: Option<String>,
    /// RS256/EdDSA public key, PEM, read from a file.
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
    /// Tenants this key may sign tokens for; any tenant when empty.
    #[serde(default)]
    pub tenants: Vec<String>,
}

/// A secret that never appears in `Debug` output nor when serialized.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// Forward-auth: the default route table (`/v1/forward-auth`) and named ones
/// (`/v1/forward-auth@NAME`).
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardAuthConfig {
    pub identity: IdentityConfig,
    pub routes: Vec<RouteConfig>,
    pub tables: BTreeMap<String, RouteTableConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RouteTableConfig {
    pub identity: IdentityConfig,
    pub routes: Vec<RouteConfig>,
}

/// Where a forward-auth request's identity comes from.
#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum IdentityConfig {
    /// `Authorization: Bearer <JWT>`, verified with `tokens`.
    #[default]
    Bearer,
    /// A header set by the gateway after its own authentication, holding the user id. The
    /// gateway must remove this header from client requests.
    Header(String),
}

/// One route: a request matching `methods` and `path` is decided as `action` on `resource` in
/// `tenant`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// HTTP methods; any method when empty or `["*"]`. `GET` includes `HEAD`.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Path pattern: `/literal/{param}/...`, optionally ending in `/*` (any rest).
    pub path: String,
    pub tenant: SourceConfig,
    pub action: SourceConfig,
    pub resource: SourceConfig,
}

/// A value taken from the request: a literal (`femo`), a path parameter (`"{asset}"` or
/// `{param: asset}`), a header (`{header: X-Tenant}`), or the token's tenant claim
/// (`{claim: tenant}`, tenant only).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum SourceConfig {
    Text(String),
    Tagged(TaggedSource),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TaggedSource {
    Value(String),
    Param(String),
    Header(String),
    Claim(String),
}

impl Default for ServerLimits {
    fn default() -> ServerLimits {
        ServerLimits {
            max_body_bytes: 1024 * 1024,
            max_batch: 1_000,
            max_filter: 10_000,
            header_timeout_ms: 5_000,
            body_timeout_ms: 10_000,
            max_revision_wait_ms: 2_000,
            drain_ms: 10_000,
            max_connections: 10_000,
            max_pending_connections: 1_024,
            first_request_timeout_ms: 5_000,
            idle_timeout_ms: 120_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file '{path}': {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("config file '{path}': {message}")]
    Parse { path: String, message: String },
    #[error("invalid setting: {0}")]
    Invalid(String),
    #[error("token file '{path}': {message}")]
    TokenFile { path: String, message: String },
}

impl Config {
    /// Reads a config file (YAML or JSON).
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses config text (YAML or JSON); `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e
                .to_string()
                .lines()
                .next()
                .unwrap_or("invalid")
                .to_string(),
        })
    }

    /// The management API token this configuration gives: `admin_token`, or the content of
    /// `admin_token_file` (see [`read_token_file`]); `None` when neither is set.
    pub fn resolve_admin_token(&self) -> Result<Option<String>, ConfigError> {
        match (&self.admin_token, &self.admin_token_file) {
            (Some(t), None) => Ok(Some(t.0.clone())),
            (None, Some(p)) => read_token_file(p).map(Some),
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err(ConfigError::Invalid(
                "admin_token and admin_token_file are both set: give one".into(),
            )),
        }
    }

    /// Checks values that would make the server misbehave.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let positive = [
            ("limits.max_body_bytes", l.max_body_bytes as u64),
            ("limits.max_batch", l.max_batch as u64),
            ("limits.max_filter", l.max_filter as u64),
            ("limits.header_timeout_ms", l.header_timeout_ms),
            ("limits.body_timeout_ms", l.body_timeout_ms),
            ("limits.max_connections", l.max_connections as u64),
            (
                "limits.max_pending_connections",
                l.max_pending_connections as u64,
            ),
            (
                "limits.first_request_timeout_ms",
                l.first_request_timeout_ms,
            ),
            ("limits.idle_timeout_ms", l.idle_timeout_ms),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be greater than 0"
                )));
            }
        }
        let si = &self.sign_in;
        for (name, v) in [
            (
                "sign_in.max_failures_per_account",
                u64::from(si.max_failures_per_account),
            ),
            (
                "sign_in.max_failures_per_client",
                u64::from(si.max_failures_per_client),
            ),
            ("sign_in.failure_window_seconds", si.failure_window_seconds),
            (
                "sign_in.invitation_ttl_hours",
                u64::from(si.invitation_ttl_hours),
            ),
        ] {
            if v == 0 {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be greater than 0"
                )));
            }
        }
        if let Some(url) = &si.invitation_webhook {
            if !url.starts_with("http://") {
                return Err(ConfigError::Invalid(format!(
                    "sign_in.invitation_webhook '{url}' must be an http:// URL"
                )));
            }
        }
        let n = &self.nats;
        for (name, v) in [
            ("nats.snapshot_every_revisions", n.snapshot_every_revisions),
            ("nats.snapshot_every_seconds", n.snapshot_every_seconds),
            ("nats.replicas", n.replicas as u64),
        ] {
            if v == 0 {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be greater than 0"
                )));
            }
        }
        n.tenant_set()?;
        let p = &self.plugins;
        for (name, v) in [
            ("plugins.deadline_ms", p.deadline_ms),
            ("plugins.fuel", p.fuel),
            ("plugins.max_memory_bytes", p.max_memory_bytes as u64),
            ("plugins.max_module_bytes", p.max_module_bytes as u64),
            ("plugins.max_instances", u64::from(p.max_instances)),
        ] {
            if v == 0 {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be greater than 0"
                )));
            }
        }
        if p.max_module_bytes > crate::model::MAX_PLUGIN_BYTES {
            return Err(ConfigError::Invalid(format!(
                "plugins.max_module_bytes must be at most {}",
                crate::model::MAX_PLUGIN_BYTES
            )));
        }
        if p.deadline_ms > 10_000 {
            return Err(ConfigError::Invalid(
                "plugins.deadline_ms must be at most 10000 (a call blocks its worker)".into(),
            ));
        }
        if let Some(t) = &self.admin_token {
            check_admin_token(&t.0)
                .map_err(|e| ConfigError::Invalid(format!("admin_token: {e}")))?;
        }
        let t = &self.tokens;
        if t.max_token_bytes < 64 {
            return Err(ConfigError::Invalid(
                "tokens.max_token_bytes must be at least 64".into(),
            ));
        }
        if self.metrics.admin_listener_only && self.admin_listen.is_none() {
            return Err(ConfigError::Invalid(
                "metrics.admin_listener_only needs admin_listen".into(),
            ));
        }
        if t.max_lifetime_seconds == 0 {
            return Err(ConfigError::Invalid(
                "tokens.max_lifetime_seconds must be greater than 0".into(),
            ));
        }
        const RESERVED: [&str; 5] = ["exp", "nbf", "iat", "iss", "aud"];
        for (name, v) in [
            ("tokens.subject_claim", &t.subject_claim),
            ("tokens.tenant_claim", &t.tenant_claim),
        ] {
            if v.is_empty() || RESERVED.contains(&v.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "{name} '{v}' must be a non-empty claim name other than {}",
                    RESERVED.join(", ")
                )));
            }
        }
        if t.subject_claim == t.tenant_claim {
            return Err(ConfigError::Invalid(format!(
                "tokens.subject_claim and tokens.tenant_claim are both '{}'",
                t.subject_claim
            )));
        }
        self.tls.validate("tls")?;
        self.admin_tls.validate("admin_tls")?;
        if self.admin_tls.enabled() && self.admin_listen.is_none() {
            return Err(ConfigError::Invalid(
                "admin_tls needs admin_listen (without it the management API is served on \
                 listen, with tls)"
                    .into(),
            ));
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(ConfigError::Invalid(format!(
                "log_format '{}' must be 'text' or 'json'",
                self.log_format
            )));
        }
        Ok(())
    }
}

/// Shortest management API token accepted.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 16;
/// Fewest distinct characters in a management API token (`aaaaaaaaaaaaaaaa` is refused).
pub const MIN_ADMIN_TOKEN_DISTINCT: usize = 8;

/// Checks a management API token: visible ASCII only (it travels in an HTTP header, so no
/// whitespace or control characters), at least [`MIN_ADMIN_TOKEN_CHARS`] long and at least
/// [`MIN_ADMIN_TOKEN_DISTINCT`] distinct characters. The message never quotes the token.
pub fn check_admin_token(token: &str) -> Result<(), String> {
    if let Some(i) = token.chars().position(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "the token has a space, control or non-ASCII character (at position {}); use visible \
             ASCII only, e.g. `openssl rand -hex 32`",
            i + 1
        ));
    }
    if token.len() < MIN_ADMIN_TOKEN_CHARS {
        return Err(format!(
            "the token has {} characters; at least {MIN_ADMIN_TOKEN_CHARS} are needed",
            token.len()
        ));
    }
    let mut seen = [false; 128];
    let distinct = token
        .bytes()
        .filter(|b| !std::mem::replace(&mut seen[usize::from(*b & 0x7f)], true))
        .count();
    if distinct < MIN_ADMIN_TOKEN_DISTINCT {
        return Err(format!(
            "the token is too guessable ({distinct} distinct characters; at least \
             {MIN_ADMIN_TOKEN_DISTINCT} are needed)"
        ));
    }
    Ok(())
}

/// Refuses a secret file (a private key) that group or others may read or write.
pub fn check_private_file(path: &Path) -> Result<(), ConfigError> {
    let bad = |message: String| ConfigError::TokenFile {
        path: path.display().to_string(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o066 != 0 {
            return Err(bad(format!(
                "mode {mode:03o} lets group or others read or write it; `chmod 600` it"
            )));
        }
    }
    let _ = meta;
    Ok(())
}

/// Reads a token file: its content without one trailing newline (`\n` or `\r\n`), refused when
/// the file is readable or writable by group or others, and checked with [`check_admin_token`].
pub fn read_token_file(path: &Path) -> Result<String, ConfigError> {
    let bad = |message: String| ConfigError::TokenFile {
        path: path.display().to_string(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o066 != 0 {
            return Err(bad(format!(
                "mode {mode:03o} lets group or others read or write it; `chmod 600` it"
            )));
        }
    }
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let token = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    check_admin_token(token).map_err(bad)?;
    Ok(token.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn admin_tokens_need_length_variety_and_visible_ascii() {
        assert!(check_admin_token("0123456789abcdef").is_ok());
        assert!(check_admin_token(&"x".repeat(15)).is_err());
        for bad in [
            " ".repeat(16),
            "a".repeat(16),
            "abcabcabcabcabcabc".into(),
            "0123456789abcde\u{7f}".into(),
            "0123456789 abcdef".into(),
            "0123456789abcdéf".into(),
        ] {
            let e = check_admin_token(&bad).unwrap_err();
            assert!(bad.trim().is_empty() || !e.contains(&bad), "{e}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn token_files_lose_one_trailing_newline_and_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t");
        for (text, token) in [
            ("0123456789abcdef\n", Some("0123456789abcdef")),
            ("0123456789abcdef\r\n", Some("0123456789abcdef")),
            ("0123456789abcdef", Some("0123456789abcdef")),
            ("0123456789abcdef\n\n", None),
            ("", None),
        ] {
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            assert_eq!(read_token_file(&p).ok().as_deref(), token, "{text:?}");
        }
        std::fs::write(&p, "0123456789abcdef").unwrap();
        for mode in [0o640, 0o604, 0o620, 0o602] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = read_token_file(&p).unwrap_err().to_string();
            assert!(e.contains("chmod 600"), "{mode:o}: {e}");
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(read_token_file(&p).is_ok());
        let e = read_token_file(d.path()).unwrap_err().to_string();
        assert!(e.contains("regular file"), "{e}");
    }

    #[test]
    fn explain_modes_parse_unquoted() {
        for (text, mode) in [
            ("on", ExplainMode::On),
            ("off", ExplainMode::Off),
            ("token", ExplainMode::Token),
        ] {
            let c = Config::parse(&format!("data_plane: {{ explain: {text} }}\n"), "t").unwrap();
            assert_eq!(c.data_plane.explain, mode, "{text}");
        }
        assert!(Config::parse("data_plane: { explain: maybe }\n", "t").is_err());
        let c = Config::parse("metrics: { admin_listener_only: true }\n", "t").unwrap();
        assert!(c.validate().is_err());
    }

    #[test]
    fn both_token_settings_at_once_are_refused() {
        let c =
            Config::parse("admin_token: 0123456789abcdef\nadmin_token_file: /x\n", "t").unwrap();
        assert!(c
            .resolve_admin_token()
            .unwrap_err()
            .to_string()
            .contains("give one"));
    }
}
