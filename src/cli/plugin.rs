//! `portcullis plugin …`: validate a module locally, or manage a tenant's plugins through the
//! management API of a running server (hyper's HTTP/1.1 client on a current-thread runtime: the
//! CLI talks to one server, once, and needs neither TLS nor connection reuse — put a TLS proxy in
//! front of a remote management listener).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;

use portcullis::plugin::{Limits, PluginHost};

use super::plugin_eval::read_module;
use super::{err, out};

#[derive(clap::Subcommand)]
pub enum PluginCommand {
    /// Write a new plugin project (Rust, C or WAT) that builds outside this repository, with
    /// data-file tests and a README from build to upload.
    New(super::plugin_new::NewArgs),
    /// Validate and compile a module locally, as an upload would (no server needed).
    Validate {
        /// The `.wasm` file (or WebAssembly text, `.wat`).
        file: PathBuf,
        /// Also write the checked module as binary `.wasm` here (e.g. from a `.wat`).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run one call of a module locally and print its verdict, reason, fuel used, time and any
    /// trap message (exit 0 allow, 2 abstain/deny/failure).
    Eval(super::plugin_eval::EvalArgs),
    /// Upload a module as tenant plugin NAME (creates it, or replaces it atomically; with
    /// --canary, runs it as a candidate on a share of the calls).
    Upload {
        #[command(flatten)]
        plugin: Named,
        /// Free-text description.
        #[arg(long)]
        description: Option<String>,
        /// Run the module as a canary on this percentage (1 to 99) of the plugin's calls while
        /// the current version stays current; then `plugin promote` or `plugin abort`.
        #[arg(long, value_name = "PERCENT")]
        canary: Option<i64>,
        /// Replace only if the plugin is still at this ETag (the `etag` of `plugin show`):
        /// a concurrent change answers 409 instead of being overwritten.
        #[arg(long)]
        if_match: Option<String>,
        /// The `.wasm` file (WebAssembly text, `.wat`, is converted before the upload).
        file: PathBuf,
    },
    /// List a tenant's plugins.
    List {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        tenant: String,
    },
    /// Show one plugin: version (SHA-256), size, uploader, the roles using it, its canary.
    Show(Named),
    /// Delete a plugin (refused while a role names it).
    Delete(Named),
    /// The plugin's current version and the previous ones kept for rollback.
    Versions(Named),
    /// Show the running canary (candidate version, share, since when); with --share, change
    /// its share.
    Canary {
        #[command(flatten)]
        plugin: Named,
        /// The new share, in percent of the plugin's calls (1 to 99).
        #[arg(long, value_name = "PERCENT")]
        share: Option<i64>,
        /// Change only if the plugin is still at this ETag.
        #[arg(long)]
        if_match: Option<String>,
    },
    /// Make the running canary's candidate the current version (the replaced one is kept for
    /// rollback).
    Promote {
        #[command(flatten)]
        plugin: Named,
        /// Promote only if the plugin is still at this ETag.
        #[arg(long)]
        if_match: Option<String>,
    },
    /// Drop the running canary's candidate: every call runs the current version again.
    Abort {
        #[command(flatten)]
        plugin: Named,
        /// Abort only if the plugin is still at this ETag.
        #[arg(long)]
        if_match: Option<String>,
    },
    /// Make a kept previous version (by SHA-256) current again.
    Rollback {
        #[command(flatten)]
        plugin: Named,
        /// The version to restore: its SHA-256 (hex), from `plugin versions`.
        #[arg(long)]
        to: String,
        /// Roll back only if the plugin is still at this ETag.
        #[arg(long)]
        if_match: Option<String>,
    },
}

/// A request body and its content type.
struct Body {
    bytes: Vec<u8>,
    content_type: &'static str,
}

/// The `If-Match` header for an ETag given on the command line (`7` or `"7"`).
fn etag(tag: Option<String>) -> Option<String> {
    tag.map(|t| format!("\"{}\"", t.trim().trim_matches('"')))
}

/// One tenant plugin on a server.
#[derive(clap::Args)]
pub struct Named {
    #[command(flatten)]
    api: ApiArgs,
    #[arg(long)]
    tenant: String,
    #[arg(long)]
    name: String,
}

impl Named {
    fn path(&self) -> String {
        format!(
            "/v1/tenants/{}/plugins/{}",
            seg(&self.tenant),
            seg(&self.name)
        )
    }
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
    /// File holding the management API bearer token, e.g. portcullis-data/admin-token.
    #[arg(long, env = "PORTCULLIS_ADMIN_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Management API bearer token (visible in `ps` when given here: prefer the variable or
    /// --token-file).
    #[arg(long, env = "PORTCULLIS_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl ApiArgs {
    fn token(&self) -> Result<String, String> {
        match (&self.token, &self.token_file) {
            (Some(t), _) => Ok(t.clone()),
            (None, Some(p)) => {
                portcullis::server::config::read_token_file(p).map_err(|e| e.to_string())
            }
            (None, None) => Err(
                "no management API token: give --token-file (PORTCULLIS_ADMIN_TOKEN_FILE) or \
                 PORTCULLIS_ADMIN_TOKEN"
                    .into(),
            ),
        }
    }
}

/// Runs a plugin command; prints the server's JSON answer. Exit 0 on 2xx, 1 otherwise.
pub fn run(cmd: PluginCommand) -> Result<ExitCode, String> {
    let mut if_match = None;
    let (api, method, path, body) = match cmd {
        PluginCommand::Validate { file, out } => return validate(&file, out.as_deref()),
        PluginCommand::New(a) => return super::plugin_new::run(&a),
        PluginCommand::Eval(a) => return super::plugin_eval::run(&a),
        PluginCommand::Upload {
            plugin,
            description,
            canary,
            if_match: tag,
            file,
        } => {
            let bytes = read_module(&file)?;
            let mut query = Vec::new();
            if let Some(d) = description {
                query.push(format!("description={}", seg(&d)));
            }
            if let Some(c) = canary {
                query.push(format!("canary={c}"));
            }
            let mut path = plugin.path();
            if !query.is_empty() {
                path.push('?');
                path.push_str(&query.join("&"));
            }
            if_match = etag(tag);
            let body = Body {
                bytes,
                content_type: "application/wasm",
            };
            (plugin.api, hyper::Method::PUT, path, Some(body))
        }
        PluginCommand::Versions(p) => {
            let path = format!("{}/versions", p.path());
            (p.api, hyper::Method::GET, path, None)
        }
        PluginCommand::Canary {
            plugin,
            share,
            if_match: tag,
        } => {
            let path = format!("{}/canary", plugin.path());
            match share {
                None => (plugin.api, hyper::Method::GET, path, None),
                Some(share) => {
                    if_match = etag(tag);
                    let body = Body {
                        bytes: serde_json::json!({ "share": share })
                            .to_string()
                            .into_bytes(),
                        content_type: "application/json",
                    };
                    (plugin.api, hyper::Method::PATCH, path, Some(body))
                }
            }
        }
        PluginCommand::Promote {
            plugin,
            if_match: tag,
        } => {
            let path = format!("{}/canary/promote", plugin.path());
            if_match = etag(tag);
            (plugin.api, hyper::Method::POST, path, None)
        }
        PluginCommand::Abort {
            plugin,
            if_match: tag,
        } => {
            let path = format!("{}/canary", plugin.path());
            if_match = etag(tag);
            (plugin.api, hyper::Method::DELETE, path, None)
        }
        PluginCommand::Rollback {
            plugin,
            to,
            if_match: tag,
        } => {
            let path = format!("{}/rollback", plugin.path());
            if_match = etag(tag);
            let body = Body {
                bytes: serde_json::json!({ "sha256": to }).to_string().into_bytes(),
                content_type: "application/json",
            };
            (plugin.api, hyper::Method::POST, path, Some(body))
        }
        PluginCommand::List { api, tenant } => (
            api,
            hyper::Method::GET,
            format!("/v1/tenants/{}/plugins", seg(&tenant)),
            None,
        ),
        PluginCommand::Show(p) => {
            let path = p.path();
            (p.api, hyper::Method::GET, path, None)
        }
        PluginCommand::Delete(p) => {
            let path = p.path();
            (p.api, hyper::Method::DELETE, path, None)
        }
    };
    let (status, text) = request(&api, method, &path, body, if_match.as_deref())?;
    let json = serde_json::from_str::<serde_json::Value>(&text).ok();
    let pretty = json
        .as_ref()
        .and_then(|v| serde_json::to_string_pretty(v).ok())
        .unwrap_or(text);
    if status.is_success() {
        out(&pretty)?;
        Ok(ExitCode::SUCCESS)
    } else {
        // The server's errors are `{"error": message, "code": code}`: say them first.
        let summary = json
            .as_ref()
            .and_then(|v| Some((v.get("error")?.as_str()?, v.get("code")?.as_str()?)))
            .map(|(msg, code)| format!(": {msg} ({code})"))
            .unwrap_or_default();
        err(&format!("HTTP {status}{summary}\n{pretty}"));
        Ok(ExitCode::from(1))
    }
}

fn validate(
    file: &std::path::Path,
    out_file: Option<&std::path::Path>,
) -> Result<ExitCode, String> {
    let bytes = read_module(file)?;
    let host = PluginHost::new(Limits::default()).map_err(|e| e.to_string())?;
    let name = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin");
    match host.load("local", name, &bytes) {
        Ok(p) => {
            if let Some(o) = out_file {
                std::fs::write(o, &bytes)
                    .map_err(|e| format!("cannot write '{}': {e}", o.display()))?;
            }
            out(&format!(
                "ok: {} bytes, ABI version {}, sha256 {}, compiled in {:.1} ms{}",
                bytes.len(),
                portcullis::plugin::ABI_VERSION,
                p.version(),
                p.compile_time().as_secs_f64() * 1e3,
                out_file
                    .map(|o| format!("; written to {}", o.display()))
                    .unwrap_or_default()
            ))?;
            if let Some(hint) = size_hint(&bytes) {
                err(&format!("warning: {hint}"));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            err(&format!("refused: {e}"));
            Ok(ExitCode::from(1))
        }
    }
}

/// A warning for a module that carries debug or name sections (built without the release
/// profile of `plugins/templates/rust/Cargo.toml`, or not stripped): they cost upload size,
/// store space and every sidecar's memory, and nothing else would say so.
fn size_hint(b: &[u8]) -> Option<String> {
    fn leb(b: &[u8], i: &mut usize) -> Option<usize> {
        let mut v = 0usize;
        for shift in (0..35).step_by(7) {
            let byte = *b.get(*i)?;
            *i += 1;
            v |= usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    if b.get(..4)? != b"\0asm" {
        return None;
    }
    let (mut i, mut custom, mut names) = (8usize, 0usize, Vec::new());
    while i < b.len() {
        let id = b[i];
        i += 1;
        let size = leb(b, &mut i)?;
        let end = i.checked_add(size)?;
        if id == 0 {
            let mut j = i;
            let n = leb(b, &mut j)?;
            let name = String::from_utf8_lossy(b.get(j..j.checked_add(n)?)?).into_owned();
            custom += size;
            if !names.contains(&name) && names.len() < 6 {
                names.push(name);
            }
        }
        i = end;
    }
    (custom >= 1024).then(|| {
        format!(
            "{custom} of the module's {} bytes are custom sections ({}): build with a release \
             profile that strips them (opt-level = \"s\", lto = true, strip = true, \
             panic = \"abort\"; see `portcullis plugin new`)",
            b.len(),
            names.join(", ")
        )
    })
}

/// Bytes left as they are in a path or query segment: RFC 3986 unreserved characters.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes one path or query segment.
fn seg(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

/// Where `--url` points: `http://host[:port][/base]`.
#[derive(Debug)]
struct Target {
    /// `host[:port]` as given, for the `host` header.
    authority: String,
    /// `host:port` to connect to (port 80 when omitted).
    hostport: String,
    /// Path prefix without a trailing `/`.
    base: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let bad = |why: &str| format!("bad --url '{url}': {why}");
        if !url.starts_with("http://") {
            return Err(format!("--url must start with http:// (got '{url}')"));
        }
        let uri: hyper::Uri = url.parse().map_err(|e| bad(&format!("{e}")))?;
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.host().is_empty() || authority.as_str().contains('@') {
            return Err(bad("expected http://host[:port][/path]"));
        }
        if uri.query().is_some() {
            return Err(bad("a query string is not allowed"));
        }
        let port = authority.port_u16().unwrap_or(80);
        Ok(Target {
            authority: authority.as_str().to_string(),
            hostport: format!("{}:{port}", authority.host()),
            base: uri.path().trim_end_matches('/').to_string(),
        })
    }
}

/// One request on a fresh connection (hyper's HTTP/1.1 client); returns (status, body text).
/// A body cut short (connection closed mid-chunk, short `content-length`) is an error.
fn request(
    api: &ApiArgs,
    method: hyper::Method,
    path: &str,
    body: Option<Body>,
    if_match: Option<&str>,
) -> Result<(hyper::StatusCode, String), String> {
    let target = Target::parse(&api.url)?;
    let token = api.token()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start runtime: {e}"))?;
    rt.block_on(async {
        match tokio::time::timeout(
            Duration::from_secs(60),
            send(&target, &token, method, path, body, if_match),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(format!(
                "no complete answer from {} within 60 s",
                target.hostport
            )),
        }
    })
}

async fn send(
    target: &Target,
    token: &str,
    method: hyper::Method,
    path: &str,
    body: Option<Body>,
    if_match: Option<&str>,
) -> Result<(hyper::StatusCode, String), String> {
    use http_body_util::BodyExt;
    use hyper::header;

    let hp = &target.hostport;
    let addr = tokio::net::lookup_host(hp.as_str())
        .await
        .map_err(|e| format!("cannot resolve '{}': {e}", target.authority))?
        .next()
        .ok_or_else(|| format!("cannot resolve '{}'", target.authority))?;
    let stream = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .map_err(|_| format!("cannot connect to {addr}: timed out"))?
    .map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::ConnectionRefused {
            " (is `portcullis serve` running there? see --url / PORTCULLIS_ADMIN_URL)"
        } else {
            ""
        };
        format!("cannot connect to {addr}: {e}{hint}")
    })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .map_err(|e| format!("connecting to {addr}: {e}"))?;
    // Drives the connection; it ends when the response is read (the request says `close`).
    let driver = tokio::spawn(conn);

    let mut req = hyper::Request::builder()
        .method(method)
        .uri(format!("{}{path}", target.base))
        .header(header::HOST, &target.authority)
        .header(header::CONNECTION, "close")
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    if let Some(b) = &body {
        req = req.header(header::CONTENT_TYPE, b.content_type);
    }
    if let Some(tag) = if_match {
        req = req.header(header::IF_MATCH, tag);
    }
    let req = req
        .body(Full::new(Bytes::from(
            body.map(|b| b.bytes).unwrap_or_default(),
        )))
        .map_err(|e| format!("bad request: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request to {addr} failed: {e}"))?;
    let status = resp.status();
    let payload = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the answer from {addr}: {e}"))?
        .to_bytes();
    driver.abort();
    Ok((status, String::from_utf8_lossy(&payload).into_owned()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// Serves one connection with `answer` (raw HTTP bytes) and returns the client's result.
    fn against(answer: &'static [u8]) -> Result<(hyper::StatusCode, String), String> {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(answer).unwrap();
            String::from_utf8_lossy(&got).into_owned()
        });
        let api = ApiArgs {
            url: format!("http://{addr}/base/"),
            token: Some("t0k3n".into()),
            token_file: None,
        };
        let r = request(&api, hyper::Method::GET, "/v1/x?y=%20", None, None);
        let head = t.join().unwrap();
        assert!(
            head.starts_with("GET /base/v1/x?y=%20 HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(head.contains("authorization: Bearer t0k3n"), "{head}");
        r
    }

    #[test]
    fn chunked_answers_are_read_whole() {
        let (status, body) = against(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\n{\"a\r\n6;ext=1\r\n\":[1]}\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, "{\"a\":[1]}");
    }

    #[test]
    fn a_truncated_answer_is_an_error_not_a_short_body() {
        let e = against(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10\r\n{\"a\"")
            .unwrap_err();
        assert!(e.contains("reading the answer"), "{e}");
        let e = against(b"HTTP/1.1 200 OK\r\ncontent-length: 20\r\n\r\n{\"a\"").unwrap_err();
        assert!(e.contains("reading the answer"), "{e}");
    }

    #[test]
    fn urls_are_checked() {
        assert!(Target::parse("https://h").unwrap_err().contains("http://"));
        assert!(Target::parse("http://").is_err());
        assert!(Target::parse("http://u@h").is_err());
        let t = Target::parse("http://h").unwrap();
        assert_eq!((t.hostport.as_str(), t.base.as_str()), ("h:80", ""));
        let t = Target::parse("http://h:81/p/").unwrap();
        assert_eq!((t.authority.as_str(), t.base.as_str()), ("h:81", "/p"));
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(seg("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(seg("console only/é?"), "console%20only%2F%C3%A9%3F");
    }
}
