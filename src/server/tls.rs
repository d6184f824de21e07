//! TLS on the listeners: rustls with the *ring* provider (no OpenSSL), HTTP/1.1 and HTTP/2 by
//! ALPN, optional client certificates (mutual TLS), and certificates reloaded without a restart.
//!
//! - A listener's certificate and key are read at start; a missing, unreadable or mismatched
//!   file stops the start with an error naming it, before any port is bound.
//! - Every handshake takes the current certificate from an [`ArcSwap`] ([`Current`], the
//!   `ResolvesServerCert` of the listener): one atomic load and reference count, no lock.
//! - [`Tls::watch`] polls the certificate and key files (size, mtime, inode) every
//!   `reload_interval_ms`; when either changed (and then stayed unchanged for one more poll),
//!   both are read again and, when they load and match, swapped in for new handshakes (open
//!   connections keep theirs). A file that does not
//!   load keeps the previous certificate, logs an error naming the file and counts
//!   `portcullis_tls_reload_errors_total`; the next change is tried again.
//! - The handshake runs in the connection's task, under its admission watchdog
//!   (`server::conn`): the first-request timeout runs from accept, so a client that opens TCP
//!   and never completes a handshake is closed like any silent socket.
//! - Plain HTTP sent to a TLS port is answered `400 bad_request` in plain HTTP (a clear error
//!   instead of a reset), and the connection is closed.
//!
//! Key material never reaches a log line or an error message; errors name files and settings.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use prometheus::IntCounter;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::config::TlsConfig;

/// Why a listener's TLS cannot be set up (at start) or reloaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{setting} '{path}': {problem}")]
    File {
        setting: String,
        path: String,
        problem: String,
    },
    #[error("{listener}: the key in '{key}' does not match the certificate in '{cert}'")]
    Mismatch {
        listener: String,
        cert: String,
        key: String,
    },
    #[error("{listener}: {problem}")]
    Setup { listener: String, problem: String },
}

fn file_error(setting: String, path: &Path, problem: impl Into<String>) -> TlsError {
    TlsError::File {
        setting,
        path: path.display().to_string(),
        problem: problem.into(),
    }
}

/// A PEM problem in words, without quoting the file (it may be a private key).
fn pem_problem(e: &pem::Error) -> &'static str {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a PEM block has no END line",
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a PEM block is not valid base64",
        pem::Error::NoItemsFound => "no PEM block found",
        _ => "not valid PEM",
    }
}

fn read(setting: String, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| file_error(setting, path, format!("cannot be read ({e})")))
}

/// Every certificate of a PEM file (at least one).
fn load_certs(setting: String, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(setting.clone(), path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(setting.clone(), path, pem_problem(&e)))?;
    if certs.is_empty() {
        return Err(file_error(setting, path, "holds no CERTIFICATE block"));
    }
    Ok(certs)
}

/// The private key of a PEM file, refused when group or others may read or write the file.
fn load_key(setting: String, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path)
            .map_err(|e| file_error(setting.clone(), path, format!("cannot be read ({e})")))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o066 != 0 {
            return Err(file_error(
                setting,
                path,
                format!("mode {mode:03o} lets group or others read or write it; `chmod 600` it"),
            ));
        }
    }
    let bytes = read(setting.clone(), path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        let problem = match e {
            pem::Error::NoItemsFound => {
                "holds no private key (a PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block)"
            }
            other => pem_problem(&other),
        };
        file_error(setting, path, problem)
    })
}

/// The certificate and key files of one listener.
#[derive(Debug, Clone)]
struct Files {
    /// `tls` or `admin_tls`: names the settings in errors and logs.
    listener: &'static str,
    cert: PathBuf,
    key: PathBuf,
}

/// What tells a file changed: size, modification time and inode (a replaced file or a moved
/// symlink has a new one). `None`: the file cannot be seen.
type Stamp = Option<(u64, Option<SystemTime>, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some((m.len(), m.modified().ok(), ino))
}

