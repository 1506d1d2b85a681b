//! A small HTTP/1.1 GET client for scrapes and probes: one request per connection, a deadline
//! for the whole exchange, a body size limit, TLS through OpenSSL (already linked for libpq).
//!
//! Every blocking step (name resolution, connect, handshake, each write and read) is given
//! only the time left before the deadline, so a slow or silent server costs at most the
//! request's timeout. No compression is asked for, so bodies arrive as they are.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use openssl::asn1::Asn1Time;
use openssl::ssl::{HandshakeError, SslConnector, SslMethod, SslStream, SslVerifyMode};
use openssl::x509::{X509Ref, X509VerifyResult};

/// One GET request.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub url: &'a str,
    /// Deadline for connect + TLS + request + whole response.
    pub timeout: Duration,
    /// Bodies longer than this are cut here and `truncated` is set.
    pub max_body: usize,
    pub headers: &'a [(&'a str, &'a str)],
    /// https: do not verify the certificate chain and host name (days left are still read).
    pub tls_insecure: bool,
}

/// What came back.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    pub truncated: bool,
    /// https: the peer certificate's notAfter, Unix seconds.
    pub cert_not_after: Option<i64>,
    /// Time to the last byte read.
    pub elapsed: Duration,
}

/// The outcome of [`exchange`]: the response or the error, and the peer certificate's
/// notAfter whenever a TLS handshake got that far, even when the request then failed (a
/// certificate that fails verification still has an expiry worth reporting).
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    pub result: Result<Response, String>,
    pub cert_not_after: Option<i64>,
}

/// GETs `req.url`. Errors are one line for the log ("connect 127.0.0.1:9: Connection refused").
pub fn get(req: &Request) -> Result<Response, String> {
    exchange(req).result
}

/// Like [`get`], but keeps the certificate expiry when the request fails after the handshake.
pub fn exchange(req: &Request) -> Exchange {
    let mut cert_not_after = None;
    let result = run(req, &mut cert_not_after);
    Exchange {
        result,
        cert_not_after,
    }
}

/// Longest status line plus headers accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Longest chunk-size line accepted (size, extensions).
const MAX_CHUNK_LINE: usize = 4096;
/// Read buffer, on the stack: the only scratch space a request uses besides its body.
const READ_CHUNK: usize = 8 * 1024;

/// The parts of an `http://` or `https://` URL a GET needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub tls: bool,
    /// Without brackets for IPv6 literals.
    pub host: String,
    pub port: u16,
    /// Path and query, at least "/".
    pub path: String,
}

impl Url {
    /// Parses `http://host[:port][/path][?query]` (`https` too; `[v6]` literals; the
    /// fragment is dropped). User info is refused rather than sent in the clear.
    pub fn parse(url: &str) -> Result<Url, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("URL {url:?} has no http:// or https:// scheme"))?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            other => {
                return Err(format!(
                    "URL {url:?}: scheme {other:?} is not http or https"
                ))
            }
        };
        let rest = rest.split('#').next().unwrap_or("");
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        if authority.contains('@') {
            return Err(format!("URL {url:?}: user info in URLs is not supported"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("URL {url:?}: unclosed '[' in the host"))?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("URL {url:?}: {host:?} is not an IPv6 address"));
            }
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("URL {url:?}: junk after ']'"))?,
                ),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("URL {url:?} has no host"));
        }
        let port = match port {
            None | Some("") => {
                if tls {
                    443
                } else {
                    80
                }
            }
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("URL {url:?}: bad port {p:?}"))?,
        };
        let path = if path.is_empty() {
            "/".to_string()
        } else if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(format!(
                "URL {url:?}: spaces or control characters in the path"
            ));
        }
        Ok(Url {
            tls,
            host: host.to_string(),
            port,
            path,
        })
    }

    /// The `Host` header: brackets around IPv6 literals, the port unless it is the default.
    fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == if self.tls { 443 } else { 80 } {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// "5s", "1.5s", "250ms": how a timeout reads in an error message.
pub fn format_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{}s", d.as_secs())
    } else if d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}

/// The time left before the deadline, or the timeout error once none is.
struct Clock {
    deadline: Instant,
    timeout: Duration,
}

