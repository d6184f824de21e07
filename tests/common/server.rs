#![allow(dead_code)]
//! Runs the real `portcullis` binary on a free loopback port for integration tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    pub addr: SocketAddr,
    pub child: Child,
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
    /// A private embedded store, when the caller did not pass `--store`.
    store_dir: Option<std::path::PathBuf>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(d) = &self.store_dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

impl Server {
    /// Starts `portcullis serve --listen 127.0.0.1:0` with extra args and waits until it is ready.
    /// Without `--data`, the store is seeded with the demo data (`deploy/demo.yaml`) when it has
    /// no tenants.
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(args);
        if !args.contains(&"--data") {
            cmd.arg("--data")
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/demo.yaml"));
        }
        let store_dir = if args.contains(&"--store") {
            None
        } else {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let d =
                std::env::temp_dir().join(format!("portcullis-test-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            cmd.arg("--store").arg(&d);
            Some(d)
        };
        cmd.env("PORTCULLIS_LOG", "info");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        Server::launch(cmd, store_dir)
    }

    /// Starts `portcullis sidecar --listen 127.0.0.1:0` with `args` (`--nats URL`, …) and waits
    /// until it listens (not until it is ready: see `/readyz`).
    pub fn start_sidecar(args: &[&str]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        cmd.arg("sidecar")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(args)
            .env("PORTCULLIS_LOG", "info");
        Server::launch(cmd, None)
    }

    /// Spawns `cmd` and waits for its "portcullis listening" log line.
    fn launch(mut cmd: Command, store_dir: Option<std::path::PathBuf>) -> Server {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn portcullis");
        let stderr = child.stderr.take().expect("stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log2.lock().unwrap().push_str(&line);
                log2.lock().unwrap().push('\n');
                if !sent {
                    if let Some(i) = line
                        .find("addr=")
                        .filter(|_| line.contains("portcullis listening"))
                    {
                        let rest = &line[i + 5..];
                        let end = rest.find(' ').unwrap_or(rest.len());
                        if let Ok(a) = rest[..end].parse::<SocketAddr>() {
                            let _ = tx.send(a);
                            sent = true;
                        }
                    }
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("server did not start; log:\n{}", log.lock().unwrap());
            }
        };
        Server {
            addr,
            child,
            log,
            store_dir,
        }
    }

    /// One HTTP/1.1 request on a fresh connection; returns (status, headers, body).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String, String) {
        raw_request(self.addr, method, path, headers, body)
    }

    /// A management call with bearer `token` and a JSON body (`Null`: none); the answer's
    /// status and JSON (`Null` when the body is not JSON).
    pub fn admin_call(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let auth = format!("Bearer {token}");
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let (st, _, b) = self.request(method, path, &headers, body.as_bytes());
        (
            st,
            serde_json::from_str(&b).unwrap_or(serde_json::Value::Null),
        )
    }

    pub fn post_json(&self, path: &str, body: &str) -> (u16, serde_json::Value) {
        let (s, _, b) = self.request(
            "POST",
            path,
            &[("content-type", "application/json")],
            body.as_bytes(),
        );
        let v = serde_json::from_str(&b).unwrap_or_else(|e| panic!("non-JSON body ({e}): {b}"));
        (s, v)
    }
}

pub fn raw_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(Instant::now() < deadline, "request timed out");
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // Bodies here are small; hyper answers with content-length (no chunking) for Full bodies.
    (status, head.to_string(), body.to_string())
}

/// The value of header `name` in a response head (case-insensitive).
pub fn header_of(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}
