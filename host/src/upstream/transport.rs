//! The HTTP exchange with one upstream: a POST with a JSON body, and a reply
//! whose body is read chunk by chunk.
//!
//! A plain `http://` upstream (a model server next to the gateway: vLLM,
//! Ollama, a sidecar, the simulator) is reached over HTTP/1.1 connections the
//! request drives in its own task: the pool hands a connection to one request
//! at a time, and that request polls the connection while it waits for the
//! answer and reads its body. A pooled client (reqwest's) instead keeps every
//! connection in a task of its own, so each request and each body chunk
//! crosses tasks through channels: on a co-located upstream that hand-over,
//! with the client's other layers, was a quarter of the gateway's CPU per
//! request (bench/README.md).
//!
//! An `https://` upstream (a hosted provider) keeps the shared reqwest client:
//! TLS, HTTP/2 and the network cost far more than the hand-over, and one h2
//! connection serves many requests.
//!
//! Connections reach the upstream directly: `HTTP_PROXY` and friends are not
//! consulted for `http://` upstreams.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// Longest a new connection may take to open: a provider that cannot accept
/// one in seconds is down, whatever the request's own deadline.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle connections kept per upstream (as the shared client keeps per host).
const MAX_IDLE: usize = 64;
/// How long an idle connection is kept before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// TCP keepalive on every connection, so a dead peer is noticed.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

const USER_AGENT: &str = concat!("agentrouter/", env!("CARGO_PKG_VERSION"));

/// How one upstream is reached.
pub(crate) enum Transport {
    /// `http://`: connections driven in the request's task.
    Direct(Arc<Pool>),
    /// `https://` (or anything else reqwest accepts): the shared client.
    Shared {
        /// The client (its pool is shared by every upstream).
        client: reqwest::Client,
        /// `base_url`, parsed.
        base: reqwest::Url,
    },
}

/// Why an exchange failed below HTTP.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransportError {
    /// The deadline passed.
    #[error("no answer before the deadline")]
    Timeout,
    /// The shared client could not decode the body.
    #[error("{0}")]
    Decode(String),
    /// Refused, reset, closed, or not HTTP.
    #[error("{0}")]
    Io(String),
}

impl From<reqwest::Error> for TransportError {
    fn from(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            Self::Timeout
        } else if e.is_decode() {
            Self::Decode(e.to_string())
        } else {
            Self::Io(e.to_string())
        }
    }
}

impl Transport {
    /// The transport for `base_url` (`http://` is driven in-task), or why
    /// the URL is unusable.
    pub(crate) fn new(base_url: &str, client: reqwest::Client) -> Result<Self, String> {
        let base = reqwest::Url::parse(base_url).map_err(|e| e.to_string())?;
        if base.scheme() != "http" {
            return Ok(Self::Shared { client, base });
        }
        Self::direct(base)
    }

