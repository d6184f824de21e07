//! `portcullis plugin eval`: one call of a plugin module, outside any server, with everything
//! the host knows about it (verdict, reason, fuel, time, trap message).
//!
//! The input is the one the host would encode for a check (`PluginInput`, ABI v1): from a data
//! file when `--data` is given (the resource's node path, the subject's attributes, the
//! subject's assignment that would run the plugin), else from the flags alone.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use portcullis::model::file::{self, DataFile};
use portcullis::model::{self, Principal, Tenant, UserKind};
use portcullis::plugin::{CallDetail, Limits, Outcome, PluginHost, PluginInput};

use super::out;

#[derive(clap::Args)]
pub struct EvalArgs {
    /// The module: `.wasm`, or WebAssembly text (`.wat`).
    file: PathBuf,
    /// The action, `resource:verb` (e.g. `asset:operate`).
    #[arg(long)]
    action: String,
    /// The resource (node id).
    #[arg(long)]
    resource: String,
    /// The subject (user id); required with --data.
    #[arg(long)]
    subject: Option<String>,
    /// The request context, a JSON value (checked as the data plane checks it).
    #[arg(long)]
    context: Option<String>,
    /// The check's time, the plugin's `now` (RFC 3339 or unix seconds); now when omitted.
    #[arg(long)]
    at: Option<String>,
    /// A data file: the node path, subject attributes, role and scope come from it.
    #[arg(long)]
    data: Option<PathBuf>,
    /// The tenant (with --data: needed when the file holds several).
    #[arg(long)]
    tenant: Option<String>,
    /// The matched role id (with --data, when omitted: the subject's assignment on the
    /// resource's path whose role names the plugin called like FILE's stem, else any plugin).
    #[arg(long)]
    role: Option<String>,
    /// The matched assignment's scope node (default: as --role, or the resource).
    #[arg(long)]
    scope: Option<String>,
    /// The subject's kind attribute without --data: owner, admin, member or guest.
    #[arg(long, default_value = "member")]
    kind: String,
    /// The subject's email attribute without --data.
    #[arg(long, default_value = "")]
    email: String,
    /// Call this many times on the same instance pool and report the mean time per call.
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Reads a module file: binary `.wasm`, or WebAssembly text (by extension, or when the bytes
/// are not a binary module) converted here.
pub fn read_module(path: &Path) -> Result<Vec<u8>, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read '{}': {e}", path.display()))?;
    let is_text = path.extension().is_some_and(|e| e == "wat") || !bytes.starts_with(b"\0asm");
    if is_text {
        wat::parse_bytes(&bytes)
            .map(|b| b.into_owned())
            .map_err(|e| {
                format!(
                    "'{}' is not WebAssembly (binary or text): {e}",
                    path.display()
                )
            })
    } else {
        Ok(bytes)
    }
}

/// The parts of one plugin input, owned.
struct Scene {
    tenant: String,
    subject: String,
    role: String,
    scope: String,
    path: Vec<(String, String)>,
    kind: String,
    email: String,
}

fn kind_name(k: UserKind) -> &'static str {
    match k {
        UserKind::Owner => "owner",
        UserKind::Admin => "admin",
        UserKind::Member => "member",
        UserKind::Guest => "guest",
    }
}

/// The input's parts from the flags alone: a path of the resource only (kind `node`).
fn scene_from_flags(a: &EvalArgs) -> Result<Scene, String> {
    if !matches!(a.kind.as_str(), "owner" | "admin" | "member" | "guest") {
        return Err(format!(
            "--kind must be owner, admin, member or guest (got '{}')",
            a.kind
        ));
    }
    Ok(Scene {
        tenant: a.tenant.clone().unwrap_or_else(|| "local".into()),
        subject: a.subject.clone().unwrap_or_else(|| "user".into()),
        role: a.role.clone().unwrap_or_else(|| "role".into()),
        scope: a.scope.clone().unwrap_or_else(|| a.resource.clone()),
        path: vec![("node".into(), a.resource.clone())],
        kind: a.kind.clone(),
        email: a.email.clone(),
    })
}

