//! TLS on the listeners against the real binary: certificates made here with rcgen, real TLS
//! clients (rustls over std sockets for HTTP/1.1, tokio-rustls + hyper for HTTP/2), certificate
//! reloads without a restart, mutual TLS, the management listener, start errors, and the
//! handshake bounded by the first-request timeout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, deprecated)]

#[path = "common/server.rs"]
mod server;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use server::Server;

const ADMIN_TOKEN: &str = "tls-test-admin-token-0123456789";

// ------------------------------------------------------------------------------------------
// Certificates
// ------------------------------------------------------------------------------------------

/// A certificate authority made for one test.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, PEM, and the certificate's DER.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        Ca {
            issuer: CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A certificate for `localhost` and `127.0.0.1`, for a server or (`client`) a client.
    fn leaf(&self, cn: &str, serial: u64, client: bool) -> Leaf {
        let mut p = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.serial_number = Some(SerialNumber::from(serial));
        p.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

/// Writes `text` to `path` atomically (a temporary file renamed over it), mode 600.
fn write_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::rename(&tmp, path).unwrap();
}

/// A directory with a server's certificate and key files and a config file that uses them.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    /// `extra`: YAML appended to the config (other settings).
    fn new(leaf: &Leaf, tls_extra: &str, extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let s = Setup { dir };
        write_file(&s.path("server.crt"), &leaf.cert_pem);
        write_file(&s.path("server.key"), &leaf.key_pem);
        let config = format!(
            "tls:\n  cert_file: {}\n  key_file: {}\n  reload_interval_ms: 100\n{tls_extra}{extra}",
            s.path("server.crt").display(),
            s.path("server.key").display(),
        );
        std::fs::write(s.path("config.yaml"), config).unwrap();
        s
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self) -> String {
        self.path("config.yaml").display().to_string()
    }

    fn start(&self) -> Server {
        Server::start(
            &["--config", &self.config()],
            &[("PORTCULLIS_ADMIN_TOKEN", ADMIN_TOKEN)],
        )
    }
}

// ------------------------------------------------------------------------------------------
// Clients
// ------------------------------------------------------------------------------------------