impl Files {
    fn stamps(&self) -> (Stamp, Stamp) {
        (stamp(&self.cert), stamp(&self.key))
    }

    /// Reads the certificate chain and key, checks they belong together.
    fn load(&self, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
        let l = self.listener;
        let certs = load_certs(format!("{l}.cert_file"), &self.cert)?;
        let key = load_key(format!("{l}.key_file"), &self.key)?;
        let signing = provider.key_provider.load_private_key(key).map_err(|e| {
            file_error(
                format!("{l}.key_file"),
                &self.key,
                format!("the key cannot be used ({e})"),
            )
        })?;
        let certified = CertifiedKey::new(certs, signing);
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {
                Ok(certified)
            }
            Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::Mismatch {
                listener: l.to_string(),
                cert: self.cert.display().to_string(),
                key: self.key.display().to_string(),
            }),
            Err(e) => Err(file_error(
                format!("{l}.cert_file"),
                &self.cert,
                format!("the first certificate cannot be parsed ({e})"),
            )),
        }
    }
}

/// The certificate new handshakes get; swapped whole by a reload.
#[derive(Debug)]
struct Current(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// SHA-256 of a certificate chain's first certificate, hex (for logs: which one is served).
fn fingerprint(key: &CertifiedKey) -> String {
    key.cert
        .first()
        .map(|c| crate::model::hex(&Sha256::digest(c.as_ref())))
        .unwrap_or_default()
}

/// The crypto provider: *ring*, the faster to build here (`cargo build -p ring`, clean: 24 s;
/// `-p aws-lc-rs`: 61 s, it compiles the AWS-LC C library). rustls 0.23.48 deprecates ring's
/// provider because it offers no post-quantum key exchange (X25519MLKEM768): classical X25519,
/// P-256 and P-384 only. Moving to aws-lc-rs changes this function and the Cargo features.
#[allow(deprecated)]
fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// How a connection's TLS handshake did not complete.
pub enum Refused {
    /// The client sent plain HTTP (answer it with [`refuse_plain_http`]).
    PlainHttp(TcpStream),
    /// The handshake failed: a TLS error (`InvalidData`: protocol, client certificate missing
    /// or refused, no common protocol) or the peer went away.
    Handshake(std::io::Error),
    /// The client closed the connection before sending anything.
    Closed,
}

/// TLS of one listener.
pub struct Tls {
    files: Files,
    /// Poll period of the files; `None`: no reloads.
    interval: Option<Duration>,
    provider: Arc<CryptoProvider>,
    current: Arc<Current>,
    acceptor: TlsAcceptor,
    /// The files' stamps taken before the certificate in use was read.
    loaded: (Stamp, Stamp),
}

impl Tls {
    /// The TLS of the listener whose settings are `config` (named `listener` in errors:
    /// `tls` or `admin_tls`); `None` when it serves plain HTTP.
    pub fn new(listener: &'static str, config: &TlsConfig) -> Result<Option<Arc<Tls>>, TlsError> {
        let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) else {
            return Ok(None);
        };
        let setup = |problem: String| TlsError::Setup {
            listener: listener.to_string(),
            problem,
        };
        let files = Files {
            listener,
            cert: cert.clone(),
            key: key.clone(),
        };
        let provider = Arc::new(provider());
        let loaded = files.stamps();
        let first = files.load(&provider)?;
        let current = Arc::new(Current(ArcSwap::from_pointee(first)));
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| setup(e.to_string()))?;
        let builder = match &config.client_ca_file {
            Some(ca) => {
                let setting = format!("{listener}.client_ca_file");
                let mut roots = RootCertStore::empty();
                for c in load_certs(setting.clone(), ca)? {
                    roots.add(c).map_err(|e| {
                        file_error(
                            setting.clone(),
                            ca,
                            format!("holds a certificate that is not a usable CA ({e})"),
                        )
                    })?;
                }
                let mut verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&provider),
                );
                if !config.require_client_cert {
                    verifier = verifier.allow_unauthenticated();
                }
                let verifier = verifier
                    .build()
                    .map_err(|e| file_error(setting, ca, e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut server =
            builder.with_cert_resolver(Arc::clone(&current) as Arc<dyn ResolvesServerCert>);
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(Arc::new(Tls {
            files,
            interval: (config.reload_interval_ms > 0)
                .then(|| Duration::from_millis(config.reload_interval_ms)),
            provider,
            current,
            acceptor: TlsAcceptor::from(Arc::new(server)),
            loaded,
        })))
    }

    /// `tls` or `admin_tls`.
    pub fn listener(&self) -> &'static str {
        self.files.listener
    }

    /// SHA-256 of the certificate new handshakes get, hex.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.current.0.load())
    }

    /// The TLS handshake of an accepted connection.
    pub async fn accept(&self, stream: TcpStream) -> Result<TlsStream<TcpStream>, Refused> {
        // A TLS connection starts with a handshake record (0x16); an HTTP request with a
        // method's capital letter.
        let mut first = [0u8; 1];
        match stream.peek(&mut first).await {
            Ok(0) => return Err(Refused::Closed),
            Ok(_) if first[0].is_ascii_uppercase() => return Err(Refused::PlainHttp(stream)),
            Ok(_) => {}
            Err(e) => return Err(Refused::Handshake(e)),
        }
        self.acceptor
            .accept(stream)
            .await
            .map_err(Refused::Handshake)
    }

    /// Polls the certificate and key files and swaps in a changed pair that loads; runs until
    /// the task is aborted (returns at once when reloads are off). A change is loaded once the
    /// files have stayed the same for one more poll, so a certificate and key written one after
    /// the other are read as a pair.
    pub async fn watch(self: Arc<Self>, errors: IntCounter) {
        let Some(every) = self.interval else {
            return;
        };
        // The stamps of the pair in use (or that last failed), and those seen at the last poll.
        let mut loaded = self.loaded;
        let mut last = self.loaded;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = self.files.stamps();
            let settled = now == last;
            last = now;
            if now == loaded || !settled {
                continue;
            }
            loaded = now;
            self.reload(&errors);
        }
    }

    /// Reads the files again: swaps the pair in, or keeps the current one and reports why.
    fn reload(&self, errors: &IntCounter) {
        let listener = self.files.listener;
        let cert = self.files.cert.display();
        match self.files.load(&self.provider) {
            Ok(key) => {
                let sha256 = fingerprint(&key);
                self.current.0.store(Arc::new(key));
                tracing::info!(listener, %cert, %sha256, "TLS certificate reloaded");
            }
            Err(e) => {
                errors.inc();
                tracing::error!(
                    listener,
                    error = %e,
                    "TLS certificate reload failed; the previous certificate stays in use"
                );
            }
        }
    }
}

/// Answers plain HTTP sent to a TLS port with `400 bad_request` (plain HTTP, JSON body), then
/// closes. What the client sent is read first, briefly, so the close does not reset the
/// connection before the client reads the answer.
pub async fn refuse_plain_http(mut stream: TcpStream) {
    const BODY: &str = "{\"error\":\"this port serves HTTPS (TLS); plain HTTP is refused: use \
                        https://\",\"code\":\"bad_request\"}";
    let head = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\n\
         content-length: {}\r\n\r\n",
        BODY.len()
    );
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await;
    if stream.write_all(head.as_bytes()).await.is_err()
        || stream.write_all(BODY.as_bytes()).await.is_err()
    {
        return;
    }
    let _ = stream.shutdown().await;
    // Until the client closes (it reads the answer, then closes): at most 64 KiB, one second.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut left = 64 * 1024usize;
        while left > 0 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}