    /// The direct transport to `base`, an `http://` URL.
    fn direct(base: reqwest::Url) -> Result<Self, String> {
        let host = base
            .host_str()
            .ok_or_else(|| "an http URL without a host".to_string())?
            .to_string();
        let port = base.port_or_known_default().unwrap_or(80);
        let authority = match base.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.clone(),
        };
        Ok(Self::Direct(Arc::new(Pool {
            // An IPv6 literal comes bracketed; connecting wants it bare.
            host: host.trim_start_matches('[').trim_end_matches(']').into(),
            port,
            authority: HeaderValue::from_str(&authority).map_err(|e| e.to_string())?,
            base_path: base.path().trim_end_matches('/').to_string(),
            idle: Mutex::new(Vec::new()),
        })))
    }

    /// The target of `{base_url}/{path}`, worked out once per upstream so
    /// a request does no URL parsing.
    pub(crate) fn target(&self, path: &str) -> Result<Target, String> {
        match self {
            Self::Direct(pool) => {
                let uri: Uri = format!("{}/{path}", pool.base_path)
                    .parse()
                    .map_err(|e: hyper::http::uri::InvalidUri| e.to_string())?;
                Ok(Target::Direct(uri))
            }
            Self::Shared { base, .. } => {
                let url = format!("{}/{path}", base.as_str().trim_end_matches('/'));
                reqwest::Url::parse(&url)
                    .map(Target::Shared)
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// POSTs `body` (JSON) to `target` with `headers`; the reply's status
    /// and headers, with its body still to read. `timeout` bounds the
    /// whole exchange, the body included.
    pub(crate) async fn post(
        &self,
        target: &Target,
        mut headers: HeaderMap,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Reply, TransportError> {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        match (self, target) {
            (Self::Direct(pool), Target::Direct(uri)) => {
                pool.post(uri, headers, body.into(), timeout).await
            }
            (Self::Shared { client, .. }, Target::Shared(url)) => {
                let resp = client
                    .post(url.clone())
                    .timeout(timeout)
                    .headers(headers)
                    .body(body)
                    .send()
                    .await?;
                Ok(Reply {
                    status: resp.status(),
                    headers: resp.headers().clone(),
                    body: ReplyBody::Shared(resp),
                })
            }
            _ => Err(TransportError::Io(
                "a target of another transport (a bug)".into(),
            )),
        }
    }
}

/// Where a request goes, resolved at start-up.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// The origin-form URI (`/v1/chat/completions`) on a direct pool.
    Direct(Uri),
    /// The whole URL, for the shared client.
    Shared(reqwest::Url),
}

/// An upstream's answer: status and headers, and the body to read.
pub(crate) struct Reply {
    /// The HTTP status.
    pub(crate) status: StatusCode,
    /// The response headers.
    pub(crate) headers: HeaderMap,
    body: ReplyBody,
}

enum ReplyBody {
    Direct(DirectBody),
    Shared(reqwest::Response),
}

impl Reply {
    /// The next piece of the body; `None` at its end.
    pub(crate) async fn chunk(&mut self) -> Result<Option<Bytes>, TransportError> {
        match &mut self.body {
            ReplyBody::Direct(body) => poll_fn(|cx| body.poll_chunk(cx)).await,
            ReplyBody::Shared(resp) => Ok(resp.chunk().await?),
        }
    }

    /// At most `limit` bytes of the body; `true` when there was more.
    pub(crate) async fn read_capped(
        mut self,
        limit: usize,
    ) -> Result<(Vec<u8>, bool), TransportError> {
        let mut body = Vec::new();
        while let Some(chunk) = self.chunk().await? {
            if body.len() + chunk.len() > limit {
                body.extend_from_slice(&chunk[..limit - body.len()]);
                return Ok((body, true));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, false))
    }
}

type Conn = http1::Connection<TokioIo<TcpStream>, Full<Bytes>>;

/// The idle HTTP/1.1 connections to one `http://` upstream.
pub(crate) struct Pool {
    host: Box<str>,
    port: u16,
    /// The `Host` header.
    authority: HeaderValue,
    /// `base_url`'s path without its trailing `/` (`/v1`).
    base_path: String,
    /// Newest last: a request takes the connection used most recently.
    idle: Mutex<Vec<Idle>>,
}

/// A connection between requests. Nobody polls it while it waits here:
/// the next request does, and finds out then whether the upstream closed
/// it meanwhile.
struct Idle {
    sender: http1::SendRequest<Full<Bytes>>,
    conn: Box<Conn>,
    since: Instant,
}

/// A connection lent to one request.
struct Lent {
    sender: http1::SendRequest<Full<Bytes>>,
    /// `None` once the connection has ended (it is then not returned).
    /// Boxed once per connection, so that moving a reply moves a pointer.
    conn: Option<Box<Conn>>,
    pool: Arc<Pool>,
}

impl Lent {
    /// Drives the connection; it is dropped once it has ended.
    fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(conn) = &mut self.conn
            && Pin::new(&mut **conn).poll(cx).is_ready()
        {
            self.conn = None;
        }
    }

    /// Gives the connection back for the next request, if it can serve one.
    fn give_back(mut self, cx: &mut Context<'_>) {
        // One more turn lets the connection settle after the body's end
        // (or notice that the upstream closes it).
        self.drive(cx);
        if let Some(conn) = self.conn.take()
            && !self.sender.is_closed()
        {
            let idle = Idle {
                sender: self.sender,
                conn,
                since: Instant::now(),
            };
            let mut pool = self.pool.idle.lock().unwrap_or_else(|e| e.into_inner());
            if pool.len() < MAX_IDLE {
                pool.push(idle);
            }
        }
    }
}

impl Pool {
    async fn post(
        self: &Arc<Self>,
        uri: &Uri,
        mut headers: HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Reply, TransportError> {
        let mut deadline = Box::pin(tokio::time::sleep(timeout));
        headers.insert(header::HOST, self.authority.clone());
        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri.clone();
        *request.headers_mut() = headers;
        // A reused connection the upstream closed while it was idle refuses
        // the request before writing it; it is then sent once more, on a new
        // connection. A request already written is never sent twice.
        loop {
            let (mut lent, reused) = match self.checkout(&mut deadline).await? {
                Some(lent) => (lent, true),
                None => (self.connect(&mut deadline).await?, false),
            };
            let mut answer = std::pin::pin!(lent.sender.try_send_request(request));
            let outcome = poll_fn(|cx| {
                lent.drive(cx);
                if let Poll::Ready(outcome) = answer.as_mut().poll(cx) {
                    return Poll::Ready(Ok(outcome));
                }
                deadline
                    .as_mut()
                    .poll(cx)
                    .map(|()| Err(TransportError::Timeout))
            })
            .await?;
            match outcome {
                Ok(resp) => {
                    let (parts, incoming) = resp.into_parts();
                    return Ok(Reply {
                        status: parts.status,
                        headers: parts.headers,
                        body: ReplyBody::Direct(DirectBody {
                            lent: Some(lent),
                            incoming,
                            deadline,
                        }),
                    });
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(TransportError::Io(e.into_error().to_string())),
                },
            }
        }
    }

    /// An idle connection that can take a request now, if there is one.
    async fn checkout(
        self: &Arc<Self>,
        deadline: &mut Pin<Box<Sleep>>,
    ) -> Result<Option<Lent>, TransportError> {
        loop {
            let idle = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                match idle.pop() {
                    Some(conn) => conn,
                    None => return Ok(None),
                }
            };
            if idle.since.elapsed() > IDLE_TIMEOUT {
                continue;
            }
            let mut lent = Lent {
                sender: idle.sender,
                conn: Some(idle.conn),
                pool: self.clone(),
            };
            let ready = poll_fn(|cx| {
                lent.drive(cx);
                if let Poll::Ready(ready) = lent.sender.poll_ready(cx) {
                    return Poll::Ready(Ok(ready.is_ok()));
                }
                deadline
                    .as_mut()
                    .poll(cx)
                    .map(|()| Err(TransportError::Timeout))
            })
            .await?;
            if ready && lent.conn.is_some() {
                return Ok(Some(lent));
            }
        }
    }

    /// A new connection.
    async fn connect(
        self: &Arc<Self>,
        deadline: &mut Pin<Box<Sleep>>,
    ) -> Result<Lent, TransportError> {
        let open = async {
            let stream = tokio::time::timeout(
                CONNECT_TIMEOUT,
                TcpStream::connect((&*self.host, self.port)),
            )
            .await
            .map_err(|_| TransportError::Io(format!("connect: no answer in {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| TransportError::Io(format!("connect: {e}")))?;
            // Requests are small and written at once: Nagle would only
            // hold the last segment back.
            let _ = stream.set_nodelay(true);
            let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
            let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
            let (sender, conn) = http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| TransportError::Io(e.to_string()))?;
            Ok(Lent {
                sender,
                conn: Some(Box::new(conn)),
                pool: self.clone(),
            })
        };
        tokio::select! {
            lent = open => lent,
            () = deadline.as_mut() => Err(TransportError::Timeout),
        }
    }
}

/// A body read from a lent connection, which it drives until the body's
/// end and then gives back to the pool. Dropped before its end, it closes
/// the connection (its unread rest cannot be skipped).
struct DirectBody {
    lent: Option<Lent>,
    incoming: Incoming,
    deadline: Pin<Box<Sleep>>,
}

impl DirectBody {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, TransportError>> {
        loop {
            if let Some(lent) = &mut self.lent {
                lent.drive(cx);
            }
            match Pin::new(&mut self.incoming).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => return Poll::Ready(Ok(Some(data))),
                    // Trailers: nothing to pass on.
                    Err(_) => continue,
                },
                Poll::Ready(Some(Err(e))) => {
                    self.lent = None;
                    return Poll::Ready(Err(TransportError::Io(e.to_string())));
                }
                Poll::Ready(None) => {
                    if let Some(lent) = self.lent.take() {
                        lent.give_back(cx);
                    }
                    return Poll::Ready(Ok(None));
                }
                Poll::Pending => {}
            }
            return match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.lent = None;
                    Poll::Ready(Err(TransportError::Timeout))
                }
                Poll::Pending => Poll::Pending,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    //! The direct transport against a scripted HTTP/1.1 server on a real
    //! socket, which counts the connections and requests it sees.
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// What the server does after reading a request.
    #[derive(Clone, Copy)]
    enum Script {
        /// Answers `ok`, keeping the connection.
        Answer,
        /// Answers `ok`, then closes the connection without saying so.
        AnswerThenClose,
        /// Sends the head and one chunk of a chunked body, then stalls.
        Stall,
        /// Closes the connection without answering.
        Hangup,
    }

    struct Upstream {
        base: String,
        connections: Arc<AtomicUsize>,
        requests: Arc<AtomicUsize>,
    }

    async fn upstream(script: Script) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/v1", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (c, r) = (connections.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                c.fetch_add(1, Ordering::SeqCst);
                let r = r.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    while read_request(&mut socket, &mut buf).await {
                        r.fetch_add(1, Ordering::SeqCst);
                        match script {
                            Script::Answer | Script::AnswerThenClose => {
                                let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                                socket.write_all(ok).await.unwrap();
                                if matches!(script, Script::AnswerThenClose) {
                                    return;
                                }
                            }
                            Script::Stall => {
                                let head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n";
                                socket.write_all(head).await.unwrap();
                                tokio::time::sleep(Duration::from_secs(3600)).await;
                            }
                            Script::Hangup => return,
                        }
                    }
                });
            }
        });
        Upstream {
            base,
            connections,
            requests,
        }
    }

    /// Reads one request (head and `content-length` body); `false` at EOF.
    async fn read_request(socket: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if buf.len() >= end + 4 + length {
                    buf.drain(..end + 4 + length);
                    return true;
                }
            }
            let mut chunk = [0u8; 4096];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    async fn post(transport: &Transport, timeout: Duration) -> Result<Reply, TransportError> {
        let target = transport.target("chat/completions").unwrap();
        transport
            .post(&target, HeaderMap::new(), b"{}".to_vec(), timeout)
            .await
    }

    fn direct(up: &Upstream) -> Transport {
        let transport = Transport::new(&up.base, crate::net::http_client()).unwrap();
        assert!(matches!(transport, Transport::Direct(_)));
        transport
    }

    #[tokio::test]
    async fn requests_one_after_another_share_one_connection() {
        let up = upstream(Script::Answer).await;
        let transport = direct(&up);
        for _ in 0..3 {
            let reply = post(&transport, Duration::from_secs(5)).await.unwrap();
            assert_eq!(reply.status, StatusCode::OK);
            assert_eq!(
                reply.read_capped(64).await.unwrap(),
                (b"ok".to_vec(), false)
            );
        }
        assert_eq!(up.connections.load(Ordering::SeqCst), 1);
        assert_eq!(up.requests.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_replaced_and_the_request_sent_once() {
        let up = upstream(Script::AnswerThenClose).await;
        let transport = direct(&up);
        for _ in 0..3 {
            let reply = post(&transport, Duration::from_secs(5)).await.unwrap();
            assert_eq!(reply.read_capped(64).await.unwrap().0, b"ok");
            // Let the upstream's close reach the idle connection.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(up.connections.load(Ordering::SeqCst), 3);
        assert_eq!(up.requests.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_request_written_and_then_cut_off_fails_and_is_not_sent_again() {
        let up = upstream(Script::Hangup).await;
        let transport = direct(&up);
        let Err(e) = post(&transport, Duration::from_secs(5)).await else {
            panic!("a hang-up is not an answer");
        };
        assert!(matches!(e, TransportError::Io(_)), "{e}");
        assert_eq!(up.requests.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_deadline_covers_the_body_and_a_cut_body_closes_its_connection() {
        let up = upstream(Script::Stall).await;
        let transport = direct(&up);
        let mut reply = post(&transport, Duration::from_millis(300)).await.unwrap();
        assert_eq!(reply.chunk().await.unwrap().as_deref(), Some(&b"ok"[..]));
        assert!(matches!(reply.chunk().await, Err(TransportError::Timeout)));
        // The stalled connection was not given back: the next request
        // opens another.
        let mut reply = post(&transport, Duration::from_millis(300)).await.unwrap();
        assert_eq!(reply.chunk().await.unwrap().as_deref(), Some(&b"ok"[..]));
        drop(reply);
        assert_eq!(up.connections.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn nothing_listening_is_a_transport_error_and_https_keeps_the_shared_client() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}/v1", listener.local_addr().unwrap());
        drop(listener);
        let transport = Transport::new(&base, crate::net::http_client()).unwrap();
        let Err(e) = post(&transport, Duration::from_secs(5)).await else {
            panic!("nobody listens");
        };
        assert!(e.to_string().starts_with("connect:"), "{e}");
        let hosted = Transport::new("https://api.openai.com/v1", crate::net::http_client());
        assert!(matches!(hosted, Ok(Transport::Shared { .. })));
    }

    #[tokio::test]
    async fn the_shared_client_answers_alike() {
        // What an `https://` upstream uses, pointed at the plain server.
        let shared = |up: &Upstream| Transport::Shared {
            client: crate::net::http_client(),
            base: reqwest::Url::parse(&up.base).unwrap(),
        };
        let up = upstream(Script::Answer).await;
        let reply = post(&shared(&up), Duration::from_secs(5)).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.read_capped(1).await.unwrap(), (b"o".to_vec(), true));
        let up = upstream(Script::Stall).await;
        let mut reply = post(&shared(&up), Duration::from_millis(300))
            .await
            .unwrap();
        assert_eq!(reply.chunk().await.unwrap().as_deref(), Some(&b"ok"[..]));
        assert!(matches!(reply.chunk().await, Err(TransportError::Timeout)));
        let up = upstream(Script::Hangup).await;
        let e = post(&shared(&up), Duration::from_secs(5)).await.err();
        assert!(matches!(e, Some(TransportError::Io(_))), "{e:?}");
    }
}