/// The input's parts from a data file, as the host would build them for this check.
fn scene_from_data(
    a: &EvalArgs,
    data: &DataFile,
    file: &Path,
    plugin_name: &str,
) -> Result<Scene, String> {
    let t: &Tenant = match &a.tenant {
        Some(id) => data
            .tenants
            .iter()
            .find(|t| &t.id == id)
            .ok_or_else(|| format!("{}: no tenant '{id}'", file.display()))?,
        None => match data.tenants.as_slice() {
            [t] => t,
            [] => return Err(format!("{}: no tenants", file.display())),
            _ => {
                return Err(format!(
                    "{} holds several tenants: give --tenant",
                    file.display()
                ))
            }
        },
    };
    let subject = a.subject.clone().ok_or("--subject is needed with --data")?;
    let user = t
        .users
        .iter()
        .find(|u| u.id == subject)
        .ok_or_else(|| format!("tenant '{}' has no user '{subject}'", t.id))?;
    // Node path, root first.
    let mut path = Vec::new();
    let mut cur = Some(a.resource.clone());
    while let Some(id) = cur {
        if path.len() > t.nodes.len() {
            return Err(format!("tenant '{}': the hierarchy has a cycle", t.id));
        }
        let n = t
            .nodes
            .iter()
            .find(|n| n.id == id)
            .ok_or_else(|| format!("tenant '{}' has no node '{id}'", t.id))?;
        path.push((n.kind.clone(), n.id.clone()));
        cur = n.parent.clone();
    }
    path.reverse();
    let on_path = |scope: &str| path.iter().any(|(_, id)| id == scope);
    let holds = |p: &Principal| match p {
        Principal::User(u) => *u == subject,
        Principal::Group(g) => t
            .groups
            .iter()
            .any(|gr| &gr.id == g && gr.members.contains(&subject)),
    };
    let (role, scope) = match (&a.role, &a.scope) {
        (Some(r), Some(s)) => (r.clone(), s.clone()),
        (role, scope) => {
            // A role naming a plugin called like the module file first, then any plugin role.
            let with_plugin = |r: &str, named: Option<&str>| {
                t.roles.iter().any(|x| {
                    x.id == r
                        && x.plugin.is_some()
                        && named.is_none_or(|n| x.plugin.as_deref() == Some(n))
                })
            };
            let candidate = |named: Option<&str>| {
                t.assignments.iter().find(|x| {
                    holds(&x.principal)
                        && on_path(&x.scope)
                        && role
                            .as_ref()
                            .map_or(with_plugin(&x.role, named), |r| *r == x.role)
                        && scope.as_ref().is_none_or(|s| *s == x.scope)
                })
            };
            let found = candidate(Some(plugin_name)).or_else(|| candidate(None));
            match found {
                Some(x) => (x.role.clone(), x.scope.clone()),
                None => {
                    return Err(format!(
                        "no assignment of '{subject}' on the path of '{}' {}: give --role (and --scope)",
                        a.resource,
                        role.as_ref().map_or("has a role with a plugin".to_string(), |r| {
                            format!("has role '{r}'")
                        })
                    ))
                }
            }
        }
    };
    Ok(Scene {
        tenant: t.id.clone(),
        subject,
        role,
        scope,
        path,
        kind: kind_name(user.kind).into(),
        email: user.email.clone(),
    })
}

