//! Real receivers for notification tests: a small HTTP server on 127.0.0.1 whose answers a test
//! scripts (200, 429 + Retry-After, 500, 400, slow, down), and a real SMTP server process
//! (tests/smtp_receiver.py on aiosmtpd) with optional STARTTLS / implicit TLS and AUTH.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crate::sys;

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Wall-clock arrival (after the whole request was read).
    pub received_at: SystemTime,
    pub instant: Instant,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("expected a JSON body, got {e}: {}", self.text()))
    }
}

/// What the receiver answers.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Wait this long before answering (a slow receiver).
    pub delay: Duration,
}

impl Reply {
    pub fn ok(body: &str) -> Reply {
        Reply::status(200, body)
    }

    pub fn status(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

struct State {
    requests: Mutex<Vec<Request>>,
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Reply>,
    stop: AtomicBool,
}

/// An HTTP server on 127.0.0.1 that records every request. Answers come from the script
/// ([`HttpReceiver::then`]) first, then the default ([`HttpReceiver::answer`]).
pub struct HttpReceiver {
    port: u16,
    state: Arc<State>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl HttpReceiver {
    /// Answers 200 "ok" until told otherwise.
    pub fn start() -> HttpReceiver {
        HttpReceiver::start_answering(Reply::ok("ok"))
    }

    pub fn start_answering(default: Reply) -> HttpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("expected to bind a loopback port");
        let port = listener.local_addr().expect("local addr").port();
        let state = Arc::new(State {
            requests: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(default),
            stop: AtomicBool::new(false),
        });
        let mut receiver = HttpReceiver {
            port,
            state,
            acceptor: None,
        };
        receiver.acceptor = Some(spawn_acceptor(listener, receiver.state.clone()));
        receiver
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The default answer from now on.
    pub fn answer(&self, reply: Reply) {
        *self.state.default.lock().unwrap() = reply;
    }

    /// Answer the next request with `reply` (queued after earlier `then`s).
    pub fn then(&self, reply: Reply) -> &Self {
        self.state.script.lock().unwrap().push_back(reply);
        self
    }

    /// Stops listening: connections are refused until [`HttpReceiver::up`].
    pub fn down(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }

    /// Listens again on the same port.
    pub fn up(&mut self) {
        self.state.stop.store(false, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("expected to listen again on port {}: {e}", self.port),
            }
        };
        self.acceptor = Some(spawn_acceptor(listener, self.state.clone()));
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    /// Waits until at least `n` requests arrived; returns them all. Panics on timeout.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Request> {
        let ok = crate::wait_until(timeout, || self.count() >= n);
        let requests = self.requests();
        assert!(
            ok,
            "expected {n} requests on port {} within {timeout:?}, got {}: {:#?}",
            self.port,
            requests.len(),
            requests
                .iter()
                .map(|r| format!("{} {} {}", r.method, r.path, r.text()))
                .collect::<Vec<_>>()
        );
        requests
    }
}

impl Drop for HttpReceiver {
    fn drop(&mut self) {
        if self.acceptor.is_some() {
            self.down();
        }
    }
}

fn spawn_acceptor(listener: TcpListener, state: Arc<State>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for stream in listener.incoming() {
            if state.stop.load(Ordering::SeqCst) {
                break;
            }
            let Ok(stream) = stream else { continue };
            let state = state.clone();
            thread::spawn(move || {
                let _ = serve(stream, &state);
            });
        }
    })
}

fn serve(stream: TcpStream, state: &State) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        return Ok(());
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let (name, value) = (name.trim().to_string(), value.trim().to_string());
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().unwrap_or(0);
            }
            headers.push((name, value));
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let request = Request {
        method,
        path,
        headers,
        body,
        received_at: SystemTime::now(),
        instant: Instant::now(),
    };
    state.requests.lock().unwrap().push(request);
    let reply = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| state.default.lock().unwrap().clone());
    if !reply.delay.is_zero() {
        thread::sleep(reply.delay);
    }
    let mut response = format!(
        "HTTP/1.1 {} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (name, value) in &reply.headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str("\r\n");
    response.push_str(&reply.body);
    let mut stream = stream;
    stream.write_all(response.as_bytes())?;
    stream.flush()
}

/// How the SMTP receiver secures connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpTls {
    None,
    Starttls,
    Implicit,
}

/// A real SMTP server process (aiosmtpd), killed on drop.
pub struct SmtpReceiver {
    port: u16,
    dir: PathBuf,
    child: Child,
    /// PEM of the CA that signed the server certificate (TLS modes).
    pub ca_pem: Option<String>,
}

/// Python with aiosmtpd: `SECUMON_PYTHON`, else Debian's /usr/bin/python3.
pub fn python() -> String {
    std::env::var("SECUMON_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into())
}

impl SmtpReceiver {
    /// Starts the server; `auth` = (user, password) makes AUTH mandatory.
    pub fn start(tls: SmtpTls, auth: Option<(&str, &str)>) -> SmtpReceiver {
        let dir = sys::fresh_temp_dir("smtp");
        let mail = dir.join("mail");
        std::fs::create_dir(&mail).expect("mail dir");
        let mut ca_pem = None;
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = crate::free_port();
            let mut command = Command::new(python());
            command
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/smtp_receiver.py"))
                .args(["--port", &port.to_string(), "--dir"])
                .arg(&mail)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            if tls != SmtpTls::None {
                ca_pem = Some(make_certificates(&dir));
                command.args([
                    "--tls",
                    if tls == SmtpTls::Starttls {
                        "starttls"
                    } else {
                        "implicit"
                    },
                ]);
                command
                    .arg("--cert")
                    .arg(dir.join("server.pem"))
                    .arg("--key")
                    .arg(dir.join("server.key"));
            }
            if let Some((user, password)) = auth {
                command.args(["--user", user, "--password", password]);
            }
            let mut child = command
                .spawn()
                .expect("expected to start tests/smtp_receiver.py (python3-aiosmtpd)");
            let stdout = child.stdout.take().expect("stdout");
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            if line.trim() == "ready" {
                return SmtpReceiver {
                    port,
                    dir,
                    child,
                    ca_pem,
                };
            }
            let _ = child.kill();
            let mut err = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = stderr.read_to_string(&mut err);
            }
            let _ = child.wait();
            last_error = err;
        }
        panic!("expected the SMTP receiver to start: {last_error}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Messages received so far, oldest first.
    pub fn messages(&self) -> Vec<serde_json::Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.join("mail"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .filter_map(|t| serde_json::from_str(&t).ok())
            .collect()
    }

    /// Waits for `n` messages; panics on timeout.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
        let ok = crate::wait_until(timeout, || self.messages().len() >= n);
        let messages = self.messages();
        assert!(
            ok,
            "expected {n} e-mails within {timeout:?}, got {}",
            messages.len()
        );
        messages
    }
}

impl Drop for SmtpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        sys::remove_dir(&self.dir);
    }
}

/// A throw-away CA and a server certificate for 127.0.0.1 signed by it (openssl CLI). Returns
/// the CA's PEM.
fn make_certificates(dir: &Path) -> String {
    let run = |args: &[&str]| {
        let output = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("expected openssl");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=SecuMon test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext.cnf");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    std::fs::read_to_string(dir.join("ca.pem")).expect("ca.pem")
}
