//! hyper's own answers to what it cannot parse, made JSON like every other refusal.
//!
//! When hyper cannot read a request head — a garbled request line or header, more headers
//! than its (raised, [`crate::headers`]) limits, an over-long URI — it answers by itself,
//! before any of our code sees a request: a bare status line with `content-length: 0`, then
//! it closes the connection. hyper has no hook to change that answer, so the connection's
//! byte stream is wrapped here: a write that is exactly such an automatic answer (one of the
//! three status lines hyper uses, only the headers hyper adds, nothing after the head) is
//! replaced by the same status with a JSON `{code, message}` body. Every other byte passes
//! through unchanged. Our own answers never match: every refusal the routes make has a body
//! and a content type ([`crate::error::ApiError`]).
//!
//! The wrapper reports itself as not vectored, so hyper flattens each response into one
//! buffer and the automatic head arrives in one write.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tacit_rm::sync::protocol::ErrorBody;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::ErrorCode;
use crate::headers::{MAX_HEADERS, MAX_HEADER_BYTES};

/// A connection's stream whose hyper-made parse-error answers carry a JSON body.
pub struct JsonParseErrors<S> {
    inner: S,
    /// A rewritten answer still to send, and how much of it is sent.
    out: Vec<u8>,
    sent: usize,
}

impl<S> JsonParseErrors<S> {
    pub fn new(inner: S) -> Self {
        JsonParseErrors {
            inner,
            out: Vec::new(),
            sent: 0,
        }
    }
}

impl<S: AsyncWrite + Unpin> JsonParseErrors<S> {
    /// Sends what is left of a rewritten answer.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.out.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonParseErrors<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonParseErrors<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // What a rewrite left goes first, so that bytes keep their order.
        ready!(self.poll_drain(cx))?;
        if let Some(answer) = rewrite(buf) {
            self.out = answer;
            self.sent = 0;
            // Accepted whole; what the socket does not take now goes at the next flush.
            if let Poll::Ready(Err(e)) = self.poll_drain(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The JSON answer for `head` if it is one of hyper's automatic parse-error answers.
fn rewrite(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let lines = text.strip_suffix("\r\n\r\n")?;
    let mut lines = lines.split("\r\n");
    let status_line = lines.next()?;
    let (code, message) = match status_line {
        "HTTP/1.1 400 Bad Request" => (
            ErrorCode::BadRequest,
            "the request line or a header is not valid HTTP/1.1".to_string(),
        ),
        "HTTP/1.1 431 Request Header Fields Too Large" => (
            ErrorCode::HeadersTooLarge,
            format!(
                "far more than {MAX_HEADERS} request headers or {MAX_HEADER_BYTES} bytes of them"
            ),
        ),
        "HTTP/1.1 414 URI Too Long" => (
            ErrorCode::UriTooLong,
            "the request target is longer than the server reads".to_string(),
        ),
        _ => return None,
    };
    // Only the headers hyper adds to an answer of its own; anything else is not one.
    let mut kept = Vec::new();
    for line in lines {
        let lower = line.to_ascii_lowercase();
        if lower == "content-length: 0" {
            continue;
        }
        if lower.starts_with("date: ") || lower == "connection: close" {
            kept.push(line);
            continue;
        }
        return None;
    }
    let body = serde_json::to_vec(&ErrorBody {
        code: code.as_str().to_string(),
        message,
    })
    .ok()?;
    let mut answer = format!(
        "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for line in kept {
        answer.push_str(line);
        answer.push_str("\r\n");
    }
    answer.push_str("\r\n");
    let mut answer = answer.into_bytes();
    answer.extend_from_slice(&body);
    Some(answer)
}

#[cfg(test)]
mod tests {
    use super::rewrite;

    #[test]
    fn only_hyper_s_bare_answers_are_rewritten() {
        let bare = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Thu, 03 Dec 2026 11:00:00 GMT\r\n\r\n";
        let answer = String::from_utf8(rewrite(bare).unwrap()).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert_eq!(
            head,
            format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\ndate: Thu, 03 Dec 2026 11:00:00 GMT",
                body.len()
            )
        );
        assert!(
            body.starts_with(r#"{"code":"bad_request","message":""#),
            "{body}"
        );
        // Any header hyper does not add, a body, or another status: not hyper's own answer.
        for other in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{}",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
            b"\x00\x01binary body bytes",
        ] {
            assert!(rewrite(other).is_none(), "{:?}", String::from_utf8_lossy(other));
        }
    }
}
