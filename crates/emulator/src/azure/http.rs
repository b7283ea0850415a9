//! A small HTTP/1.1 server for the emulator: keep-alive, `Content-Length` bodies, and the
//! one thing a framework would not let us do: close a connection without answering (a
//! lost acknowledgement).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// A parsed request.
#[derive(Debug)]
pub(crate) struct Request {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    /// Names in lowercase.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Request {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An answer, or none at all.
#[derive(Debug)]
pub(crate) enum Reply {
    Respond(Response),
    /// Close the connection without a response.
    Drop,
}

#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Response {
    pub(crate) fn json(status: u16, body: &serde_json::Value) -> Self {
        Response {
            status,
            headers: vec![(
                "Content-Type".into(),
                "application/json; charset=utf-8".into(),
            )],
            body: body.to_string().into_bytes(),
        }
    }

    pub(crate) fn empty(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub(crate) fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// Largest request accepted (gzip bodies are far smaller than what they hold).
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// An emulator's server started by [`start`]: where it listens, the state its handler
/// shares with the emulator's handle, and how to stop it.
#[derive(Debug)]
pub(crate) struct Running<S> {
    addr: SocketAddr,
    pub(crate) state: Arc<Mutex<S>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Listens on `addr` (port 0: any free port) and answers each request with
/// `route(state, request)` until shut down.
pub(crate) async fn start<S, R, F>(
    addr: SocketAddr,
    state: S,
    route: R,
) -> std::io::Result<Running<S>>
where
    S: Send + 'static,
    R: Fn(Arc<Mutex<S>>, Request) -> F + Send + Sync + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(Mutex::new(state));
    let (stop, stopped) = watch::channel(false);
    let shared = state.clone();
    let handler = Arc::new(move |request: Request| route(shared.clone(), request));
    let task = serve(listener, handler, stopped);
    Ok(Running {
        addr,
        state,
        stop,
        task,
    })
}

impl<S> Running<S> {
    /// The address it is bound to.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`; bound to every interface (`0.0.0.0`, `::`), it is reached on
    /// loopback from this host.
    pub(crate) fn base_url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.addr.port()))
    }

    /// The shared state, locked.
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, S> {
        self.state.lock().expect("emulator state")
    }

    /// Stops serving and closes every connection.
    pub(crate) async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Serves `handler` on `listener` until `stop` is set.
fn serve<H, F>(
    listener: TcpListener,
    handler: Arc<H>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()>
where
    H: Fn(Request) -> F + Send + Sync + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    tokio::spawn(async move {
        let mut connections = JoinSet::new();
        let for_connections = stop.clone();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, peer)) = accepted else { continue };
                    let handler = handler.clone();
                    let stop = for_connections.clone();
                    connections.spawn(connection(stream, peer, handler, stop));
                }
                _ = stop.wait_for(|s| *s) => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        connections.shutdown().await;
    })
}

async fn connection<H, F>(
    stream: TcpStream,
    _peer: SocketAddr,
    handler: Arc<H>,
    mut stop: watch::Receiver<bool>,
) where
    H: Fn(Request) -> F + Send + Sync + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    let _ = stream.set_nodelay(true);
    let mut stream = BufReader::new(stream);
    loop {
        let request = tokio::select! {
            r = read_request(&mut stream) => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        let request = match request {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(status) => {
                let _ = write_response(stream.get_mut(), Response::empty(status), true).await;
                return;
            }
        };
        let close = request
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        match handler(request).await {
            Reply::Drop => return,
            Reply::Respond(response) => {
                if write_response(stream.get_mut(), response, close)
                    .await
                    .is_err()
                    || close
                {
                    return;
                }
            }
        }
    }
}

/// Reads one request; `Ok(None)` at a clean end of the connection, `Err(status)` when
/// the request cannot be read.
async fn read_request(stream: &mut BufReader<TcpStream>) -> Result<Option<Request>, u16> {
    let mut line = String::new();
    match stream.read_line(&mut line).await {
        Ok(0) => return Ok(None),
        Ok(_) => {}
        Err(_) => return Ok(None),
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(400);
    };
    let method = method.to_string();
    let (path, query_text) = target.split_once('?').unwrap_or((target, ""));
    let path = path.to_string();
    let query = url::form_urlencoded::parse(query_text.as_bytes())
        .into_owned()
        .collect();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        match stream.read_line(&mut h).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let Some((name, value)) = h.split_once(':') else {
            return Err(400);
        };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let find = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    if find("transfer-encoding").is_some() {
        return Err(411);
    }
    let length: usize = match find("content-length") {
        Some(v) => v.parse().map_err(|_| 400u16)?,
        None => 0,
    };
    if length > MAX_REQUEST_BYTES {
        return Err(413);
    }
    let mut body = vec![0; length];
    if stream.read_exact(&mut body).await.is_err() {
        return Ok(None);
    }
    Ok(Some(Request {
        method,
        path,
        query,
        headers,
        body,
    }))
}

async fn write_response(stream: &mut TcpStream, r: Response, close: bool) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", r.status, reason(r.status));
    for (name, value) in &r.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if r.status != 204 {
        head.push_str(&format!("Content-Length: {}\r\n", r.body.len()));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&r.body);
    stream.write_all(&bytes).await?;
    stream.flush().await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
