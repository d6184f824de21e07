//! The `portcullis` command line: its arguments ([`Cli`]) and one module per command.
//!
//! Every command returns its exit code, or a message for standard error (exit 1). Output goes
//! through [`out`]: a reader that stops early (`portcullis generate | head -1`) ends nothing but
//! the output.

mod decide;
mod fleet;
mod generate;
mod plugin;
mod plugin_eval;
mod plugin_new;
mod serve;
mod sidecar;
mod token;

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Multi-tenant authorization sidecar"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: data-plane and management API over a durable store (the embedded
    /// `portcullis-data` by default, seeded with the demo data on its first start).
    Serve(serve::ServeArgs),
    /// Run a sidecar: the data plane only, following the tenants a `serve --nats` control plane
    /// publishes to NATS JetStream (all, a list, or one shard).
    Sidecar(sidecar::SidecarArgs),
    /// The fleet over NATS: `fleet status` lists the sidecars and their revisions.
    Fleet {
        #[command(subcommand)]
        cmd: fleet::FleetCommand,
    },
    /// Load a data file and check its `tests:` assertions (exit 1 on any failure).
    Test(decide::TestArgs),
    /// Decide one request against a data file (exit 0 allow, 2 deny).
    Check(decide::RequestArgs),
    /// Explain one decision against a data file, as JSON (exit 0 allow, 2 deny).
    Explain(decide::RequestArgs),
    /// Mint a JWT for development and tests (production tokens come from your identity
    /// provider): signed with an HS256 key of the config, or with --private-key.
    Token(token::TokenArgs),
    /// Tenant WASM plugins: start a project, validate or evaluate a module locally, or upload,
    /// list, show, delete, roll back and canary a tenant's plugins through a running server's
    /// management API.
    Plugin {
        #[command(subcommand)]
        cmd: plugin::PluginCommand,
    },
    /// Write a generated benchmark world (s or m) as a JSON data file.
    Generate(generate::GenerateArgs),
}

/// Runs the command line; a failure is printed as `portcullis: …` and exits 1.
pub fn main(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve(a) => serve::run(a),
        Command::Sidecar(a) => sidecar::run(a),
        Command::Fleet { cmd } => fleet::run(cmd),
        Command::Test(a) => decide::test(&a),
        Command::Check(a) => decide::check(&a),
        Command::Explain(a) => decide::explain(&a),
        Command::Token(a) => token::run(&a),
        Command::Plugin { cmd } => plugin::run(cmd),
        Command::Generate(a) => generate::run(&a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            err(&format!("portcullis: {e}"));
            ExitCode::from(1)
        }
    }
}

/// Writes `text` and a newline to standard output. A closed output (`| head`) is not an error:
/// the rest of the output is dropped and the command finishes with its own exit code.
pub fn out(text: &str) -> Result<(), String> {
    let mut o = std::io::stdout().lock();
    match o
        .write_all(text.as_bytes())
        .and_then(|()| o.write_all(b"\n"))
        .and_then(|()| o.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(format!("cannot write to standard output: {e}"))
        }
        _ => Ok(()),
    }
}

/// Writes `text` and a newline to standard error, ignoring failures (there is nowhere left to
/// report them).
pub fn err(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}
