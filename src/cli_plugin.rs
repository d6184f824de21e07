//! `portcullis plugin …`: validate a module locally, or manage a tenant's plugins through the
//! management API of a running server (a small blocking HTTP/1.1 client: the CLI talks to one
//! server, once, and needs neither TLS nor connection reuse — put a TLS proxy in front of a
//! remote management listener).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::plugin::{Limits, PluginHost};

#[derive(clap::Subcommand)]
pub enum PluginCommand {
    /// Validate and compile a module locally, as an upload would (no server needed).
    Validate {
        /// The `.wasm` file.
        file: PathBuf,
    },
    /// Upload a module as tenant plugin NAME (creates it, or replaces it atomically).
    Upload {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        /// Free-text description.
        #[arg(long)]
        description: Option<String>,
        /// The `.wasm` file.
        file: PathBuf,
    },
    /// List a tenant's plugins.
    List {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        tenant: String,
    },
    /// Show one plugin: version (SHA-256), size, uploader, the roles using it.
    Show {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
    },
    /// Delete a plugin (refused while a role names it).
    Delete {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
    },
}

#[derive(clap::Args)]
pub struct ApiArgs {
    /// Management API base URL (http only).
    #[arg(
        long,
        env = "PORTCULLIS_ADMIN_URL",
        default_value = "http://127.0.0.1:8180"
    )]
    url: String,
    /// Management API bearer token.
    #[arg(long, env = "PORTCULLIS_ADMIN_TOKEN", hide_env_values = true)]
    token: String,
}

/// Runs a plugin command; prints the server's JSON answer. Exit 0 on 2xx, 1 otherwise.
pub fn run(cmd: PluginCommand) -> Result<ExitCode, String> {
    let (api, method, path, body) = match cmd {
        PluginCommand::Validate { file } => return validate(&file),
        PluginCommand::Upload {
            api,
            tenant,
            name,
            description,
            file,
        } => {
            let bytes = std::fs::read(&file)
                .map_err(|e| format!("cannot read '{}': {e}", file.display()))?;
            let mut path = format!("/v1/tenants/{}/plugins/{}", seg(&tenant), seg(&name));
            if let Some(d) = description {
                path.push_str("?description=");
                path.push_str(&seg(&d));
            }
            (api, "PUT", path, Some(bytes))
        }
        PluginCommand::List { api, tenant } => (
            api,
            "GET",
            format!("/v1/tenants/{}/plugins", seg(&tenant)),
            None,
        ),
        PluginCommand::Show { api, tenant, name } => (
            api,
            "GET",
            format!("/v1/tenants/{}/plugins/{}", seg(&tenant), seg(&name)),
            None,
        ),
        PluginCommand::Delete { api, tenant, name } => (
            api,
            "DELETE",
            format!("/v1/tenants/{}/plugins/{}", seg(&tenant), seg(&name)),
            None,
        ),
    };
    let (status, text) = request(&api, method, &path, body.as_deref())?;
    let pretty = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or(text);
    if (200..300).contains(&status) {
        println!("{pretty}");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("HTTP {status}\n{pretty}");
        Ok(ExitCode::from(1))
    }
}

fn validate(file: &PathBuf) -> Result<ExitCode, String> {
    let bytes =
        std::fs::read(file).map_err(|e| format!("cannot read '{}': {e}", file.display()))?;
    let host = PluginHost::new(Limits::default()).map_err(|e| e.to_string())?;
    let name = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin");
    match host.load("local", name, &bytes) {
        Ok(p) => {
            println!(
                "ok: {} bytes, ABI version {}, sha256 {}, compiled in {:.1} ms",
                bytes.len(),
                crate::plugin::ABI_VERSION,
                p.version(),
                p.compile_time().as_secs_f64() * 1e3
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("refused: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Percent-encodes one path or query segment.
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One request on a fresh connection; returns (status, body text).
fn request(
    api: &ApiArgs,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<(u16, String), String> {
    let rest = api
        .url
        .strip_prefix("http://")
        .ok_or_else(|| format!("--url must start with http:// (got '{}')", api.url))?;
    let (authority, base) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let hostport = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = hostport
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve '{authority}': {e}"))?
        .next()
        .ok_or_else(|| format!("cannot resolve '{authority}'"))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
    let body = body.unwrap_or(&[]);
    let mut head = format!(
        "{method} {base}{path} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\nauthorization: Bearer {}\r\ncontent-length: {}\r\n",
        api.token,
        body.len()
    );
    if method == "PUT" {
        head.push_str("content-type: application/wasm\r\n");
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())
        .and_then(|_| s.write_all(body))
        .map_err(|e| format!("sending to {addr}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("reading from {addr}: {e}"))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("malformed HTTP response")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or("malformed HTTP status line")?;
    let mut payload = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        payload = dechunk(&payload);
    }
    Ok((status, String::from_utf8_lossy(&payload).into_owned()))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&b[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || b.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = b.get(eol + 4 + size..).unwrap_or(&[]);
    }
    out
}
