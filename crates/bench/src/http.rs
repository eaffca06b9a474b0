//! A minimal HTTP/1.1 client: one hyper connection per worker, keep-alive,
//! reconnecting when the server closed it. Bodies are in-memory `Bytes` or
//! generated frames (`GenBody`), never buffered.

use crate::blobgen::GenBody;
use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::net::TcpStream;

pub enum Body {
    Empty,
    Full(Option<Bytes>),
    Gen(GenBody),
}

impl Body {
    pub fn full(b: impl Into<Bytes>) -> Body {
        Body::Full(Some(b.into()))
    }
    fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Full(b) => b.as_ref().map_or(0, |b| b.len() as u64),
            Body::Gen(g) => g.remaining(),
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let item = match self.get_mut() {
            Body::Empty => None,
            Body::Full(b) => b.take(),
            Body::Gen(g) => g.next(),
        };
        Poll::Ready(item.map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.len() == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len())
    }
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn expect(self, want: u16, what: &str) -> Result<Resp> {
        if self.status.as_u16() != want {
            let b = String::from_utf8_lossy(&self.body[..self.body.len().min(300)]).into_owned();
            bail!("{what}: HTTP {} (wanted {want}): {b}", self.status.as_u16());
        }
        Ok(self)
    }

    /// The `Location` header as an origin-form path (scheme and authority
    /// removed if the server sent an absolute URL).
    pub fn location(&self) -> Result<String> {
        let l = self
            .headers
            .get(header::LOCATION)
            .context("no Location header")?
            .to_str()?;
        let path = match l
            .strip_prefix("http://")
            .or_else(|| l.strip_prefix("https://"))
        {
            Some(rest) => &rest[rest.find('/').unwrap_or(rest.len())..],
            None => l,
        };
        Ok(path.to_string())
    }
}

/// `loc` with `key=value` appended to its query.
pub fn add_query(loc: &str, kv: &str) -> String {
    let sep = if loc.contains('?') { '&' } else { '?' };
    format!("{loc}{sep}{kv}")
}

pub struct Client {
    addr: SocketAddr,
    host: HeaderValue,
    tx: Option<SendRequest<Body>>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client {
            addr,
            host: HeaderValue::from_str(&addr.to_string()).expect("host header"),
            tx: None,
        }
    }

    pub async fn connect(&mut self) -> Result<()> {
        let s = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        s.set_nodelay(true)?;
        let (tx, conn) = hyper::client::conn::http1::Builder::new()
            .max_buf_size(4 << 20)
            .handshake(TokioIo::new(s))
            .await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.tx = Some(tx);
        Ok(())
    }

    /// Send a request; the response body is left to the caller.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Result<Response<Incoming>> {
        let usable = match self.tx.as_mut() {
            Some(tx) => tx.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            self.connect().await?;
        }
        let len = body.len();
        let mut b = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, self.host.clone());
        if len > 0 || !(method == Method::GET || method == Method::HEAD) {
            b = b.header(header::CONTENT_LENGTH, len);
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(body)?;
        let tx = self.tx.as_mut().expect("connected");
        match tx.send_request(req).await {
            Ok(r) => Ok(r),
            Err(e) => {
                self.tx = None;
                Err(anyhow::Error::new(e).context(format!("{method} {path}")))
            }
        }
    }

    /// Send a request and collect the response body.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Result<Resp> {
        let r = self.send(method.clone(), path, headers, body).await?;
        let (parts, body) = r.into_parts();
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                self.tx = None;
                return Err(anyhow::Error::new(e).context(format!("{method} {path}: body")));
            }
        };
        Ok(Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// Send a request and read the response body in frames, handing each
    /// to `f` with its offset. Returns the status and the byte count.
    pub async fn call_stream(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        mut f: impl FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<(StatusCode, u64)> {
        let r = self.send(method, path, headers, Body::Empty).await?;
        let status = r.status();
        let mut body = r.into_body();
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = match frame {
                Ok(fr) => fr,
                Err(e) => {
                    self.tx = None;
                    return Err(anyhow::Error::new(e).context(format!("{path}: body")));
                }
            };
            if let Ok(data) = frame.into_data() {
                f(n, &data)?;
                n += data.len() as u64;
            }
        }
        Ok((status, n))
    }
}
