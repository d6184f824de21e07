//! `generate`: a deterministic benchmark world as a JSON data file.

use std::path::PathBuf;
use std::process::ExitCode;

use portcullis::model::file;

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// World: `s` (1k nodes, 5k assignments) or `m` (50k nodes, 100k assignments).
    #[arg(long, default_value = "s")]
    world: String,
    /// Output file; standard output when omitted.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(a: &GenerateArgs) -> Result<ExitCode, String> {
    let tenants = match a.world.to_ascii_lowercase().as_str() {
        "s" => portcullis::worlds::world_s(),
        "m" => portcullis::worlds::world_m(),
        other => return Err(format!("unknown world '{other}' (expected s or m)")),
    };
    let text = file::to_json(&tenants, &[]);
    match &a.out {
        Some(p) => {
            std::fs::write(p, text).map_err(|e| format!("cannot write '{}': {e}", p.display()))?
        }
        None => super::out(&text)?,
    }
    Ok(ExitCode::SUCCESS)
}