/// A client trusting `ca`, presenting `client` (certificate, key) when given, offering `alpn`.
fn client(ca: &Ca, client: Option<&Leaf>, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.der()).unwrap();
    let b = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut c = match client {
        Some(l) => b
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(l.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(l.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Full handshakes only: a resumed session shows the certificate of its first handshake.
    c.resumption = rustls::client::Resumption::disabled();
    Arc::new(c)
}

struct Reply {
    status: u16,
    body: String,
    /// The server's certificate (DER).
    peer: Vec<u8>,
    alpn: Option<Vec<u8>>,
}

/// One HTTP/1.1 request over TLS on a fresh connection; `Err` when TLS or the connection
/// fails before an answer.
fn https(
    addr: SocketAddr,
    cfg: &Arc<ClientConfig>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Reply, String> {
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(Arc::clone(cfg), name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut tls = StreamOwned::new(conn, tcp);
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    tls.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    tls.flush().map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let error = loop {
        match tls.read(&mut buf) {
            Ok(0) => break None,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => break Some(e.to_string()),
        }
    };
    let text = String::from_utf8_lossy(&out).into_owned();
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Err(error.unwrap_or_else(|| format!("no answer: {text:?}")));
    };
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok(Reply {
        status,
        body: body.to_string(),
        peer: tls
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default(),
        alpn: tls.conn.alpn_protocol().map(|p| p.to_vec()),
    })
}

fn get(addr: SocketAddr, cfg: &Arc<ClientConfig>, path: &str) -> Result<Reply, String> {
    https(addr, cfg, "GET", path, &[], "")
}

/// The value of the sample line starting with `prefix` on `/metrics` (over TLS).
fn metric(addr: SocketAddr, cfg: &Arc<ClientConfig>, prefix: &str) -> u64 {
    let r = get(addr, cfg, "/metrics").unwrap();
    r.body
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(0)
}

/// Polls `f` until it holds, for at most `secs` seconds.
fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

const CHECK: &str =
    r#"{"tenant":"femo","subject":"alice","action":"asset:operate","resource":"press-7"}"#;

// ------------------------------------------------------------------------------------------
// Tests
// ------------------------------------------------------------------------------------------

#[test]
fn https_serves_http1_and_http2_by_alpn_and_refuses_plain_http() {
    let ca = Ca::new("test CA");
    let leaf = ca.leaf("portcullis-1", 1, false);
    let setup = Setup::new(&leaf, "", "");
    let s = setup.start();
    assert!(s.log.lock().unwrap().contains("tls=true"));

    // HTTP/1.1, by ALPN and without it.
    for alpn in [&[&b"http/1.1"[..]][..], &[]] {
        let c = client(&ca, None, alpn);
        let r = https(
            s.addr,
            &c,
            "POST",
            "/v1/check",
            &[("content-type", "application/json")],
            CHECK,
        )
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["allowed"], true, "{v}");
        assert_eq!(r.peer, leaf.der);
        assert_eq!(r.alpn.as_deref(), alpn.first().copied());
    }

    // HTTP/2, chosen by ALPN.
    let c = client(&ca, None, &[b"h2", b"http/1.1"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (alpn, version, status, body) = rt.block_on(h2_check(s.addr, Arc::clone(&c)));
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(version, hyper::Version::HTTP_2);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"allowed\":true"), "{body}");

    // Plain HTTP on the TLS port: a clear 400, in plain HTTP, then the connection closes.
    let failures_before = metric(s.addr, &c, "portcullis_tls_handshake_failures_total");
    let (status, head, body) = s.request("GET", "/healthz", &[], b"");
    assert_eq!(status, 400, "{head}\n{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["code"], "bad_request", "{v}");
    assert!(v["error"].as_str().unwrap().contains("HTTPS"), "{v}");
    assert_eq!(
        metric(s.addr, &c, "portcullis_tls_handshake_failures_total"),
        failures_before + 1
    );

    // A client that does not trust this CA refuses the server.
    let other = client(&Ca::new("other CA"), None, &[]);
    let e = get(s.addr, &other, "/healthz").err().unwrap();
    assert!(e.to_lowercase().contains("certificate"), "{e}");
}

async fn h2_check(
    addr: SocketAddr,
    cfg: Arc<ClientConfig>,
) -> (Option<Vec<u8>>, hyper::Version, u16, String) {
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .unwrap();
    let alpn = tls.get_ref().1.alpn_protocol().map(|p| p.to_vec());
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::post("https://localhost/v1/check")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(CHECK)))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let (version, status) = (resp.version(), resp.status().as_u16());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        alpn,
        version,
        status,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[test]
fn certificates_reload_without_restart_and_a_broken_file_keeps_the_old_one() {
    let ca = Ca::new("test CA");
    let first = ca.leaf("portcullis-1", 1, false);
    let setup = Setup::new(&first, "", "");
    let s = setup.start();
    let c = client(&ca, None, &[]);
    let served = |want: &Leaf| get(s.addr, &c, "/healthz").unwrap().peer == want.der;
    assert!(served(&first));
    let errors = || metric(s.addr, &c, "portcullis_tls_reload_errors_total");
    assert_eq!(errors(), 0);
    let (cert, key) = (setup.path("server.crt"), setup.path("server.key"));

    // A new certificate (other CN, serial and key): served to new handshakes, no restart.
    let second = ca.leaf("portcullis-2", 2, false);
    write_file(&key, &second.key_pem);
    write_file(&cert, &second.cert_pem);
    assert!(
        eventually(10, || served(&second)),
        "the new certificate was not picked up; log:\n{}",
        s.log.lock().unwrap()
    );
    assert!(s.log.lock().unwrap().contains("TLS certificate reloaded"));

    // A broken certificate file: the previous certificate stays, the error is logged naming
    // the file and counted.
    write_file(&cert, "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n");
    assert!(eventually(10, || errors() == 1), "errors: {}", errors());
    assert!(served(&second));
    {
        let log = s.log.lock().unwrap();
        assert!(log.contains("TLS certificate reload failed"), "{log}");
        assert!(log.contains(&cert.display().to_string()), "{log}");
    }

    // A certificate whose key is another one's: refused too.
    let third = ca.leaf("portcullis-3", 3, false);
    write_file(&cert, &third.cert_pem);
    assert!(eventually(10, || errors() == 2), "errors: {}", errors());
    assert!(served(&second));
    assert!(s
        .log
        .lock()
        .unwrap()
        .contains("does not match the certificate"));

    // Its key arrives: the pair is served.
    write_file(&key, &third.key_pem);
    assert!(eventually(10, || served(&third)));
    assert_eq!(errors(), 2);
    // Key material never reaches the log.
    let log = s.log.lock().unwrap();
    for leaf in [&first, &second, &third] {
        let body = leaf.key_pem.lines().nth(1).unwrap();
        assert!(!log.contains(body), "key material in the log");
    }
}

#[test]
fn mutual_tls_refuses_missing_and_foreign_client_certificates() {
    let ca = Ca::new("test CA");
    let leaf = ca.leaf("portcullis", 1, false);
    let clients = Ca::new("clients CA");
    let dir_ca = tempfile::tempdir().unwrap();
    let ca_file = dir_ca.path().join("clients.crt");
    std::fs::write(&ca_file, clients.pem()).unwrap();
    let setup = Setup::new(
        &leaf,
        &format!(
            "  client_ca_file: {}\n  require_client_cert: true\n",
            ca_file.display()
        ),
        "",
    );
    let s = setup.start();

    let good = clients.leaf("gateway-1", 10, true);
    let with_good = client(&ca, Some(&good), &[]);
    let r = https(
        s.addr,
        &with_good,
        "POST",
        "/v1/check",
        &[("content-type", "application/json")],
        CHECK,
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);

    let before = metric(
        s.addr,
        &with_good,
        "portcullis_tls_handshake_failures_total",
    );
    // No client certificate.
    let e = get(s.addr, &client(&ca, None, &[]), "/healthz")
        .err()
        .expect("served without a client certificate");
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    // A certificate from another CA (even one the server's own CA signed).
    for (name, foreign) in [
        (
            "foreign CA",
            Ca::new("foreign CA").leaf("intruder", 11, true),
        ),
        ("server CA", ca.leaf("intruder", 12, true)),
    ] {
        let e = get(s.addr, &client(&ca, Some(&foreign), &[]), "/healthz")
            .err()
            .unwrap_or_else(|| panic!("served with a certificate from the {name}"));
        assert!(!e.is_empty(), "{name}");
    }
    assert_eq!(
        metric(
            s.addr,
            &with_good,
            "portcullis_tls_handshake_failures_total"
        ),
        before + 3
    );
}

#[test]
fn the_management_listener_serves_tls_with_the_admin_token() {
    let ca = Ca::new("test CA");
    let data = ca.leaf("portcullis-data", 1, false);
    let admin = ca.leaf("portcullis-admin", 2, false);
    let dir = tempfile::tempdir().unwrap();
    write_file(&dir.path().join("admin.crt"), &admin.cert_pem);
    write_file(&dir.path().join("admin.key"), &admin.key_pem);
    let setup = Setup::new(
        &data,
        "",
        &format!(
            "admin_listen: 127.0.0.1:0\nadmin_tls:\n  cert_file: {}\n  key_file: {}\n",
            dir.path().join("admin.crt").display(),
            dir.path().join("admin.key").display()
        ),
    );
    let s = setup.start();
    let admin_addr: SocketAddr = {
        let log = s.log.lock().unwrap();
        let line = log
            .lines()
            .find(|l| l.contains("management API listening"))
            .unwrap();
        let rest = &line[line.find("addr=").unwrap() + 5..];
        rest[..rest.find(' ').unwrap_or(rest.len())]
            .parse()
            .unwrap()
    };
    let c = client(&ca, None, &[]);
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let r = https(
        admin_addr,
        &c,
        "GET",
        "/v1/tenants",
        &[("authorization", &auth)],
        "",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("femo"), "{}", r.body);
    assert_eq!(
        r.peer, admin.der,
        "the admin listener has its own certificate"
    );
    let r = get(admin_addr, &c, "/v1/tenants").unwrap();
    assert_eq!(r.status, 401, "{}", r.body);
    // The data plane keeps its certificate and does not serve the management API.
    let r = https(
        s.addr,
        &c,
        "GET",
        "/v1/tenants",
        &[("authorization", &auth)],
        "",
    )
    .unwrap();
    assert_eq!(r.peer, data.der);
    assert_eq!(r.status, 404, "{}", r.body);
}

#[test]
fn a_client_that_never_completes_a_handshake_is_closed_by_the_first_request_timeout() {
    let ca = Ca::new("test CA");
    let leaf = ca.leaf("portcullis", 1, false);
    let setup = Setup::new(
        &leaf,
        "",
        "limits:\n  first_request_timeout_ms: 500\n  max_pending_connections: 4\n",
    );
    let s = setup.start();
    let c = client(&ca, None, &[]);
    // Silent sockets, and half a ClientHello (a record header announcing bytes never sent).
    let mut held = Vec::new();
    for i in 0..3 {
        let mut t = TcpStream::connect(s.addr).unwrap();
        if i > 0 {
            t.write_all(&[0x16, 0x03, 0x01, 0x01, 0x00, 0x01]).unwrap();
        }
        held.push(t);
    }
    // A real client is served meanwhile.
    assert_eq!(get(s.addr, &c, "/healthz").unwrap().status, 200);
    for t in &mut held {
        let started = Instant::now();
        t.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        let closed = match t.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        };
        assert!(closed, "a silent TLS socket was not closed");
        assert!(started.elapsed() < Duration::from_secs(3));
    }
    assert!(
        metric(
            s.addr,
            &c,
            "portcullis_connections_closed_total{reason=\"first_request_timeout\"}"
        ) >= 3
    );
    // More silent sockets than the pending bound: the oldest is evicted, a real client served.
    let _more: Vec<_> = (0..8)
        .map(|_| TcpStream::connect(s.addr).unwrap())
        .collect();
    assert_eq!(get(s.addr, &c, "/healthz").unwrap().status, 200);
}

/// Runs `serve` with `config` and expects it to fail at start: its exit code and log.
fn failed_start(config: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, config).unwrap();
    let store = dir.path().join("store");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .arg("--store")
        .arg(&store)
        .env("PORTCULLIS_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("PORTCULLIS_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("serve did not stop with config:\n{config}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(!log.contains("portcullis listening"), "{log}");
    assert!(!store.exists(), "a failed start created the store: {log}");
    (status.code(), log)
}

#[test]
fn bad_certificates_keys_and_settings_stop_the_start_naming_the_file() {
    let ca = Ca::new("test CA");
    let leaf = ca.leaf("portcullis", 1, false);
    let other = ca.leaf("other", 2, false);
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    write_file(&p("good.crt"), &leaf.cert_pem);
    write_file(&p("good.key"), &leaf.key_pem);
    write_file(&p("other.key"), &other.key_pem);
    write_file(&p("garbage.crt"), "hello\n");
    write_file(&p("nokey.key"), &leaf.cert_pem);
    std::fs::write(p("open.key"), &leaf.key_pem).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p("open.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let block = |cert: &str, key: &str| {
        format!(
            "tls:\n  cert_file: {}\n  key_file: {}\n",
            p(cert).display(),
            p(key).display()
        )
    };
    let cases: Vec<(String, Vec<String>)> = vec![
        (
            block("missing.crt", "good.key"),
            vec![
                "tls.cert_file".into(),
                p("missing.crt").display().to_string(),
                "cannot be read".into(),
            ],
        ),
        (
            block("good.crt", "missing.key"),
            vec![
                "tls.key_file".into(),
                p("missing.key").display().to_string(),
            ],
        ),
        (
            block("garbage.crt", "good.key"),
            vec![
                p("garbage.crt").display().to_string(),
                "no CERTIFICATE".into(),
            ],
        ),
        (
            block("good.crt", "nokey.key"),
            vec![
                p("nokey.key").display().to_string(),
                "no private key".into(),
            ],
        ),
        (
            block("good.crt", "other.key"),
            vec![
                "does not match".into(),
                p("other.key").display().to_string(),
            ],
        ),
        (
            block("good.crt", "open.key"),
            vec![p("open.key").display().to_string(), "chmod 600".into()],
        ),
        (
            format!("tls:\n  cert_file: {}\n", p("good.crt").display()),
            vec!["tls.cert_file and tls.key_file go together".into()],
        ),
        (
            format!(
                "{}  require_client_cert: true\n",
                block("good.crt", "good.key")
            ),
            vec!["tls.require_client_cert needs tls.client_ca_file".into()],
        ),
        (
            format!(
                "{}  client_ca_file: {}\n",
                block("good.crt", "good.key"),
                p("missing-ca.crt").display()
            ),
            vec!["tls.client_ca_file".into(), "cannot be read".into()],
        ),
        (
            format!(
                "admin_tls:\n  cert_file: {}\n  key_file: {}\n",
                p("good.crt").display(),
                p("good.key").display()
            ),
            vec!["admin_tls needs admin_listen".into()],
        ),
    ];
    for (config, wants) in cases {
        let (code, log) = failed_start(&config);
        assert_eq!(code, Some(1), "{config}\n{log}");
        for w in wants {
            assert!(log.contains(&w), "{config}: wanted {w:?} in\n{log}");
        }
        let key_line = leaf.key_pem.lines().nth(1).unwrap();
        assert!(
            !log.contains("-----BEGIN") && !log.contains(key_line),
            "{log}"
        );
    }
}

#[test]
fn an_optional_client_certificate_must_still_chain_to_the_client_ca() {
    let ca = Ca::new("test CA");
    let leaf = ca.leaf("portcullis", 1, false);
    let clients = Ca::new("clients CA");
    let dir_ca = tempfile::tempdir().unwrap();
    let ca_file = dir_ca.path().join("clients.crt");
    std::fs::write(&ca_file, clients.pem()).unwrap();
    let setup = Setup::new(
        &leaf,
        &format!("  client_ca_file: {}\n", ca_file.display()),
        "",
    );
    let s = setup.start();
    // No certificate: served (require_client_cert is off).
    assert_eq!(
        get(s.addr, &client(&ca, None, &[]), "/healthz")
            .unwrap()
            .status,
        200
    );
    // The right one: served; another CA's: refused.
    let good = clients.leaf("gateway", 2, true);
    assert_eq!(
        get(s.addr, &client(&ca, Some(&good), &[]), "/healthz")
            .unwrap()
            .status,
        200
    );
    let foreign = Ca::new("foreign CA").leaf("intruder", 3, true);
    assert!(get(s.addr, &client(&ca, Some(&foreign), &[]), "/healthz").is_err());
}
