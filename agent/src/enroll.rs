//! Auto-registration: an agent configured with the connection of a role in `secumon_enroll`
//! and an `enroll_token` calls `secumon.enroll()` once, which creates the agent's own login
//! role and registers it in the token's tenant. The role and its password are kept in
//! `<spool_dir>/credentials` (mode 0600); from then on the agent logs in as that role, with
//! the configured connection string's `user` and `password` replaced, and never enrolls again
//! while the file exists. Neither the token nor the password is ever logged.
//! See docs/enrollment.md.

use crate::config::Config;
use crate::db::{ConnectOptions, Db, ErrorKind};
use crate::{log_info, signals};
use pq_sys as pq;
use serde::Deserialize;
use std::ffi::{c_char, CStr, CString};
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::ptr;

pub const CREDENTIALS_FILE: &str = "credentials";
/// Ends like the spool's temporary files, so that a crash's leftover is removed on start.
const CREDENTIALS_TMP: &str = ".credentials.tmp";
pub const TOKEN_PREFIX: &str = "smenroll_";
pub const ENROLL_SQL: &str = "SELECT e.role_name || ' ' || e.password \
     FROM secumon.enroll($1::text, $2::text, $3::text, $4::text, $5::text, $6::jsonb) AS e";

/// An enrollment token; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(token: impl Into<String>) -> Token {
        Token(token.into().trim().to_string())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

/// Why the agent cannot start with its enrollment; `exit_code` 2 when only a person can fix
/// it (a refused token, an agent_id taken), 1 when trying again later may work.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrollError {
    pub exit_code: i32,
    pub message: String,
}

impl fmt::Display for EnrollError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

fn fatal(message: impl Into<String>) -> EnrollError {
    EnrollError {
        exit_code: 2,
        message: message.into(),
    }
}

/// The login `secumon.enroll()` gave this agent.
#[derive(Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub agent_id: String,
    pub role: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Credentials {{ agent_id: {:?}, role: {:?}, password: *** }}",
            self.agent_id, self.role
        )
    }
}

impl Credentials {
    /// What the server returns and the file holds: a role name PostgreSQL needs no quotes
    /// for and a URL-safe base64 password, so the file never needs escaping.
    fn valid(&self) -> bool {
        let role_ok = !self.role.is_empty()
            && self.role.len() <= 63
            && self
                .role
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_');
        let password_ok = self.password.len() >= 16
            && self
                .password
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
        role_ok && password_ok && crate::config::valid_agent_id(&self.agent_id)
    }

    fn to_file_text(&self) -> String {
        format!(
            "# Written by secumon-agent when it enrolled (secumon.enroll()): the database login of\n\
             # this agent. Keep it private; delete it to enroll again with a new enroll_token.\n\
             agent_id = \"{}\"\nrole = \"{}\"\npassword = \"{}\"\n",
            self.agent_id, self.role, self.password
        )
    }
}

pub fn credentials_path(spool_dir: &Path) -> PathBuf {
    spool_dir.join(CREDENTIALS_FILE)
}

/// Reads `<spool_dir>/credentials`: `Ok(None)` when there is none.
pub fn read_credentials(spool_dir: &Path) -> Result<Option<Credentials>, EnrollError> {
    let path = credentials_path(spool_dir);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fatal(format!("cannot read {}: {e}", path.display()))),
    };
    match toml::from_str::<Credentials>(&text) {
        Ok(c) if c.valid() => Ok(Some(c)),
        // Not the parser's message: it may quote the password.
        _ => Err(fatal(format!(
            "{} is not a credentials file written by secumon-agent; delete it to enroll again with a new enroll_token",
            path.display()
        ))),
    }
}

/// Writes the credentials atomically (temporary file, fsync, rename), mode 0600.
fn write_credentials(spool_dir: &Path, file: fs::File, c: &Credentials) -> std::io::Result<()> {
    let mut file = file;
    file.write_all(c.to_file_text().as_bytes())?;
    file.sync_all()?;
    fs::rename(spool_dir.join(CREDENTIALS_TMP), credentials_path(spool_dir))?;
    fs::File::open(spool_dir)?.sync_all()
}

