//! `fleet status`: the sidecars following NATS, as they last reported (JSON).

use std::process::ExitCode;

use portcullis::fleet;

use super::serve::NATS_ENV;

#[derive(clap::Subcommand)]
pub enum FleetCommand {
    /// Every sidecar that reported in the last 30 s: id, what it follows, ready, connected,
    /// last contact, events applied, resyncs, per-tenant [seen, applied] revisions (JSON).
    Status {
        /// NATS server (`nats://host:4222`; several: comma-separated).
        #[arg(long, env = NATS_ENV, hide_env_values = true)]
        nats: String,
    },
}

pub fn run(cmd: FleetCommand) -> Result<ExitCode, String> {
    let FleetCommand::Status { nats } = cmd;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start runtime: {e}"))?;
    let options = fleet::Options {
        url: nats,
        name: "portcullis-fleet-status".into(),
        replicas: 1,
    };
    let reports = rt.block_on(async {
        let f = fleet::Fleet::connect(&options)
            .await
            .map_err(|e| format!("{} ({})", e, options.shown()))?;
        fleet::follow::sidecars(&f).await.map_err(|e| e.to_string())
    })?;
    let text = serde_json::to_string_pretty(&reports).map_err(|e| e.to_string())?;
    super::out(&text)?;
    Ok(ExitCode::SUCCESS)
}
