//! The `portcullis` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use portcullis::engine::{self, DEMO_DATA};
use portcullis::model::file::{self, DataFile};
use portcullis::snapshot::Registry;
use portcullis::{decide, model};

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Multi-tenant authorization sidecar"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load a data file and check its `tests:` assertions (exit 1 on any failure).
    Test {
        /// Data file (YAML or JSON).
        file: PathBuf,
    },
    /// Decide one request against a data file (exit 0 allow, 2 deny).
    Check(RequestArgs),
    /// Explain one decision against a data file, as JSON.
    Explain(RequestArgs),
    /// Write a generated benchmark world (s or m) as a JSON data file.
    Generate {
        /// World: `s` (1k nodes, 5k assignments) or `m` (50k nodes, 100k assignments).
        #[arg(long, default_value = "s")]
        world: String,
        /// Output file; standard output when omitted.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct RequestArgs {
    /// Data file; the bundled demo data when omitted.
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long)]
    tenant: String,
    #[arg(long)]
    subject: String,
    #[arg(long)]
    action: String,
    #[arg(long)]
    resource: String,
    /// Decide at this time (RFC 3339 or unix seconds) instead of now.
    #[arg(long)]
    at: Option<String>,
}

fn load(path: Option<&PathBuf>) -> Result<DataFile, String> {
    match path {
        Some(p) => file::load_path(p).map_err(|e| format!("{}: {e}", p.display())),
        None => file::load_str(DEMO_DATA).map_err(|e| format!("bundled demo data: {e}")),
    }
}

fn registry(data: &DataFile) -> Result<Registry, String> {
    let r = Registry::new();
    engine::install_all(&r, data).map_err(|e| e.to_string())?;
    Ok(r)
}

fn run() -> Result<ExitCode, String> {
    let cli = Cli::parse();
    match cli.command {
        Command::Test { file } => {
            let data = load(Some(&file))?;
            let reg = registry(&data)?;
            let failures = engine::run_tests(&reg, &data, engine::unix_now());
            for f in &failures {
                println!("FAIL {f}");
            }
            let total = data.tests.len();
            println!(
                "{} passed, {} failed",
                total - failures.len(),
                failures.len()
            );
            Ok(if failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Generate { world, out } => {
            let tenants = match world.to_ascii_lowercase().as_str() {
                "s" => portcullis::gen::world_s(),
                "m" => portcullis::gen::world_m(),
                other => return Err(format!("unknown world '{other}' (expected s or m)")),
            };
            let text = file::to_json(&tenants, &[]);
            match out {
                Some(p) => std::fs::write(&p, text)
                    .map_err(|e| format!("cannot write '{}': {e}", p.display()))?,
                None => println!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(a) | Command::Explain(a) if a.tenant.is_empty() => {
            Err("--tenant must not be empty".into())
        }
        Command::Check(a) => {
            let (reg, now) = request_setup(&a)?;
            let snap = reg
                .get(&a.tenant)
                .ok_or_else(|| format!("unknown tenant '{}'", a.tenant))?;
            let d = decide::check(snap.view(), &a.subject, &a.action, &a.resource, now);
            println!(
                "{} ({}) at revision {}",
                if d.allowed { "allow" } else { "deny" },
                d.reason.code(),
                snap.revision()
            );
            Ok(if d.allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Command::Explain(a) => {
            let (reg, now) = request_setup(&a)?;
            let snap = reg
                .get(&a.tenant)
                .ok_or_else(|| format!("unknown tenant '{}'", a.tenant))?;
            let e = decide::explain(snap.view(), &a.subject, &a.action, &a.resource, now);
            println!(
                "{}",
                serde_json::to_string_pretty(&e).map_err(|e| e.to_string())?
            );
            Ok(if e.allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
    }
}

fn request_setup(a: &RequestArgs) -> Result<(Registry, i64), String> {
    let data = load(a.data.as_ref())?;
    let now = match &a.at {
        Some(t) => model::parse_timestamp(t)?,
        None => engine::unix_now(),
    };
    Ok((registry(&data)?, now))
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portcullis: {e}");
            ExitCode::from(1)
        }
    }
}