/// `conninfo` (key=value, URI or empty) as a key=value string whose `user` and `password`
/// are `user` and `password`; every other setting is kept.
pub fn with_login(conninfo: &str, user: &str, password: &str) -> Result<String, String> {
    let trimmed = conninfo.trim();
    let mut parts: Vec<(String, String)> = Vec::new();
    let is_uri = trimmed.starts_with("postgresql://") || trimmed.starts_with("postgres://");
    if !trimmed.is_empty() && !is_uri && !trimmed.contains('=') {
        // libpq takes a bare word as a database name.
        parts.push(("dbname".into(), trimmed.to_string()));
    } else if !trimmed.is_empty() {
        let c = CString::new(trimmed).map_err(|_| "the connection string contains a NUL byte")?;
        let mut err: *mut c_char = ptr::null_mut();
        // SAFETY: c is NUL-terminated; err receives a libpq-allocated message or stays NULL.
        let opts = unsafe { pq::PQconninfoParse(c.as_ptr(), &mut err) };
        if opts.is_null() {
            let message = if err.is_null() {
                "out of memory".to_string()
            } else {
                // SAFETY: err is a NUL-terminated string from libpq, freed right after.
                let m = unsafe { CStr::from_ptr(err).to_string_lossy().into_owned() };
                // SAFETY: err was allocated by libpq.
                unsafe { pq::PQfreemem(err.cast()) };
                m
            };
            return Err(format!(
                "invalid connection string: {}",
                crate::mask::scrub(message.trim(), conninfo)
            ));
        }
        // SAFETY: opts is an array terminated by a NULL keyword; freed once below.
        unsafe {
            let mut p = opts;
            while !(*p).keyword.is_null() {
                let key = CStr::from_ptr((*p).keyword).to_string_lossy().into_owned();
                if !(*p).val.is_null() && key != "user" && key != "password" {
                    parts.push((key, CStr::from_ptr((*p).val).to_string_lossy().into_owned()));
                }
                p = p.add(1);
            }
            pq::PQconninfoFree(opts);
        }
    }
    parts.push(("user".into(), user.to_string()));
    parts.push(("password".into(), password.to_string()));
    Ok(parts
        .iter()
        .map(|(k, v)| format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")))
        .collect::<Vec<_>>()
        .join(" "))
}

fn apply(mut cfg: Config, c: &Credentials, spool_dir: &Path) -> Result<Config, EnrollError> {
    if c.agent_id != cfg.agent_id {
        return Err(fatal(format!(
            "{} holds the login of agent_id {:?}, but agent_id is {:?}: set agent_id back, or delete that file and enroll again with a new enroll_token",
            credentials_path(spool_dir).display(),
            c.agent_id,
            cfg.agent_id
        )));
    }
    cfg.database = with_login(&cfg.database, &c.role, &c.password).map_err(fatal)?;
    Ok(cfg)
}

/// For a configuration (re)read: logs in with the saved credentials of `spool_dir` (the
/// running agent's) if there are any; never enrolls.
pub fn apply_saved(cfg: Config, spool_dir: &Path) -> Result<Config, EnrollError> {
    match read_credentials(spool_dir)? {
        Some(c) => apply(cfg, &c, spool_dir),
        None => Ok(cfg),
    }
}

/// At start (daemon and `--once`): the configuration to run with. Saved credentials win;
/// without them and with an `enroll_token`, enrolls now and saves them; otherwise `cfg` as is.
pub fn prepare(cfg: &Config) -> Result<Config, EnrollError> {
    let spool_dir = cfg.spool_dir.clone();
    if let Some(c) = read_credentials(&spool_dir)? {
        return apply(cfg.clone(), &c, &spool_dir);
    }
    let Some(token) = cfg.enroll_token.as_ref() else {
        return Ok(cfg.clone());
    };
    if !token.expose().starts_with(TOKEN_PREFIX) || token.expose().len() < TOKEN_PREFIX.len() + 32 {
        return Err(fatal(format!(
            "enroll_token is not an enrollment token (they start with {TOKEN_PREFIX} and come from secumon.create_enrollment_token())"
        )));
    }
    // Before enrolling: a token is used up by enrolling, so the file must be writable first.
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&spool_dir)
        .map_err(|e| EnrollError {
            exit_code: 1,
            message: format!("cannot create {}: {e}", spool_dir.display()),
        })?;
    let tmp = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(spool_dir.join(CREDENTIALS_TMP))
        .map_err(|e| EnrollError {
            exit_code: 1,
            message: format!(
                "cannot write the credentials file in {}: {e}",
                spool_dir.display()
            ),
        })?;

    let result = enroll_now(cfg, token, &spool_dir, tmp);
    if result.is_err() {
        let _ = fs::remove_file(spool_dir.join(CREDENTIALS_TMP));
    }
    apply(cfg.clone(), &result?, &spool_dir)
}

