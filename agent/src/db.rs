//! A small safe wrapper over libpq (pq-sys): connection strings, `PG*` variables,
//! `.pgpass`, TLS and SCRAM therefore behave exactly as in psql.
//!
//! Connecting and querying use libpq's non-blocking API with `poll(2)` in ≤100 ms steps,
//! so a dead network cannot hang the agent past its timeouts and a stop request is seen
//! promptly. After a timeout or interruption mid-query the connection is unusable
//! (`is_usable() == false`); callers reconnect and resend, which is safe because
//! `secumon.ingest` is idempotent per (agent_id, time).

use crate::protocol::{ingest_params, register_params, INGEST_SQL, REGISTER_SQL};
use crate::report::{AgentInfo, Report};
use pq_sys as pq;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::fmt;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Used when neither the connection string nor `PGCONNECT_TIMEOUT` sets one.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_STEP_MS: u64 = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Could not establish the connection.
    Connect,
    /// The connection broke (or was already broken) while in use.
    ConnectionLost,
    /// The server did not answer in time.
    Timeout,
    /// A stop was requested while waiting.
    Interrupted,
    /// The server answered with an error (see [`Error::sqlstate`]).
    Sql,
    /// The server answered something this agent does not understand.
    Protocol,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    sqlstate: Option<String>,
    message: String,
}

