//! `serve`: the configuration (defaults < config file < `PORTCULLIS_*` variables < flags),
//! logging, then [`portcullis::app`] on a multi-threaded runtime.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use portcullis::model::file;
use portcullis::server::config::Secret;
use portcullis::server::Config;

/// The variable that may hold the management API token.
const TOKEN_ENV: &str = "PORTCULLIS_ADMIN_TOKEN";

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Config file (YAML or JSON); flags and PORTCULLIS_* variables override it.
    #[arg(long, env = "PORTCULLIS_CONFIG")]
    config: Option<PathBuf>,
    /// Listen address [default: 127.0.0.1:8180].
    #[arg(long, env = "PORTCULLIS_LISTEN")]
    listen: Option<SocketAddr>,
    /// Data file (YAML or JSON) that seeds a store holding no tenants yet.
    #[arg(long, env = "PORTCULLIS_DATA")]
    data: Option<PathBuf>,
    /// Durable store: a directory (embedded engine) or a postgres:// URL
    /// [default: portcullis-data, created with the bundled demo data on its first start].
    #[arg(long, env = "PORTCULLIS_STORE")]
    store: Option<String>,
    /// Log filter, e.g. `info`, `debug`, `portcullis=trace`.
    #[arg(long, env = "PORTCULLIS_LOG")]
    log: Option<String>,
    /// Log format: text or json.
    #[arg(long, env = "PORTCULLIS_LOG_FORMAT")]
    log_format: Option<String>,
    /// Management API address (separate listener); default: same as --listen.
    #[arg(long, env = "PORTCULLIS_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// File holding the management API bearer token (mode 600). Without a token, one is
    /// generated into <store>/admin-token.
    #[arg(long, env = "PORTCULLIS_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// Management API bearer token. On the command line it is visible to every local user
    /// (`ps`): prefer --admin-token-file or the variable.
    #[arg(long, env = TOKEN_ENV, hide_env_values = true)]
    admin_token: Option<String>,
    /// Also publish change events and snapshots to this NATS JetStream server
    /// (`nats://host:4222`; several: comma-separated).
    #[arg(long, env = NATS_ENV, hide_env_values = true)]
    nats: Option<String>,
}

/// The variable that may hold the NATS URL (it may carry credentials).
pub(super) const NATS_ENV: &str = "PORTCULLIS_NATS";

pub fn run(args: ServeArgs) -> Result<ExitCode, String> {
    let token_on_command_line = args
        .admin_token
        .as_ref()
        .is_some_and(|t| std::env::var(TOKEN_ENV).ok().as_ref() != Some(t));
    let config = configure(args)?;
    init_logging(&config)?;
    if token_on_command_line {
        tracing::warn!(
            "--admin-token on the command line is visible to every local user (ps); use \
             --admin-token-file or {TOKEN_ENV}"
        );
    }
    // Everything that can be checked is checked before a port is bound.
    let admin_token = config.resolve_admin_token().map_err(|e| e.to_string())?;
    let data = match &config.data {
        Some(p) => Some(file::load_path(p).map_err(|e| format!("{}: {e}", p.display()))?),
        None => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("portcullis")
        .build()
        .map_err(|e| format!("cannot start runtime: {e}"))?;
    rt.block_on(portcullis::app::run(config, data.as_ref(), admin_token))
        .map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}

/// The config file (or the defaults) with the flags and variables laid over it, validated.
fn configure(args: ServeArgs) -> Result<Config, String> {
    let mut config = match &args.config {
        Some(p) => Config::from_file(p).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    config.listen = args.listen.unwrap_or(config.listen);
    config.log = args.log.unwrap_or(config.log);
    config.log_format = args.log_format.unwrap_or(config.log_format);
    config.data = args.data.or(config.data);
    config.store = args.store.or(config.store);
    config.admin_listen = args.admin_listen.or(config.admin_listen);
    if let Some(url) = args.nats {
        config.nats.url = Some(Secret(url));
    }
    match (args.admin_token, args.admin_token_file) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "--admin-token ({TOKEN_ENV}) and --admin-token-file (PORTCULLIS_ADMIN_TOKEN_FILE) \
                 are both set: give one"
            ))
        }
        (Some(t), None) => {
            config.admin_token = Some(Secret(t));
            config.admin_token_file = None;
        }
        (None, Some(f)) => {
            config.admin_token = None;
            config.admin_token_file = Some(f);
        }
        (None, None) => {}
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

pub(super) fn init_logging(config: &Config) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .map_err(|e| format!("invalid log filter '{}': {e}", config.log))?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let res = if config.log_format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    res.map_err(|e| format!("cannot initialise logging: {e}"))
}
