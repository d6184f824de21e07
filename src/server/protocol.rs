//! Protocol-level errors with the service's error body.
//!
//! hyper answers a request it cannot parse itself, before any handler runs: `400 Bad Request`
//! for an unparsable request line or header, `431 Request Header Fields Too Large` for headers
//! over the buffer. It sends them with `connection: close` and an empty body. A client of this
//! service expects every error as `{"error","code"}`, so [`ErrorBodies`] rewrites exactly those
//! heads on their way out. The service's own 4xx answers always carry a JSON body, so a head with
//! `content-length: 0` and `connection: close` can only be hyper's.
//!
//! Cost on every write: one 10-byte prefix compare (HTTP/2 frames never start with
//! `HTTP/1.1 4`: that would be a frame length above the largest frame size).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// hyper's own error heads carry these two headers in this order (hyper 1.x).
const MARK: &[u8] = b"\r\nconnection: close\r\ncontent-length: 0\r\n";

/// The JSON answer for a protocol-level error with this status line, or `None` when `head` is
/// not one of hyper's own error heads.
fn rewrite(head: &[u8]) -> Option<Vec<u8>> {
    if !head.starts_with(b"HTTP/1.1 4") {
        return None;
    }
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    if end != head.len() {
        return None;
    }
    let mark = head.windows(MARK.len()).position(|w| w == MARK)?;
    let (code, error) = match head.get(9..12)? {
        b"431" => (
            "headers_too_large",
            "the request's header fields are too large",
        ),
        b"400" => ("bad_request", "the request is not valid HTTP"),
        _ => return None,
    };
    let body = format!("{{\"error\":\"{error}\",\"code\":\"{code}\"}}");
    let mut out = Vec::with_capacity(head.len() + body.len() + 64);
    out.extend_from_slice(&head[..mark]);
    out.extend_from_slice(b"\r\nconnection: close\r\ncontent-type: application/json\r\n");
    out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    out.extend_from_slice(&head[mark + MARK.len()..]);
    out.extend_from_slice(body.as_bytes());
    Some(out)
}

/// A connection's byte stream that gives hyper's protocol-level errors a JSON body.
pub struct ErrorBodies<T> {
    inner: T,
    /// A rewritten head being written: (bytes, written so far, length hyper asked to write).
    pending: Option<(Vec<u8>, usize, usize)>,
}

impl<T> ErrorBodies<T> {
    pub fn new(inner: T) -> ErrorBodies<T> {
        ErrorBodies {
            inner,
            pending: None,
        }
    }
}

impl<T: AsyncWrite + Unpin> ErrorBodies<T> {
    /// Writes the pending rewrite; `Ready(Ok(n))` with hyper's length once all of it is out.
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        while let Some((bytes, done, _)) = self.pending.as_mut() {
            if *done >= bytes.len() {
                break;
            }
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*done..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *done += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let asked = self.pending.take().map_or(0, |p| p.2);
        Poll::Ready(Ok(asked))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ErrorBodies<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ErrorBodies<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.is_none() {
            match rewrite(buf) {
                Some(bytes) => this.pending = Some((bytes, 0, buf.len())),
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        this.drive(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.is_none() {
            let first = bufs.iter().find(|b| !b.is_empty());
            match first.and_then(|b| rewrite(b).map(|r| (r, b.len()))) {
                Some((bytes, len)) => this.pending = Some((bytes, 0, len)),
                None => return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
            }
        }
        this.drive(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn hyper_error_heads_get_a_json_body_and_others_pass() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Mon, 07 Dec 2026 21:01:16 GMT\r\n\r\n";
        let out = String::from_utf8(rewrite(head).unwrap()).unwrap();
        let (h, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(h.starts_with("HTTP/1.1 431 "), "{h}");
        assert!(h.contains("content-type: application/json"), "{h}");
        assert!(
            h.contains(&format!("content-length: {}", body.len())),
            "{h}"
        );
        assert!(h.contains("date: Mon"), "{h}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["code"], "headers_too_large");
        let bad = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert!(String::from_utf8(rewrite(bad).unwrap())
            .unwrap()
            .ends_with("\"code\":\"bad_request\"}"));
        // The service's own answers are never touched.
        for other in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 10\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n{\"a\":1}",
            b"\x00\x00\x12\x04\x00\x00\x00\x00\x00",
        ] {
            assert!(rewrite(other).is_none());
        }
    }
}
