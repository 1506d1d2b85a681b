//! The benchmark's webhook receiver: HTTP/1.1 on 127.0.0.1 with keep-alive (as a real webhook
//! endpoint behind any web server answers), one thread per connection, answering 204 at once —
//! or 429 with Retry-After while it is told to throttle. It records when each request had been
//! read completely, with its notification id header and body, for SecuMon and Alertmanager
//! alike.
//!
//! Its own rather than the e2e harness's receiver, which closes every connection: a benchmark
//! of the dispatcher should not measure a TCP handshake and a thread start per request.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// One request, as read.
#[derive(Clone)]
pub struct Arrival {
    pub at: SystemTime,
    pub instant: Instant,
    /// X-SecuMon-Notification-Id, if any.
    pub key: Option<String>,
    pub body: Vec<u8>,
    /// The status this request was answered with.
    pub status: u16,
}

/// Answer 429 with `Retry-After: retry_after_s` to every request until `for_how_long` has
/// passed since the first request, then 204.
#[derive(Clone, Copy)]
pub struct Throttle {
    pub for_how_long: Duration,
    pub retry_after_s: u64,
}

struct State {
    arrivals: Mutex<Vec<Arrival>>,
    throttle: Option<Throttle>,
    first: Mutex<Option<Instant>>,
    stop: AtomicBool,
    connections: AtomicUsize,
}

pub struct Receiver {
    port: u16,
    state: Arc<State>,
}

impl Receiver {
    pub fn start() -> Receiver {
        Receiver::start_with(None)
    }

    pub fn throttling(throttle: Throttle) -> Receiver {
        Receiver::start_with(Some(throttle))
    }

    fn start_with(throttle: Option<Throttle>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("expected to bind a loopback port");
        let port = listener.local_addr().expect("local address").port();
        let state = Arc::new(State { arrivals: Mutex::new(Vec::new()), throttle, first: Mutex::new(None), stop: AtomicBool::new(false), connections: AtomicUsize::new(0) });
        let accepting = state.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                if accepting.stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                accepting.connections.fetch_add(1, Ordering::Relaxed);
                let state = accepting.clone();
                thread::spawn(move || {
                    let _ = serve(stream, &state);
                });
            }
        });
        Receiver { port, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn count(&self) -> usize {
        self.state.arrivals.lock().unwrap().len()
    }

    /// Requests answered with a 2xx.
    pub fn delivered(&self) -> usize {
        self.state.arrivals.lock().unwrap().iter().filter(|a| a.status < 300).count()
    }

    /// Connections accepted so far (a client that keeps its connections alive opens few).
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::Relaxed)
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        self.state.arrivals.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Serves requests on one connection until the client closes it.
fn serve(stream: TcpStream, state: &State) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line.trim().is_empty() {
            continue;
        }
        let mut length = 0usize;
        let mut chunked = false;
        let mut close = false;
        let mut key = None;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 {
                return Ok(());
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let (name, value) = (name.trim(), value.trim());
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = value.eq_ignore_ascii_case("chunked");
                } else if name.eq_ignore_ascii_case("connection") {
                    close = value.eq_ignore_ascii_case("close");
                } else if name.eq_ignore_ascii_case("x-secumon-notification-id") {
                    key = Some(value.to_string());
                }
            }
        }
        let body = if chunked { read_chunked(&mut reader)? } else { read_exact(&mut reader, length)? };
        let (at, instant) = (SystemTime::now(), Instant::now());
        let throttled = state.throttle.filter(|t| {
            let first = *state.first.lock().unwrap().get_or_insert(instant);
            instant.duration_since(first) < t.for_how_long
        });
        let response = match throttled {
            Some(t) => format!(
                "HTTP/1.1 429 Too Many Requests\r\nRetry-After: {}\r\nContent-Length: 10\r\n\r\nslow down\n",
                t.retry_after_s
            ),
            None => "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n".to_string(),
        };
        let status = if throttled.is_some() { 429 } else { 204 };
        state.arrivals.lock().unwrap().push(Arrival { at, instant, key, body, status });
        writer.write_all(response.as_bytes())?;
        if close {
            return Ok(());
        }
    }
}

fn read_exact(reader: &mut impl Read, length: usize) -> std::io::Result<Vec<u8>> {
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(body)
}

fn read_chunked(reader: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size)?;
        let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
        let mut chunk = read_exact(reader, size + 2)?; // data and its CRLF
        if size == 0 {
            return Ok(body); // no trailers are sent to us
        }
        chunk.truncate(size);
        body.extend_from_slice(&chunk);
    }
}