impl Clock {
    fn remaining(&self) -> Result<Duration, String> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        // Zero would mean "no timeout" to set_read_timeout; anything under a millisecond is gone.
        if left < Duration::from_millis(1) {
            Err(self.timed_out())
        } else {
            Ok(left)
        }
    }

    fn timed_out(&self) -> String {
        format!("timed out after {}", format_duration(self.timeout))
    }

    /// Gives the socket only the time left, for the next read or write.
    fn arm(&self, tcp: &TcpStream) -> Result<(), String> {
        let left = self.remaining()?;
        tcp.set_read_timeout(Some(left))
            .and_then(|()| tcp.set_write_timeout(Some(left)))
            .map_err(|e| format!("socket timeout: {e}"))
    }

    /// An I/O error as one line; socket timeouts become the request's timeout error.
    fn io_error(&self, what: &str, e: &io::Error) -> String {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => self.timed_out(),
            _ => format!("{what}: {e}"),
        }
    }
}

fn run(req: &Request, cert_not_after: &mut Option<i64>) -> Result<Response, String> {
    let start = Instant::now();
    let clock = Clock {
        deadline: start + req.timeout,
        timeout: req.timeout,
    };
    let url = Url::parse(req.url)?;
    let tcp = connect(&url, &clock)?;
    let mut conn = if url.tls {
        Conn::Tls(Box::new(handshake(
            &url,
            tcp,
            req.tls_insecure,
            &clock,
            cert_not_after,
        )?))
    } else {
        Conn::Plain(tcp)
    };

    let mut head = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: secumon-agent/{}\r\n\
         Accept: text/plain;version=0.0.4;q=0.9, */*;q=0.5\r\nConnection: close\r\n",
        url.path,
        url.host_header(),
        crate::VERSION
    );
    for (name, value) in req.headers {
        if [name, value]
            .iter()
            .any(|s| s.bytes().any(|b| b == b'\r' || b == b'\n'))
        {
            return Err(format!("header {name:?}: line breaks are not allowed"));
        }
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    clock.arm(conn.tcp())?;
    conn.write_all(head.as_bytes())
        .and_then(|()| conn.flush())
        .map_err(|e| clock.io_error("send request", &e))?;

    let mut reader = Reader {
        conn,
        clock: &clock,
        buf: Vec::new(),
        pos: 0,
        eof: false,
    };
    let (status, framing) = loop {
        let (status, framing) = read_head(&mut reader)?;
        // Interim responses (100 Continue, 103 Early Hints) come before the real one.
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        break (status, framing);
    };
    let mut body = Vec::new();
    let truncated = match framing {
        Framing::None => false,
        Framing::Length(n) => read_length(&mut reader, n, req.max_body, &mut body)?,
        Framing::Chunked => read_chunked(&mut reader, req.max_body, &mut body)?,
        Framing::Close => read_to_close(&mut reader, req.max_body, &mut body)?,
    };
    Ok(Response {
        status,
        body,
        truncated,
        cert_not_after: *cert_not_after,
        elapsed: start.elapsed(),
    })
}

/// Resolves the host (literals directly; names on a helper thread so that a hanging
/// resolver cannot hold the caller past its deadline) and connects to the first address
/// that answers.
fn connect(url: &Url, clock: &Clock) -> Result<TcpStream, String> {
    let addrs = resolve(&url.host, url.port, clock)?;
    let mut last_error = format!("{}: no address", url.host);
    for addr in addrs {
        let left = clock.remaining()?;
        match TcpStream::connect_timeout(&addr, left) {
            Ok(tcp) => {
                // Requests are written in one piece; Nagle would only delay them.
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                last_error = clock.timed_out();
            }
            Err(e) => last_error = format!("connect {addr}: {e}"),
        }
    }
    Err(last_error)
}

/// `host:port` to socket addresses within the deadline.
fn resolve(host: &str, port: u16, clock: &Clock) -> Result<Vec<SocketAddr>, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let left = clock.remaining()?;
    let (tx, rx) = mpsc::channel();
    let name = host.to_string();
    std::thread::Builder::new()
        .name("resolve".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let result = (name.as_str(), port)
                .to_socket_addrs()
                .map(|a| a.collect::<Vec<_>>());
            // The caller may have given up; then nobody listens, which is fine.
            let _ = tx.send(result);
        })
        .map_err(|e| format!("resolve {host}: {e}"))?;
    match rx.recv_timeout(left) {
        Ok(Ok(addrs)) if !addrs.is_empty() => Ok(addrs),
        Ok(Ok(_)) => Err(format!("resolve {host}: no address")),
        Ok(Err(e)) => Err(format!("resolve {host}: {e}")),
        Err(_) => Err(clock.timed_out()),
    }
}

/// Resolves `host` (an address literal or a name) within `timeout`.
pub(crate) fn resolve_within(
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, String> {
    let clock = Clock {
        deadline: Instant::now() + timeout,
        timeout,
    };
    resolve(host, port, &clock)
}

/// One client context for the process: loading the trust store once rather than per request.
/// Verification is done by hand after the handshake (see [`handshake`]), so the context
/// itself accepts any certificate.
fn connector() -> Result<&'static SslConnector, String> {
    static CONNECTOR: OnceLock<Result<SslConnector, String>> = OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let mut builder = SslConnector::builder(SslMethod::tls_client())
                .map_err(|e| format!("TLS: {}", crate::log::one_line(&e.to_string())))?;
            builder.set_verify(SslVerifyMode::NONE);
            Ok(builder.build())
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// TLS handshake with SNI. The chain and the host name are checked afterwards, from
/// OpenSSL's verification result, so that the certificate's expiry is known even when it
/// fails verification; unless `insecure`, such a connection is then refused.
fn handshake(
    url: &Url,
    tcp: TcpStream,
    insecure: bool,
    clock: &Clock,
    cert_not_after: &mut Option<i64>,
) -> Result<SslStream<TcpStream>, String> {
    let config = connector()?
        .configure()
        .map_err(|e| format!("TLS: {}", crate::log::one_line(&e.to_string())))?
        .use_server_name_indication(true)
        // Records host name mismatches in verify_result (checked below), aborts nothing.
        .verify_hostname(true);
    clock.arm(&tcp)?;
    let mut attempt = config.connect(&url.host, tcp);
    let stream = loop {
        match attempt {
            Ok(stream) => break stream,
            Err(HandshakeError::WouldBlock(mid)) => {
                // A socket timeout fired mid-handshake: go on only while time is left.
                clock.arm(mid.get_ref())?;
                attempt = mid.handshake();
            }
            Err(HandshakeError::Failure(mid)) => {
                let e = mid.error();
                return Err(match e.io_error() {
                    Some(io) => clock.io_error("TLS handshake", io),
                    None => format!("TLS handshake: {}", crate::log::one_line(&e.to_string())),
                });
            }
            Err(HandshakeError::SetupFailure(e)) => {
                return Err(format!("TLS: {}", crate::log::one_line(&e.to_string())))
            }
        }
    };
    let ssl = stream.ssl();
    *cert_not_after = ssl.peer_certificate().and_then(|c| not_after_unix(&c));
    if !insecure {
        let verdict = ssl.verify_result();
        if verdict != X509VerifyResult::OK {
            return Err(format!(
                "TLS: certificate verify failed: {}",
                verdict.error_string()
            ));
        }
        if ssl.peer_certificate().is_none() {
            return Err("TLS: the server sent no certificate".to_string());
        }
    }
    Ok(stream)
}

/// A certificate's notAfter as Unix seconds.
pub fn not_after_unix(cert: &X509Ref) -> Option<i64> {
    let epoch = Asn1Time::from_unix(0).ok()?;
    let diff = epoch.diff(cert.not_after()).ok()?;
    Some(i64::from(diff.days) * 86_400 + i64::from(diff.secs))
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<SslStream<TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(tcp) => tcp,
            Conn::Tls(tls) => tls.get_ref(),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(tcp) => tcp.read(buf),
            Conn::Tls(tls) => match tls.read(buf) {
                // A peer that closes without close_notify: treat as the end, as browsers do
                // (the framing, when there is one, still tells a cut body).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(tcp) => tcp.write(buf),
            Conn::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(tcp) => tcp.flush(),
            Conn::Tls(tls) => tls.flush(),
        }
    }
}

/// Buffered reads with the deadline applied to each one.
struct Reader<'a> {
    conn: Conn,
    clock: &'a Clock,
    /// Bytes read but not consumed yet: buf[pos..].
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
}

impl Reader<'_> {
    /// Reads more into the buffer; false at the end of the stream.
    fn fill(&mut self) -> Result<bool, String> {
        if self.eof {
            return Ok(false);
        }
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            self.clock.arm(self.conn.tcp())?;
            match self.conn.read(&mut chunk) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.clock.io_error("read response", &e)),
            }
        }
    }

    fn available(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// One line without its CRLF (or LF), at most `max` bytes.
    fn line(&mut self, max: usize, what: &str) -> Result<Vec<u8>, String> {
        loop {
            if let Some(i) = self.available().iter().position(|&b| b == b'\n') {
                let mut line = self.available()[..i].to_vec();
                self.pos += i + 1;
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            if self.available().len() > max {
                return Err(format!("{what} longer than {max} bytes"));
            }
            if !self.fill()? {
                return Err(format!("connection closed in the {what}"));
            }
        }
    }

    /// Moves up to `limit` bytes into `out`; 0 only at the end of the stream.
    fn take(&mut self, limit: usize, out: &mut Vec<u8>) -> Result<usize, String> {
        if self.available().is_empty() && !self.fill()? {
            return Ok(0);
        }
        let n = self.available().len().min(limit);
        out.extend_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// How the body's end is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    Close,
}

fn read_head(r: &mut Reader) -> Result<(u16, Framing), String> {
    let status_line = r.line(MAX_HEAD, "status line")?;
    let status_line = String::from_utf8_lossy(&status_line);
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/") {
        return Err(format!(
            "not an HTTP response: {:?}",
            status_line.chars().take(80).collect::<String>()
        ));
    }
    let status = code
        .parse::<u16>()
        .ok()
        .filter(|c| (100..1000).contains(c))
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut length = None;
    let mut chunked = false;
    let mut total = status_line.len();
    loop {
        let line = r.line(MAX_HEAD, "response headers")?;
        total += line.len() + 2;
        if total > MAX_HEAD {
            return Err(format!("response headers longer than {MAX_HEAD} bytes"));
        }
        if line.is_empty() {
            break;
        }
        let line = String::from_utf8_lossy(&line);
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse::<u64>()
                .map_err(|_| format!("bad Content-Length {value:?}"))?;
            if length.is_some_and(|l| l != n) {
                return Err("conflicting Content-Length headers".to_string());
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        }
    }
    // No body: 1xx, 204, 304 (RFC 9112 section 6.3); chunked wins over a length.
    let framing = if (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::None
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::Close
    };
    Ok((status, framing))
}

/// A body of `len` bytes; true when it was longer than `max`.
fn read_length(r: &mut Reader, len: u64, max: usize, out: &mut Vec<u8>) -> Result<bool, String> {
    let want = usize::try_from(len).unwrap_or(usize::MAX).min(max);
    out.reserve(want.min(64 * 1024));
    while out.len() < want {
        if r.take(want - out.len(), out)? == 0 {
            return Err(format!(
                "connection closed after {} of {len} body bytes",
                out.len()
            ));
        }
    }
    Ok(len > max as u64)
}

/// A chunked body; true when it was cut at `max`.
fn read_chunked(r: &mut Reader, max: usize, out: &mut Vec<u8>) -> Result<bool, String> {
    loop {
        let line = r.line(MAX_CHUNK_LINE, "chunk size line")?;
        let line = String::from_utf8_lossy(&line);
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        if size == 0 {
            // Trailers are read and ignored up to the empty line; a peer that closes
            // instead has still sent the whole body.
            while let Ok(trailer) = r.line(MAX_HEAD, "trailers") {
                if trailer.is_empty() {
                    break;
                }
            }
            return Ok(false);
        }
        let mut left = size;
        while left > 0 {
            let room = max - out.len();
            if room == 0 {
                return Ok(true);
            }
            let limit = usize::try_from(left).unwrap_or(usize::MAX).min(room);
            let n = r.take(limit, out)?;
            if n == 0 {
                return Err("connection closed in a chunk".to_string());
            }
            left -= n as u64;
        }
        if r.line(MAX_CHUNK_LINE, "chunk end")?.is_empty() {
            continue;
        }
        return Err("chunk longer than its size".to_string());
    }
}

/// A body that ends when the server closes; true when more than `max` bytes came.
fn read_to_close(r: &mut Reader, max: usize, out: &mut Vec<u8>) -> Result<bool, String> {
    loop {
        let room = max - out.len();
        if room == 0 {
            // One byte more tells a body of exactly `max` bytes from a longer one.
            let mut probe = Vec::new();
            return Ok(r.take(1, &mut probe)? > 0);
        }
        if r.take(room, out)? == 0 {
            return Ok(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_host_port_and_path() {
        let u = Url::parse("https://example.org/health?full=1#x").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.path.as_str()),
            (true, "example.org", 443, "/health?full=1")
        );
        assert_eq!(u.host_header(), "example.org");
        let u = Url::parse("http://[::1]:9100").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 9100, "/")
        );
        assert_eq!(u.host_header(), "[::1]:9100");
        let u = Url::parse("HTTP://127.0.0.1:8080?q").unwrap();
        assert_eq!((u.port, u.path.as_str()), (8080, "/?q"));
        assert_eq!(u.host_header(), "127.0.0.1:8080");
        for bad in [
            "ftp://x/",
            "example.org",
            "http://",
            "http://h:0/",
            "http://h:99999/",
            "http://u:p@h/",
            "http://[::1/",
            "http://[nope]/",
            "http://h/a b",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(format_duration(Duration::from_secs(5)), "5s");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.500s");
    }
}

/// Loopback HTTP(S) servers for tests: each connection reads one request head, then plays
/// the given steps and closes.
#[cfg(test)]
pub(crate) mod test_server {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use openssl::asn1::Asn1Time;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::ssl::{SslAcceptor, SslMethod};
    use openssl::x509::extension::SubjectAlternativeName;
    use openssl::x509::{X509NameBuilder, X509};

    #[derive(Clone)]
    pub enum Step {
        Send(Vec<u8>),
        Sleep(Duration),
    }

    pub struct Server {
        pub addr: SocketAddr,
        requests: Arc<Mutex<Vec<String>>>,
    }

    impl Server {
        /// The request heads received so far.
        pub fn requests(&self) -> Vec<String> {
            self.requests.lock().unwrap().clone()
        }
    }

    pub fn serve(steps: Vec<Step>) -> Server {
        start(steps, None)
    }

    /// HTTPS with a self-signed certificate for localhost and 127.0.0.1 that expires in
    /// `days` days.
    pub fn serve_tls(steps: Vec<Step>, days: u32) -> Server {
        start(steps, Some(Arc::new(acceptor(days))))
    }

    fn acceptor(days: u32) -> SslAcceptor {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "localhost").unwrap();
        let name = name.build();
        let mut cert = X509::builder().unwrap();
        cert.set_version(2).unwrap();
        cert.set_subject_name(&name).unwrap();
        cert.set_issuer_name(&name).unwrap();
        cert.set_pubkey(&key).unwrap();
        cert.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        cert.set_not_after(&Asn1Time::days_from_now(days).unwrap())
            .unwrap();
        let san = SubjectAlternativeName::new()
            .dns("localhost")
            .ip("127.0.0.1")
            .build(&cert.x509v3_context(None, None))
            .unwrap();
        cert.append_extension(san).unwrap();
        cert.sign(&key, MessageDigest::sha256()).unwrap();
        let cert = cert.build();
        let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
        acceptor.set_private_key(&key).unwrap();
        acceptor.set_certificate(&cert).unwrap();
        acceptor.build()
    }

    fn start(steps: Vec<Step>, tls: Option<Arc<SslAcceptor>>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let steps = steps.clone();
                let tls = tls.clone();
                let seen = Arc::clone(&seen);
                std::thread::spawn(move || {
                    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
                    match tls {
                        None => handle(tcp, &steps, &seen),
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp) {
                                handle(stream, &steps, &seen);
                            }
                        }
                    }
                });
            }
        });
        Server { addr, requests }
    }

    fn handle(mut stream: impl Read + Write, steps: &[Step], seen: &Mutex<Vec<String>>) {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        seen.lock()
            .unwrap()
            .push(String::from_utf8_lossy(&head).into_owned());
        for step in steps {
            match step {
                Step::Send(bytes) => {
                    if stream
                        .write_all(bytes)
                        .and_then(|()| stream.flush())
                        .is_err()
                    {
                        return;
                    }
                }
                Step::Sleep(d) => std::thread::sleep(*d),
            }
        }
    }
}
