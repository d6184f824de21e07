//! `sidecar`: the data plane only, its tenants followed over NATS JetStream
//! ([`portcullis::app::run_sidecar`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use portcullis::server::config::Secret;
use portcullis::server::Config;

use super::serve::{init_logging, NATS_ENV};

#[derive(clap::Args)]
pub struct SidecarArgs {
    /// NATS JetStream server to follow (`nats://host:4222`; several: comma-separated).
    #[arg(long, env = NATS_ENV, hide_env_values = true)]
    nats: Option<String>,
    /// Config file (YAML or JSON): limits, tokens, forward-auth, data_plane, plugins, nats.
    #[arg(long, env = "PORTCULLIS_CONFIG")]
    config: Option<PathBuf>,
    /// Listen address [default: 127.0.0.1:8180].
    #[arg(long, env = "PORTCULLIS_LISTEN")]
    listen: Option<SocketAddr>,
    /// Follow only these tenants (comma-separated); others are answered 421 tenant_not_here.
    #[arg(long, env = "PORTCULLIS_TENANTS", conflicts_with = "tenant_shard")]
    tenants: Option<String>,
    /// Follow only shard INDEX/COUNT of the tenants (INDEX from 0; FNV-1a of the id modulo COUNT).
    #[arg(long, env = "PORTCULLIS_TENANT_SHARD")]
    tenant_shard: Option<String>,
    /// Log filter, e.g. `info`, `debug`, `portcullis=trace`.
    #[arg(long, env = "PORTCULLIS_LOG")]
    log: Option<String>,
    /// Log format: text or json.
    #[arg(long, env = "PORTCULLIS_LOG_FORMAT")]
    log_format: Option<String>,
}

pub fn run(args: SidecarArgs) -> Result<ExitCode, String> {
    let mut config = match &args.config {
        Some(p) => Config::from_file(p).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    config.listen = args.listen.unwrap_or(config.listen);
    config.log = args.log.unwrap_or(config.log);
    config.log_format = args.log_format.unwrap_or(config.log_format);
    if let Some(url) = args.nats {
        config.nats.url = Some(Secret(url));
    }
    if let Some(t) = args.tenants {
        config.nats.tenants = t.split(',').map(|s| s.trim().to_string()).collect();
        config.nats.tenant_shard = None;
    }
    if let Some(s) = args.tenant_shard {
        config.nats.tenant_shard = Some(s);
        config.nats.tenants.clear();
    }
    if config.nats.url.is_none() {
        return Err(format!(
            "sidecar needs a NATS server: --nats URL ({NATS_ENV}, nats.url)"
        ));
    }
    config.validate().map_err(|e| e.to_string())?;
    init_logging(&config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("portcullis")
        .build()
        .map_err(|e| format!("cannot start runtime: {e}"))?;
    rt.block_on(portcullis::app::run_sidecar(config))
        .map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}