impl Error {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            sqlstate: None,
            message: crate::log::one_line(&message.into()),
        }
    }

    pub fn sql(sqlstate: &str, message: impl Into<String>) -> Error {
        Error {
            kind: ErrorKind::Sql,
            sqlstate: Some(sqlstate.to_string()),
            message: crate::log::one_line(&message.into()),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn sqlstate(&self) -> Option<&str> {
        self.sqlstate.as_deref()
    }

    /// The message without the SQLSTATE, one line, password-free.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The database refused this report's content or this role for good (data
    /// exceptions 22xxx, integrity violations 23xxx, program limits 54xxx, missing
    /// privilege 42501): sending it again cannot succeed, so it must not block the queue.
    /// An unknown agent is no rejection: the agent is not registered (an admin removed it),
    /// which a reconnect — it re-registers — cures. `ingest` raises P0002 for it (23503 before
    /// 0.2.0, hence the exception below).
    pub fn rejects_report(&self) -> bool {
        match (self.kind, self.sqlstate()) {
            (ErrorKind::Sql, Some("23503")) => false,
            (ErrorKind::Sql, Some(s)) => {
                s.starts_with("22") || s.starts_with("23") || s.starts_with("54") || s == "42501"
            }
            _ => false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.sqlstate {
            Some(code) => write!(f, "{} (SQLSTATE {code})", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Overrides the connection string's `connect_timeout`; `None` keeps libpq's
    /// setting, or [`DEFAULT_CONNECT_TIMEOUT`] if nothing sets one.
    pub connect_timeout: Option<Duration>,
    pub query_timeout: Duration,
    /// Waits end with [`ErrorKind::Interrupted`] once this flag is set.
    pub interrupt: Option<&'static AtomicBool>,
    /// A hard limit for the whole attempt, on top of `connect_timeout` (used when
    /// flushing at shutdown, which has a fixed time budget).
    pub deadline: Option<Instant>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            connect_timeout: None,
            query_timeout: DEFAULT_QUERY_TIMEOUT,
            interrupt: None,
            deadline: None,
        }
    }
}

/// One libpq connection. Not `Sync`: one thread at a time, as libpq requires.
pub struct Db {
    conn: NonNull<pq::PGconn>,
    broken: bool,
    query_timeout: Duration,
    interrupt: Option<&'static AtomicBool>,
    // Kept only to scrub echoed passwords out of error messages.
    conninfo: String,
}

// SAFETY: a PGconn may move between threads as long as it is used by one at a time;
// `Db` is not Sync and all methods take `&mut self`.
unsafe impl Send for Db {}

impl Drop for Db {
    fn drop(&mut self) {
        // SAFETY: conn came from PQconnectStartParams and is finished exactly once.
        unsafe { pq::PQfinish(self.conn.as_ptr()) }
    }
}

fn cstring(s: &str) -> std::result::Result<CString, Error> {
    CString::new(s).map_err(|_| Error::sql("22021", "a value contains a NUL byte"))
}

/// Reads a libpq-owned C string.
///
/// # Safety
/// `p` must be null or point to a NUL-terminated string valid for the call.
unsafe fn text(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

unsafe extern "C" fn on_notice(_arg: *mut c_void, message: *const c_char) {
    let m = text(message);
    if m.starts_with("WARNING") {
        crate::log_warn!("database: {}", m.trim());
    } else {
        crate::log_debug!("database: {}", m.trim());
    }
}

impl Db {
    /// Connects with default options (see [`ConnectOptions`]).
    pub fn connect(conninfo: &str) -> Result<Db> {
        Db::connect_with(conninfo, &ConnectOptions::default())
    }

    /// Connects to `conninfo` (a libpq `key=value` string or `postgresql://` URI; empty
    /// means libpq defaults and `PG*` variables).
    pub fn connect_with(conninfo: &str, opts: &ConnectOptions) -> Result<Db> {
        let mut params: Vec<(&str, String)> =
            vec![("fallback_application_name", "secumon-agent".into())];
        // Keywords are applied in order, so these defaults come before the user's string
        // (which may override them) ...
        if opts.connect_timeout.is_none() && std::env::var_os("PGCONNECT_TIMEOUT").is_none() {
            params.push((
                "connect_timeout",
                DEFAULT_CONNECT_TIMEOUT.as_secs().to_string(),
            ));
        }
        if !conninfo.trim().is_empty() {
            params.push(("dbname", conninfo.to_string()));
        }
        // ... and these after it: explicit options and UTF-8, which is what we send.
        if let Some(t) = opts.connect_timeout {
            params.push(("connect_timeout", t.as_secs().max(1).to_string()));
        }
        params.push(("client_encoding", "UTF8".into()));
        let keys: Vec<CString> = params
            .iter()
            .map(|(k, _)| cstring(k))
            .collect::<Result<_>>()?;
        let values: Vec<CString> = params
            .iter()
            .map(|(_, v)| {
                cstring(v).map_err(|_| {
                    Error::new(
                        ErrorKind::Connect,
                        "the connection string contains a NUL byte",
                    )
                })
            })
            .collect::<Result<_>>()?;
        let mut key_ptrs: Vec<*const c_char> = keys.iter().map(|k| k.as_ptr()).collect();
        let mut value_ptrs: Vec<*const c_char> = values.iter().map(|v| v.as_ptr()).collect();
        key_ptrs.push(ptr::null());
        value_ptrs.push(ptr::null());

        // SAFETY: both arrays are NULL-terminated and outlive the call.
        let raw = unsafe { pq::PQconnectStartParams(key_ptrs.as_ptr(), value_ptrs.as_ptr(), 1) };
        let conn =
            NonNull::new(raw).ok_or_else(|| Error::new(ErrorKind::Connect, "out of memory"))?;
        let db = Db {
            conn,
            broken: false,
            query_timeout: opts.query_timeout,
            interrupt: opts.interrupt,
            conninfo: conninfo.to_string(),
        };
        if db.status_bad() {
            return Err(db.error(ErrorKind::Connect));
        }
        let deadline = match (
            db.effective_connect_timeout().map(|t| Instant::now() + t),
            opts.deadline,
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // libpq: before the first PQconnectPoll, behave as if it asked to wait for writing.
        let mut wait_for = libc::POLLOUT;
        loop {
            if let Err(kind) = db.wait_socket(wait_for, deadline) {
                let what = if kind == ErrorKind::Timeout {
                    "timeout expired"
                } else {
                    "interrupted"
                };
                return Err(Error::new(
                    kind,
                    format!("{what} while connecting to {}", db.target()),
                ));
            }
            // SAFETY: conn is a live connection handle.
            match unsafe { pq::PQconnectPoll(db.conn.as_ptr()) } {
                pq::PostgresPollingStatusType::PGRES_POLLING_OK => break,
                pq::PostgresPollingStatusType::PGRES_POLLING_FAILED => {
                    return Err(db.error(ErrorKind::Connect))
                }
                pq::PostgresPollingStatusType::PGRES_POLLING_READING => wait_for = libc::POLLIN,
                pq::PostgresPollingStatusType::PGRES_POLLING_WRITING => wait_for = libc::POLLOUT,
                pq::PostgresPollingStatusType::PGRES_POLLING_ACTIVE => wait_for = 0,
            }
        }
        // SAFETY: conn is live; on_notice is a valid extern "C" fn for the whole program.
        unsafe {
            pq::PQsetNoticeProcessor(db.conn.as_ptr(), Some(on_notice), ptr::null_mut());
            if pq::PQsetnonblocking(db.conn.as_ptr(), 1) != 0 {
                return Err(db.error(ErrorKind::Connect));
            }
        }
        Ok(db)
    }

    /// `connect_timeout` as libpq resolved it (string, `PGCONNECT_TIMEOUT`, our default);
    /// libpq leaves enforcing it to us in non-blocking mode. `None` = wait forever.
    fn effective_connect_timeout(&self) -> Option<Duration> {
        // SAFETY: PQconninfo returns an array terminated by a NULL keyword, freed below.
        unsafe {
            let opts = pq::PQconninfo(self.conn.as_ptr());
            if opts.is_null() {
                return Some(DEFAULT_CONNECT_TIMEOUT);
            }
            let mut value = None;
            let mut p = opts;
            while !(*p).keyword.is_null() {
                if CStr::from_ptr((*p).keyword).to_bytes() == b"connect_timeout"
                    && !(*p).val.is_null()
                {
                    value = Some(text((*p).val));
                }
                p = p.add(1);
            }
            pq::PQconninfoFree(opts);
            match value.and_then(|v| v.trim().parse::<i64>().ok()) {
                // libpq treats anything below 2 s as 2 s.
                Some(s) if s > 0 => Some(Duration::from_secs(s.max(2) as u64)),
                Some(_) => None,
                None => Some(DEFAULT_CONNECT_TIMEOUT),
            }
        }
    }

    fn status_bad(&self) -> bool {
        // SAFETY: conn is live.
        unsafe { pq::PQstatus(self.conn.as_ptr()) == pq::ConnStatusType::CONNECTION_BAD }
    }

    fn error_message(&self) -> String {
        // SAFETY: conn is live; PQerrorMessage returns a string owned by conn.
        let m = unsafe { text(pq::PQerrorMessage(self.conn.as_ptr())) };
        let m = crate::mask::scrub(&m, &self.conninfo);
        if m.trim().is_empty() {
            "unknown libpq error".into()
        } else {
            m
        }
    }

    fn error(&self, kind: ErrorKind) -> Error {
        Error::new(kind, self.error_message())
    }

    /// Waits until the socket is ready for `events` (0 = just poll again), the deadline
    /// passes or the interrupt flag is set.
    fn wait_socket(
        &self,
        events: libc::c_short,
        deadline: Option<Instant>,
    ) -> std::result::Result<(), ErrorKind> {
        loop {
            if self.interrupt.is_some_and(|f| f.load(Ordering::SeqCst)) {
                return Err(ErrorKind::Interrupted);
            }
            let mut step = Duration::from_millis(POLL_STEP_MS);
            if let Some(d) = deadline {
                let now = Instant::now();
                if now >= d {
                    return Err(ErrorKind::Timeout);
                }
                step = step.min(d - now);
            }
            if events == 0 {
                return Ok(());
            }
            // SAFETY: conn is live.
            let fd = unsafe { pq::PQsocket(self.conn.as_ptr()) };
            if fd < 0 {
                return Ok(()); // let libpq report what happened
            }
            let mut pfd = libc::pollfd {
                fd,
                events,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, step.as_millis().max(1) as c_int) };
            if rc > 0 {
                return Ok(());
            }
            if rc < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return Ok(()); // libpq will notice the broken socket
            }
        }
    }

    /// Whether the connection can still be used (not broken, not timed out mid-query).
    pub fn is_usable(&self) -> bool {
        !self.broken && !self.status_bad()
    }

    pub fn set_query_timeout(&mut self, timeout: Duration) {
        self.query_timeout = timeout;
    }

    pub fn set_interrupt(&mut self, flag: Option<&'static AtomicBool>) {
        self.interrupt = flag;
    }

    /// `user@host:port/dbname`, for logs (never the password).
    pub fn target(&self) -> String {
        let c = self.conn.as_ptr();
        // SAFETY: conn is live; the getters return strings owned by conn (or NULL).
        unsafe {
            format!(
                "{}@{}:{}/{}",
                text(pq::PQuser(c)),
                text(pq::PQhost(c)),
                text(pq::PQport(c)),
                text(pq::PQdb(c))
            )
        }
    }

    /// Runs one statement with text parameters (`None` = SQL NULL) and returns the first
    /// column of the first row, if any.
    pub fn query_value(&mut self, sql: &str, params: &[Option<String>]) -> Result<Option<String>> {
        if self.broken {
            return Err(Error::new(
                ErrorKind::ConnectionLost,
                "the connection was abandoned after an earlier failure",
            ));
        }
        if self.status_bad() {
            self.broken = true;
            return Err(self.error(ErrorKind::ConnectionLost));
        }
        let sql = cstring(sql)?;
        let values: Vec<Option<CString>> = params
            .iter()
            .map(|p| p.as_deref().map(cstring).transpose())
            .collect::<Result<_>>()?;
        let ptrs: Vec<*const c_char> = values
            .iter()
            .map(|v| v.as_ref().map_or(ptr::null(), |c| c.as_ptr()))
            .collect();
        let conn = self.conn.as_ptr();
        let deadline = Some(Instant::now() + self.query_timeout);
        let result = (|| {
            // SAFETY: conn is live; sql and every parameter pointer outlive the call;
            // NULL types/lengths/formats mean "text parameters, types from the casts".
            let sent = unsafe {
                pq::PQsendQueryParams(
                    conn,
                    sql.as_ptr(),
                    ptrs.len() as c_int,
                    ptr::null(),
                    ptrs.as_ptr(),
                    ptr::null(),
                    ptr::null(),
                    0,
                )
            };
            if sent == 0 {
                return Err(self.error(ErrorKind::ConnectionLost));
            }
            // Non-blocking mode: push the query out, reading whatever arrives meanwhile.
            loop {
                // SAFETY: conn is live.
                match unsafe { pq::PQflush(conn) } {
                    0 => break,
                    1 => {
                        self.wait_socket(libc::POLLIN | libc::POLLOUT, deadline)
                            .map_err(|k| self.wait_error(k))?;
                        // SAFETY: conn is live.
                        if unsafe { pq::PQconsumeInput(conn) } == 0 {
                            return Err(self.error(ErrorKind::ConnectionLost));
                        }
                    }
                    _ => return Err(self.error(ErrorKind::ConnectionLost)),
                }
            }
            let mut value = None;
            let mut first_error: Option<Error> = None;
            loop {
                // SAFETY: conn is live.
                while unsafe { pq::PQisBusy(conn) } != 0 {
                    self.wait_socket(libc::POLLIN, deadline)
                        .map_err(|k| self.wait_error(k))?;
                    // SAFETY: conn is live.
                    if unsafe { pq::PQconsumeInput(conn) } == 0 {
                        return Err(self.error(ErrorKind::ConnectionLost));
                    }
                }
                // SAFETY: not busy, so PQgetResult does not block; res is cleared below.
                let res = unsafe { pq::PQgetResult(conn) };
                if res.is_null() {
                    break;
                }
                // SAFETY: res is a live result until PQclear.
                unsafe {
                    match pq::PQresultStatus(res) {
                        pq::ExecStatusType::PGRES_TUPLES_OK
                        | pq::ExecStatusType::PGRES_SINGLE_TUPLE => {
                            if value.is_none()
                                && pq::PQntuples(res) > 0
                                && pq::PQnfields(res) > 0
                                && pq::PQgetisnull(res, 0, 0) == 0
                            {
                                value = Some(text(pq::PQgetvalue(res, 0, 0)));
                            }
                        }
                        pq::ExecStatusType::PGRES_COMMAND_OK
                        | pq::ExecStatusType::PGRES_EMPTY_QUERY => {}
                        _ => {
                            if first_error.is_none() {
                                first_error = Some(self.result_error(res));
                            }
                        }
                    }
                    pq::PQclear(res);
                }
            }
            match first_error {
                Some(e) => Err(e),
                None => Ok(value),
            }
        })();
        if let Err(e) = &result {
            if matches!(
                e.kind,
                ErrorKind::ConnectionLost | ErrorKind::Timeout | ErrorKind::Interrupted
            ) {
                self.broken = true;
            }
        }
        result
    }

    fn wait_error(&self, kind: ErrorKind) -> Error {
        match kind {
            ErrorKind::Timeout => Error::new(
                kind,
                format!(
                    "no answer from {} within {:?}",
                    self.target(),
                    self.query_timeout
                ),
            ),
            _ => Error::new(kind, "interrupted while waiting for the database"),
        }
    }

    /// Turns an error result into an [`Error`]; errors without a SQLSTATE, in class 08
    /// or from a server shutting down mean the connection is gone.
    ///
    /// # Safety
    /// `res` must be a live result.
    unsafe fn result_error(&self, res: *const pq::PGresult) -> Error {
        let field = |code: u8| {
            let v = text(pq::PQresultErrorField(res, c_int::from(code)));
            (!v.is_empty()).then_some(v)
        };
        let sqlstate = field(pq::PG_DIAG_SQLSTATE);
        let mut message = field(pq::PG_DIAG_MESSAGE_PRIMARY)
            .unwrap_or_else(|| text(pq::PQresultErrorMessage(res)));
        if let Some(d) = field(pq::PG_DIAG_MESSAGE_DETAIL) {
            message.push_str(&format!(" (detail: {d})"));
        }
        if let Some(h) = field(pq::PG_DIAG_MESSAGE_HINT) {
            message.push_str(&format!(" (hint: {h})"));
        }
        let message = crate::mask::scrub(&message, &self.conninfo);
        let lost = self.status_bad()
            || match sqlstate.as_deref() {
                None => true,
                Some(s) => s.starts_with("08") || matches!(s, "57P01" | "57P02" | "57P03"),
            };
        let mut e = Error::new(
            if lost {
                ErrorKind::ConnectionLost
            } else {
                ErrorKind::Sql
            },
            message,
        );
        e.sqlstate = sqlstate;
        e
    }

    /// `secumon.register_agent(...)`: on start and after every reconnect.
    pub fn register(&mut self, info: &AgentInfo) -> Result<()> {
        self.query_value(REGISTER_SQL, &register_params(info))?;
        Ok(())
    }

    /// The series names `agent_id` has stored (`secumon.agent_series`). Names hold no raw
    /// newline (a label value's newline is escaped), so they come back one per line.
    pub fn stored_series(&mut self, agent_id: &str) -> Result<Vec<String>> {
        let text = self.query_value(
            "SELECT string_agg(s, E'\\n') FROM secumon.agent_series($1::text) AS s",
            &[Some(agent_id.to_string())],
        )?;
        Ok(text
            .map(|t| t.lines().map(str::to_string).collect())
            .unwrap_or_default())
    }

    /// `secumon.ingest(...)` of one report, in one transaction. `Ok(true)` = stored,
    /// `Ok(false)` = this (agent_id, time) was already stored.
    pub fn ingest(&mut self, report: &Report) -> Result<bool> {
        match self
            .query_value(INGEST_SQL, &ingest_params(report))?
            .as_deref()
        {
            Some("t") => Ok(true),
            Some("f") => Ok(false),
            other => Err(Error::new(
                ErrorKind::Protocol,
                format!("secumon.ingest returned {other:?}, expected a boolean"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_classification() {
        assert!(Error::sql("22P02", "bad").rejects_report());
        assert!(Error::sql("23505", "dup").rejects_report());
        assert!(Error::sql("42501", "no").rejects_report());
        assert!(!Error::sql("42883", "function secumon.ingest does not exist").rejects_report());
        assert!(!Error::sql("40001", "serialization").rejects_report());
        assert!(!Error::sql("23503", "agent \"x\" is not registered").rejects_report());
        assert!(!Error::sql("P0002", "agent \"x\" is not registered").rejects_report());
        assert!(!Error::new(ErrorKind::ConnectionLost, "gone").rejects_report());
        assert_eq!(
            Error::sql("42501", "permission denied").to_string(),
            "permission denied (SQLSTATE 42501)"
        );
    }

    #[test]
    fn refused_connection_is_a_one_line_connect_error() {
        let e = Db::connect(
            "host=127.0.0.1 port=1 user=x dbname=x password=hunter2hunter2 sslmode=disable",
        )
        .err()
        .unwrap();
        assert_eq!(e.kind(), ErrorKind::Connect);
        assert!(!e.to_string().contains('\n'), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(e.to_string().contains("127.0.0.1"), "{e}");
    }

    #[test]
    fn malformed_conninfo_is_reported_without_the_password() {
        let e = Db::connect("host=127.0.0.1 password=topsecret99 bogus_option=1")
            .err()
            .unwrap();
        assert_eq!(e.kind(), ErrorKind::Connect);
        assert!(e.to_string().contains("bogus_option"), "{e}");
        assert!(!e.to_string().contains("topsecret99"), "{e}");
    }

    #[test]
    fn interrupt_flag_stops_a_connection_attempt() {
        static FLAG: AtomicBool = AtomicBool::new(true);
        // The flag is already set, so the attempt ends at its first wait.
        let opts = ConnectOptions {
            interrupt: Some(&FLAG),
            ..Default::default()
        };
        let started = Instant::now();
        let e = Db::connect_with("host=127.0.0.1 port=1 sslmode=disable", &opts)
            .err()
            .unwrap();
        assert!(
            matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::Connect),
            "{e:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