/// `plugin eval`: exit 0 when the plugin allows, 2 otherwise (abstain, deny, any failure).
pub fn run(a: &EvalArgs) -> Result<ExitCode, String> {
    let (action_resource, verb) = model::split_action(&a.action)
        .ok_or_else(|| format!("--action must be resource:verb (got '{}')", a.action))?;
    let context = match &a.context {
        None => None,
        Some(c) => {
            portcullis::plugin::check_context(c).map_err(|e| format!("--context: {e}"))?;
            Some(
                serde_json::from_str::<serde_json::Value>(c)
                    .map_err(|e| format!("--context: {e}"))?,
            )
        }
    };
    let now = match &a.at {
        Some(t) => model::parse_timestamp(t)?,
        None => portcullis::clock::unix_now(),
    };
    if a.repeat == 0 {
        return Err("--repeat must be at least 1".into());
    }
    let name = a
        .file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin");
    let scene = match &a.data {
        Some(f) => {
            let data = file::load_path(f).map_err(|e| format!("{}: {e}", f.display()))?;
            scene_from_data(a, &data, f, name)?
        }
        None => scene_from_flags(a)?,
    };
    let bytes = read_module(&a.file)?;
    let limits = Limits::default();
    let host = PluginHost::new(limits).map_err(|e| e.to_string())?;
    let plugin = host
        .load(&scene.tenant, name, &bytes)
        .map_err(|e| format!("refused: {e}"))?;
    let path: Vec<(&str, &str)> = scene
        .path
        .iter()
        .map(|(k, i)| (k.as_str(), i.as_str()))
        .collect();
    let input = PluginInput {
        now,
        tenant: &scene.tenant,
        subject: &scene.subject,
        action_resource,
        verb,
        resource: &a.resource,
        role: &scene.role,
        scope: &scene.scope,
        path: &path,
        attrs: &[("kind", &scene.kind), ("email", &scene.email)],
        context: context.as_ref(),
        context_raw: a.context.as_deref(),
        host_context: &[],
    };
    let mut buf = Vec::new();
    input.encode(&mut buf);
    let mut detail = CallDetail::default();
    let mut outcome = Outcome::NoInstance;
    let mut total = Duration::ZERO;
    for _ in 0..a.repeat {
        let t0 = Instant::now();
        outcome = plugin.call_detailed(&buf, &mut detail);
        total += t0.elapsed();
    }
    let per_call = total / a.repeat;
    let verdict = match outcome {
        Outcome::Allow => "allow",
        Outcome::Abstain => "abstain",
        _ => "deny",
    };
    if a.json {
        let v = serde_json::json!({
            "verdict": verdict,
            "outcome": outcome.code(),
            "reason": detail.reason,
            "trap": detail.trap,
            "fuel_used": detail.fuel_used,
            "fuel_limit": limits.fuel,
            "time_us": per_call.as_secs_f64() * 1e6,
            "calls": a.repeat,
            "input_bytes": buf.len(),
            "version": plugin.version(),
            "compile_ms": plugin.compile_time().as_secs_f64() * 1e3,
            "debug": detail.debug,
        });
        out(&v.to_string())?;
    } else {
        let mut lines = vec![format!(
            "verdict: {verdict}{}",
            if outcome.code() == verdict {
                String::new()
            } else {
                format!(" (outcome {})", outcome.code())
            }
        )];
        if !detail.reason.is_empty() {
            lines.push(format!("reason: {}", detail.reason));
        }
        if !detail.trap.is_empty() {
            lines.push(format!("trap: {}", detail.trap));
        }
        for d in &detail.debug {
            lines.push(format!("debug: {d}"));
        }
        lines.push(format!("fuel: {} of {}", detail.fuel_used, limits.fuel));
        lines.push(format!(
            "time: {:.2} µs per call ({} call{}; compiled in {:.1} ms)",
            per_call.as_secs_f64() * 1e6,
            a.repeat,
            if a.repeat == 1 { "" } else { "s" },
            plugin.compile_time().as_secs_f64() * 1e3
        ));
        lines.push(format!(
            "input: {} bytes, tenant '{}', subject '{}' ({}), role '{}', scope '{}', path {}",
            buf.len(),
            scene.tenant,
            scene.subject,
            scene.kind,
            scene.role,
            scene.scope,
            scene
                .path
                .iter()
                .map(|(k, i)| format!("{k}:{i}"))
                .collect::<Vec<_>>()
                .join(" > ")
        ));
        out(&lines.join("\n"))?;
    }
    Ok(if outcome == Outcome::Allow {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
