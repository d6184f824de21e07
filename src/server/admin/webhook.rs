//! A minimal outgoing HTTP/1.1 client for webhooks (invitations): `POST` a JSON body to an
//! `http://host:port/path` URL, with a timeout. No TLS, no redirects, no retries here.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;

/// Longest a webhook call may take.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// POSTs `body` (JSON) to `url`; Ok on a 2xx answer.
pub async fn post_json(url: &str, body: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("'{url}' is not an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let call = async {
        let stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| format!("connect {authority}: {e}"))?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::post(path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())?;
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let _ = resp.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("answered {status}"))
        }
    };
    tokio::time::timeout(TIMEOUT, call)
        .await
        .map_err(|_| "timed out".to_string())?
}
