//! `secumon-agent [--config FILE] [--once] [--dry-run] [--version] [--help]`
//!
//! Exit codes: 0 success, 1 runtime error, 2 usage or configuration error (including no
//! database connection configured at all, see [`config::require_connection`]).
//! Signals: SIGINT/SIGTERM stop (after a bounded flush), SIGHUP reloads the configuration
//! in daemon mode and is ignored in `--once` and `--dry-run`; none of them kills the agent.
//! Errors are one line on stderr starting with `secumon-agent: error: `.

use secumon_agent::collect::Collector;
use secumon_agent::{config, daemon, enroll, log, signals, VERSION};
use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

const HELP: &str = "\
secumon-agent — collects host metrics and ships them to the SecuMon PostgreSQL extension

Usage: secumon-agent [--config FILE] [--once] [--dry-run] [--version] [--help]

Options:
  -c, --config FILE  configuration file (default: /etc/secumon/agent.toml if it exists)
      --once         collect one report (every scrape, exec and probe run once too),
                     register, ingest it and exit
      --dry-run      print one report as JSON on stdout; touch no database (implies --once)
  -V, --version      print the version and exit
  -h, --help         print this help and exit

Without --once the agent runs until SIGINT/SIGTERM: it collects every `interval`,
spools each report on disk and ships the spool to the database, replaying it in order
after an outage. SIGHUP re-reads the configuration (file and environment) and applies
it without losing spooled reports; an invalid file is logged and the running
configuration kept. agent_id and spool_dir change only with a restart. In --once and
--dry-run SIGHUP is ignored.

Environment (overrides the file):
  SECUMON_AGENT_ID  SECUMON_DATABASE  SECUMON_INTERVAL  SECUMON_SPOOL_DIR
  SECUMON_SPOOL_MAX_BYTES  SECUMON_TOP_PROCESSES  SECUMON_LOG_LEVEL
  SECUMON_ENROLL_TOKEN
The database connection string is libpq's (key=value or postgresql:// URI); PG*
variables, ~/.pgpass, TLS and SCRAM work as with psql. Without a connection (no
`database`, no SECUMON_DATABASE, no PGHOST/PGSERVICE/...) the agent exits with status 2.

Exit status: 0 stopped or done, 1 cannot go on (e.g. --once and the database
unreachable), 2 usage or configuration error.
";

#[derive(Debug, Default, PartialEq)]
struct Args {
    config: Option<PathBuf>,
    once: bool,
    dry_run: bool,
    version: bool,
    help: bool,
}

fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Args, String> {
    let mut out = Args::default();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let Some(s) = arg.to_str() else {
            return Err(format!("unexpected argument {arg:?}"));
        };
        match s {
            "--once" => out.once = true,
            "--dry-run" => out.dry_run = true,
            "-V" | "--version" => out.version = true,
            "-h" | "--help" => out.help = true,
            "-c" | "--config" => {
                let v = it.next().ok_or_else(|| format!("{s} needs a file name"))?;
                out.config = Some(PathBuf::from(v));
            }
            _ if s.starts_with("--config=") => {
                let v = &s["--config=".len()..];
                if v.is_empty() {
                    return Err("--config needs a file name".into());
                }
                out.config = Some(PathBuf::from(v));
            }
            _ if s.starts_with('-') => return Err(format!("unknown option {s}")),
            _ => return Err(format!("unexpected argument {s:?}")),
        }
    }
    Ok(out)
}

fn fail(code: i32, message: &str) -> i32 {
    eprintln!("secumon-agent: error: {}", log::one_line(message));
    code
}

fn real_main() -> i32 {
    let args = match parse_args(std::env::args_os().skip(1)) {
        Ok(a) => a,
        Err(e) => return fail(2, &format!("{e} (see secumon-agent --help)")),
    };
    if args.help {
        print!("{HELP}");
        return 0;
    }
    if args.version {
        println!("secumon-agent {VERSION}");
        return 0;
    }
    // Before anything slow: SIGHUP's default action would end the agent with status 129.
    if let Err(e) = signals::install() {
        return fail(1, &format!("cannot install signal handlers: {e}"));
    }
    let cfg = match config::load(args.config.as_deref(), &|k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => return fail(2, &e.to_string()),
    };
    log::set_level(cfg.log_level);

    if args.dry_run {
        let report = daemon::collect_once(&cfg, &mut Collector::new(&cfg));
        let mut out = std::io::stdout().lock();
        return match writeln!(out, "{}", report.to_json_pretty()).and_then(|_| out.flush()) {
            Ok(()) => 0,
            // `secumon-agent --dry-run | head` is not an error.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
            Err(e) => fail(1, &format!("cannot write to stdout: {e}")),
        };
    }
    // A freshly installed agent has no connection yet: say so once and exit 2, which the
    // systemd unit's RestartPreventExitStatus=2 does not restart (no crash loop).
    if let Err(e) = config::require_connection(&cfg, &|k| std::env::var(k).ok()) {
        return fail(2, &e.to_string());
    }
    // With an enroll_token: the agent's own login, from <spool_dir>/credentials or enrolling.
    let cfg = match enroll::prepare(&cfg) {
        Ok(c) => c,
        Err(e) => return fail(e.exit_code, &e.message),
    };
    if args.once {
        return match daemon::run_once(&cfg) {
            Ok(_) => 0,
            Err(e) => fail(1, &e),
        };
    }
    match daemon::run(&cfg) {
        Ok(()) => 0,
        Err(e) => fail(1, &e),
    }
}

fn main() {
    std::process::exit(real_main());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Result<Args, String> {
        parse_args(v.iter().map(OsString::from))
    }

    #[test]
    fn parses_every_option() {
        let a = parse(&["--config", "/x.toml", "--once", "--dry-run"]).unwrap();
        assert_eq!(a.config, Some(PathBuf::from("/x.toml")));
        assert!(a.once && a.dry_run);
        assert_eq!(
            parse(&["--config=/y.toml"]).unwrap().config,
            Some(PathBuf::from("/y.toml"))
        );
        assert!(parse(&["-V"]).unwrap().version);
        assert!(parse(&["-h"]).unwrap().help);
    }

    #[test]
    fn rejects_bad_usage() {
        assert!(parse(&["--config"]).unwrap_err().contains("needs a file"));
        assert!(parse(&["--frobnicate"])
            .unwrap_err()
            .contains("unknown option --frobnicate"));
        assert!(parse(&["extra"]).is_err());
    }
}