/// Calls `secumon.enroll()` and saves what it returns through `tmp`.
fn enroll_now(
    cfg: &Config,
    token: &Token,
    spool_dir: &Path,
    tmp: fs::File,
) -> Result<Credentials, EnrollError> {
    log_info!(
        "enrolling agent {} through {}",
        cfg.agent_id,
        crate::daemon::describe_database(&cfg.database)
    );
    let opts = ConnectOptions {
        interrupt: Some(signals::stop_flag()),
        ..Default::default()
    };
    let retry_later = |message: String| EnrollError {
        exit_code: 1,
        message,
    };
    let mut db = Db::connect_with(&cfg.database, &opts)
        .map_err(|e| retry_later(format!("cannot connect to the database to enroll: {e}")))?;
    let labels = serde_json::to_string(&cfg.labels).unwrap_or_else(|_| "{}".into());
    let answer = db
        .query_value(
            ENROLL_SQL,
            &[
                Some(token.expose().to_string()),
                Some(cfg.agent_id.clone()),
                Some(crate::collect::system::hostname()),
                Some(crate::collect::system::os_description()),
                Some(crate::VERSION.to_string()),
                Some(labels),
            ],
        )
        .map_err(|e| {
            let message = format!("enrollment of agent {:?} refused: {e}", cfg.agent_id);
            match (e.kind(), e.sqlstate()) {
                (ErrorKind::Sql, Some(s))
                    if s.starts_with("28") || s.starts_with("42") || s.starts_with("22") =>
                {
                    fatal(match s {
                        "28000" => format!("{message}; set a new enroll_token (secumon.create_enrollment_token()) and start the agent again"),
                        _ => message,
                    })
                }
                _ => retry_later(message),
            }
        })?;
    drop(db);
    let credentials = answer
        .as_deref()
        .and_then(|a| a.split_once(' '))
        .map(|(role, password)| Credentials {
            agent_id: cfg.agent_id.clone(),
            role: role.to_string(),
            password: password.to_string(),
        })
        .filter(Credentials::valid)
        .ok_or_else(|| retry_later("secumon.enroll() returned no usable login".to_string()))?;
    write_credentials(spool_dir, tmp, &credentials).map_err(|e| {
        retry_later(format!(
            "enrolled as role {}, but cannot save {}: {e}; enroll again with a new enroll_token",
            credentials.role,
            credentials_path(spool_dir).display()
        ))
    })?;
    log_info!(
        "enrolled agent {} as role {}; its login is saved in {}",
        cfg.agent_id,
        credentials.role,
        credentials_path(spool_dir).display()
    );
    Ok(credentials)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_replaces_user_and_password_and_keeps_the_rest() {
        let s = with_login(
            "host=db.example.com port=5433 dbname=secumon user=enroller password=secret sslmode=require",
            "secumon_agent_web01",
            "pw-1_x",
        )
        .unwrap();
        assert!(s.contains("host='db.example.com'"), "{s}");
        assert!(
            s.contains("port='5433'") && s.contains("sslmode='require'"),
            "{s}"
        );
        assert!(
            s.ends_with("user='secumon_agent_web01' password='pw-1_x'"),
            "{s}"
        );
        assert!(!s.contains("enroller") && !s.contains("secret"), "{s}");
    }

    #[test]
    fn uris_bare_names_and_empty_strings_become_key_value_strings() {
        let s = with_login(
            "postgresql://enroller:secret@db:5432/mon?sslmode=verify-full",
            "r",
            "p",
        )
        .unwrap();
        assert!(s.contains("host='db'") && s.contains("dbname='mon'"), "{s}");
        assert!(
            s.contains("sslmode='verify-full'") && !s.contains("secret"),
            "{s}"
        );
        assert_eq!(
            with_login("mon", "r", "p").unwrap(),
            "dbname='mon' user='r' password='p'"
        );
        assert_eq!(with_login("", "r", "p").unwrap(), "user='r' password='p'");
        let quoted = with_login(r"dbname='a\'b'", "r", "p").unwrap();
        assert_eq!(quoted, r"dbname='a\'b' user='r' password='p'");
    }

    #[test]
    fn the_login_is_masked_in_logs() {
        let s = with_login(
            "host=db user=enroller",
            "secumon_agent_web01",
            "Zq-8_secret-pw-000",
        )
        .unwrap();
        let masked = crate::mask::mask_conninfo(&s);
        assert!(!masked.contains("Zq-8_secret-pw-000"), "{masked}");
        assert!(masked.contains("secumon_agent_web01"), "{masked}");
    }

    #[test]
    fn a_malformed_connection_string_is_an_error_without_its_password() {
        let e = with_login("host=db password=hunter22 'oops", "r", "p").unwrap_err();
        assert!(!e.contains("hunter22"), "{e}");
    }

    #[test]
    fn tokens_and_passwords_never_show_in_debug_output() {
        assert_eq!(format!("{:?}", Token::new("smenroll_abc")), "Token(***)");
        let c = Credentials {
            agent_id: "web01".into(),
            role: "secumon_agent_web01".into(),
            password: "a-very-long-password_1234".into(),
        };
        assert!(!format!("{c:?}").contains("a-very-long"));
    }

    #[test]
    fn credentials_round_trip_through_the_file_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("secumon-enroll-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        assert_eq!(read_credentials(&dir).unwrap(), None);
        let c = Credentials {
            agent_id: "web01".into(),
            role: "secumon_agent_web01".into(),
            password: "Abcdefghijklmnop-_0123456789".into(),
        };
        let tmp = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(dir.join(CREDENTIALS_TMP))
            .unwrap();
        write_credentials(&dir, tmp, &c).unwrap();
        assert_eq!(read_credentials(&dir).unwrap(), Some(c));
        let mode = fs::metadata(credentials_path(&dir))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dir.join(CREDENTIALS_TMP).exists());
        fs::write(credentials_path(&dir), "password = 'x'").unwrap();
        let e = read_credentials(&dir).unwrap_err();
        assert_eq!(e.exit_code, 2);
        assert!(e.message.contains("delete it"), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn saved_credentials_for_another_agent_id_are_refused() {
        let cfg = Config {
            agent_id: "web02".into(),
            ..Config::default()
        };
        let c = Credentials {
            agent_id: "web01".into(),
            role: "secumon_agent_web01".into(),
            password: "Abcdefghijklmnop".into(),
        };
        let e = apply(cfg, &c, Path::new("/x")).unwrap_err();
        assert!(
            e.message.contains("\"web01\"") && e.message.contains("\"web02\""),
            "{e}"
        );
    }
}
