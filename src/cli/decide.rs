//! `test`, `check` and `explain`: decisions against a data file, without a server.

use std::path::PathBuf;
use std::process::ExitCode;

use portcullis::engine::{self, DEMO_DATA};
use portcullis::model::file::{self, DataFile};
use portcullis::snapshot::Registry;
use portcullis::{clock, model};

use super::out;

#[derive(clap::Args)]
pub struct TestArgs {
    /// Data file (YAML or JSON).
    file: PathBuf,
}

#[derive(clap::Args)]
pub struct RequestArgs {
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
    /// Request context (a JSON object) handed to plugin conditions.
    #[arg(long)]
    context: Option<String>,
}

/// `test FILE`: every `tests:` case of the file; exit 1 on any failure.
pub fn test(a: &TestArgs) -> Result<ExitCode, String> {
    let data = load(Some(&a.file))?;
    let reg = registry(&data)?;
    let failures = engine::run_tests(&reg, &data, clock::unix_now());
    for f in &failures {
        out(&format!("FAIL {f}"))?;
    }
    let total = data.tests.len();
    out(&format!(
        "{} passed, {} failed",
        total - failures.len(),
        failures.len()
    ))?;
    Ok(exit(failures.is_empty(), 1))
}

/// `check`: the decision as one line; exit 0 on allow, 2 on deny.
pub fn check(a: &RequestArgs) -> Result<ExitCode, String> {
    decide(a, |req, snap| {
        let d = req.check(snap, &a.resource);
        let line = format!(
            "{} ({}) at revision {}",
            if d.allowed { "allow" } else { "deny" },
            d.reason.code(),
            snap.revision()
        );
        Ok((d.allowed, line))
    })
}

/// `explain`: the explanation as JSON; exit 0 on allow, 2 on deny.
pub fn explain(a: &RequestArgs) -> Result<ExitCode, String> {
    decide(a, |req, snap| {
        let e = req.explain(snap, &a.resource);
        let json = serde_json::to_string_pretty(&e).map_err(|e| e.to_string())?;
        Ok((e.allowed, json))
    })
}

/// One decision on the data file: `f` decides and says what to print.
fn decide(
    a: &RequestArgs,
    f: impl FnOnce(
        &engine::Request<'_>,
        &portcullis::snapshot::Snapshot,
    ) -> Result<(bool, String), String>,
) -> Result<ExitCode, String> {
    if a.tenant.is_empty() {
        return Err("--tenant must not be empty".into());
    }
    let context = match &a.context {
        None => None,
        Some(c) => {
            portcullis::plugin::check_context(c).map_err(|e| format!("--context: {e}"))?;
            Some(c.as_str())
        }
    };
    let now = match &a.at {
        Some(t) => model::parse_timestamp(t)?,
        None => clock::unix_now(),
    };
    let reg = registry(&load(a.data.as_ref())?)?;
    let snap = reg
        .get(&a.tenant)
        .ok_or_else(|| format!("unknown tenant '{}'", a.tenant))?;
    let req = engine::Request {
        subject: &a.subject,
        action: &a.action,
        now,
        context,
        sso: None,
        channel: None,
    };
    let (allowed, text) = f(&req, &snap)?;
    out(&text)?;
    Ok(exit(allowed, 2))
}

fn exit(ok: bool, failure: u8) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(failure)
    }
}

fn load(path: Option<&PathBuf>) -> Result<DataFile, String> {
    match path {
        Some(p) => file::load_path(p).map_err(|e| format!("{}: {e}", p.display())),
        None => file::load_str(DEMO_DATA).map_err(|e| format!("bundled demo data: {e}")),
    }
}

fn registry(data: &DataFile) -> Result<Registry, String> {
    let r = engine::plugin_registry();
    engine::install_all(&r, data).map_err(|e| e.to_string())?;
    Ok(r)
}
