//! Tests of the configuration: file, environment, units and inputs.

use super::*;
use std::collections::HashMap;

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    from_toml_str(text, "/etc/secumon/agent.toml", &no_env)
}

#[test]
fn intervals_parse_in_every_documented_form() {
    assert_eq!(parse_interval("10s"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_interval("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_interval("1m"), Ok(Duration::from_secs(60)));
    assert_eq!(parse_interval("1h"), Ok(Duration::from_secs(3600)));
    assert_eq!(parse_interval("1m30s"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_interval("2.5s"), Ok(Duration::from_millis(2500)));
    assert_eq!(parse_interval(" 15 "), Ok(Duration::from_secs(15)));
    for bad in ["", "ten", "10x", "-5s", "s", "1.2.3s"] {
        assert!(parse_interval(bad).is_err(), "{bad:?} should be rejected");
    }
    assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
    assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
}

#[test]
fn interval_accepts_integers_floats_and_strings_in_toml() {
    assert_eq!(
        parse("interval = 30").unwrap().interval,
        Duration::from_secs(30)
    );
    assert_eq!(
        parse("interval = 0.5").unwrap().interval,
        Duration::from_millis(500)
    );
    assert_eq!(
        parse("interval = \"1m\"").unwrap().interval,
        Duration::from_secs(60)
    );
}

#[test]
fn interval_below_100ms_or_zero_is_rejected() {
    for text in ["interval = \"50ms\"", "interval = 0"] {
        let e = parse(text).unwrap_err().0;
        assert!(e.contains("invalid interval") && e.contains("100ms"), "{e}");
    }
    let e = parse("interval = \"soon\"").unwrap_err().0;
    assert!(
        e.contains("line 1, column 12") && e.contains("\"soon\""),
        "{e}"
    );
}

#[test]
fn defaults_apply_without_a_file() {
    let c = parse("").unwrap();
    assert_eq!(c.interval, DEFAULT_INTERVAL);
    assert_eq!(c.spool_dir, PathBuf::from(DEFAULT_SPOOL_DIR));
    assert_eq!(c.spool_max_bytes, 64 << 20);
    assert_eq!(c.top_processes, 10);
    assert_eq!(c.database, "");
    assert!(!c.network.include_loopback);
    assert!(valid_agent_id(&c.agent_id), "hostname {:?}", c.agent_id);
}

#[test]
fn full_file_parses() {
    let c = parse(
        r#"
agent_id = "web-01.fra1"
database = "host=db.example.com dbname=secumon user=agent sslmode=verify-full"
interval = "15s"
spool_dir = "/tmp/spool"
spool_max_bytes = "128MiB"
top_processes = 5
log_level = "debug"
[labels]
env = "prod"
dc = "fra1"
[disks]
exclude_fs_types = ["nfs4"]
include_mountpoints = ["/"]
[network]
exclude_interfaces = ["veth*", "docker0"]
include_loopback = true
"#,
    )
    .unwrap();
    assert_eq!(c.agent_id, "web-01.fra1");
    assert_eq!(c.interval, Duration::from_secs(15));
    assert_eq!(c.spool_max_bytes, 128 << 20);
    assert_eq!(c.top_processes, 5);
    assert_eq!(c.log_level, Level::Debug);
    assert_eq!(c.labels.get("env").map(String::as_str), Some("prod"));
    assert_eq!(c.disks.exclude_fs_types, vec!["nfs4"]);
    assert_eq!(c.network.exclude_interfaces, vec!["veth*", "docker0"]);
    assert!(c.network.include_loopback);
}

#[test]
fn unknown_key_error_names_the_key_and_the_file() {
    let e = parse("agent_id = \"a\"\nintervall = \"10s\"\n")
        .unwrap_err()
        .0;
    assert!(e.contains("intervall"), "{e}");
    assert!(e.contains("/etc/secumon/agent.toml"), "{e}");
    assert!(e.contains("line 2"), "{e}");
    assert!(!e.contains('\n'), "one line: {e}");
    let e = parse("[network]\nexclude = [\"lo\"]\n").unwrap_err().0;
    assert!(e.contains("exclude") && e.contains("line 2"), "{e}");
}

#[test]
fn malformed_toml_reports_line_and_column_on_one_line() {
    let e = parse("agent_id = \"a\"\ninterval = \"10s\n").unwrap_err().0;
    assert!(
        e.starts_with("config file /etc/secumon/agent.toml: line 2, column"),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn wrong_types_are_reported() {
    let e = parse("top_processes = \"ten\"").unwrap_err().0;
    assert!(e.contains("line 1"), "{e}");
    let e = parse("[labels]\nenv = 1").unwrap_err().0;
    assert!(e.contains("line 2"), "{e}");
}

#[test]
fn invalid_values_are_rejected() {
    for (text, needle) in [
        ("agent_id = \"-leading-dash\"", "agent_id"),
        ("agent_id = \"has space\"", "agent_id"),
        ("top_processes = -1", "top_processes"),
        ("top_processes = 5000", "top_processes"),
        ("spool_max_bytes = 100", "spool_max_bytes"),
        ("spool_dir = \"\"", "spool_dir"),
        ("log_level = \"loud\"", "log_level"),
        ("[labels]\n\"bad key\" = \"x\"", "label name"),
        (
            "[disks]\ninclude_mountpoints = [\"relative\"]",
            "include_mountpoints",
        ),
        (
            "[network]\nexclude_interfaces = [\"\"]",
            "exclude_interfaces",
        ),
    ] {
        let e = parse(text).unwrap_err().0;
        assert!(e.contains(needle), "{text:?} -> {e}");
    }
    let long = format!("agent_id = \"{}\"", "a".repeat(129));
    assert!(parse(&long).is_err());
    assert!(parse(&format!("agent_id = \"{}\"", "a".repeat(128))).is_ok());
}

#[test]
fn environment_overrides_the_file() {
    let env: HashMap<&str, &str> = [
        ("SECUMON_AGENT_ID", "from-env"),
        ("SECUMON_DATABASE", "host=127.0.0.1 port=1"),
        ("SECUMON_INTERVAL", "2s"),
        ("SECUMON_SPOOL_DIR", "/tmp/env-spool"),
        ("SECUMON_SPOOL_MAX_BYTES", "1MiB"),
        ("SECUMON_TOP_PROCESSES", "3"),
        ("SECUMON_LOG_LEVEL", "warn"),
    ]
    .into_iter()
    .collect();
    let lookup = |k: &str| env.get(k).map(|v| v.to_string());
    let c = from_toml_str(
        "agent_id = \"file\"\ninterval = \"30s\"\ntop_processes = 20",
        "f.toml",
        &lookup,
    )
    .unwrap();
    assert_eq!(c.agent_id, "from-env");
    assert_eq!(c.database, "host=127.0.0.1 port=1");
    assert_eq!(c.interval, Duration::from_secs(2));
    assert_eq!(c.spool_dir, PathBuf::from("/tmp/env-spool"));
    assert_eq!(c.spool_max_bytes, 1 << 20);
    assert_eq!(c.top_processes, 3);
    assert_eq!(c.log_level, Level::Warn);
}

#[test]
fn invalid_environment_values_name_the_variable() {
    let lookup = |k: &str| (k == "SECUMON_INTERVAL").then(|| "fast".to_string());
    let e = from_toml_str("", "f.toml", &lookup).unwrap_err().0;
    assert!(e.starts_with("SECUMON_INTERVAL"), "{e}");
    let lookup = |k: &str| (k == "SECUMON_AGENT_ID").then(|| "bad id!".to_string());
    let e = from_toml_str("", "f.toml", &lookup).unwrap_err().0;
    assert!(e.contains("SECUMON_AGENT_ID"), "{e}");
    // Empty variables count as unset.
    let lookup = |k: &str| (k == "SECUMON_TOP_PROCESSES").then(String::new);
    assert_eq!(
        from_toml_str("", "f.toml", &lookup).unwrap().top_processes,
        10
    );
}

#[test]
fn sizes_parse() {
    assert_eq!(parse_size("67108864"), Ok(64 << 20));
    assert_eq!(parse_size("64MiB"), Ok(64 << 20));
    assert_eq!(parse_size("100 MB"), Ok(100_000_000));
    assert_eq!(parse_size("512K"), Ok(512 << 10));
    assert!(parse_size("lots").is_err());
    assert!(parse_size("99999999999999G").is_err());
}

#[test]
fn no_connection_is_a_one_line_configuration_error_naming_the_file() {
    let mut c = parse("").unwrap();
    c.source = Some(PathBuf::from("/etc/secumon/agent.toml"));
    let e = require_connection(&c, &no_env).unwrap_err().0;
    assert!(
        e.starts_with(
            "no database connection configured: set database in /etc/secumon/agent.toml"
        ),
        "{e}"
    );
    assert!(e.contains("SECUMON_DATABASE"), "{e}");
    assert!(!e.contains('\n'), "one line: {e}");
    // An empty string is no connection either, nor is a blank one.
    let mut c = parse("database = \"  \"").unwrap();
    c.source = None;
    let e = require_connection(&c, &no_env).unwrap_err().0;
    assert!(e.contains(DEFAULT_CONFIG_PATH), "{e}");
}

#[test]
fn a_connection_string_or_a_libpq_variable_is_a_connection() {
    let c = parse("database = \"host=db1 dbname=secumon\"").unwrap();
    assert_eq!(require_connection(&c, &no_env), Ok(()));
    let from_env = |k: &str| (k == "SECUMON_DATABASE").then(|| "host=db2".to_string());
    let c = from_toml_str("", "f.toml", &from_env).unwrap();
    assert_eq!(require_connection(&c, &from_env), Ok(()));
    let empty = parse("").unwrap();
    for variable in LIBPQ_TARGET_VARIABLES {
        let env = |k: &str| (k == *variable).then(|| "x".to_string());
        assert_eq!(require_connection(&empty, &env), Ok(()), "{variable}");
    }
    // A password alone says nothing about where to connect; blank variables are unset.
    let env = |k: &str| match k {
        "PGPASSWORD" => Some("secret".to_string()),
        "PGHOST" => Some(" ".to_string()),
        _ => None,
    };
    assert!(require_connection(&empty, &env).is_err());
}

/// `#key = value` and `#[table]` lines of agent/agent.example.toml, uncommented.
fn example_with_defaults_uncommented() -> String {
    include_str!("../../agent.example.toml")
        .lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest)
                if rest.starts_with('[')
                    || rest.starts_with(|c: char| c.is_ascii_lowercase()) =>
            {
                rest
            }
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The keys serde expects where `text` has an unknown one, from its error message
/// ("unknown field `x`, expected one of `a`, `b`" / "expected `a` or `b`").
fn expected_keys(text: &str) -> Vec<String> {
    let e = parse(text).unwrap_err().0;
    let expected = e.split("expected").nth(1).unwrap_or_else(|| panic!("{e}"));
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[test]
fn the_example_config_sets_every_key_to_its_default_when_uncommented() {
    let example = example_with_defaults_uncommented();
    let c = parse(&example).unwrap_or_else(|e| panic!("{e}\n{example}"));
    assert_eq!(
        c,
        parse("").unwrap(),
        "the commented values must be the defaults"
    );
    // As shipped (everything commented) it is valid too, and names no connection.
    let shipped = parse(include_str!("../../agent.example.toml")).unwrap();
    assert!(require_connection(&shipped, &no_env).is_err());

    let set = |table: &str| -> Vec<String> {
        let mut current = String::new();
        let mut keys = Vec::new();
        for line in example.lines() {
            if let Some(name) = line.strip_prefix('[') {
                current = name.trim_end_matches(']').to_string();
            } else if let Some((key, _)) = line.split_once(" = ") {
                if current == table && !line.starts_with('#') {
                    keys.push(key.to_string());
                }
            }
        }
        keys
    };
    // agent_id's default is the hostname, which no file can spell: shown as an example.
    let mut top = set("");
    top.push("agent_id".into());
    top.sort();
    let mut all = expected_keys("zzz = 1");
    all.retain(|k| {
        !["labels", "disks", "network", "scrape", "exec", "probe"].contains(&k.as_str())
    });
    all.sort();
    assert_eq!(top, all, "top-level keys of agent.example.toml");
    for table in ["disks", "network"] {
        let mut keys = set(table);
        keys.sort();
        let mut all = expected_keys(&format!("[{table}]\nzzz = 1"));
        all.sort();
        assert_eq!(keys, all, "keys of [{table}] in agent.example.toml");
    }
    assert!(
        example.contains("\n[labels]"),
        "[labels] in agent.example.toml"
    );
    // Inputs are examples (commented with "# "), each parsing once uncommented.
    for kind in ["scrape", "exec", "probe"] {
        let header = format!("# [[{kind}]]");
        assert!(example.contains(&header), "{header} in agent.example.toml");
    }
    let inputs: String = include_str!("../../agent.example.toml")
        .lines()
        .skip_while(|l| !l.starts_with("# [[scrape]]"))
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| l.starts_with("[[") || l.contains(" = "))
        .collect::<Vec<_>>()
        .join("\n");
    let c = parse(&inputs).unwrap_or_else(|e| panic!("{e}\n{inputs}"));
    assert!(!c.scrapes.is_empty() && !c.execs.is_empty() && c.probes.len() >= 3);
}

#[test]
fn inputs_parse_with_their_defaults() {
    let c = parse(
        r#"
interval = "30s"
[[scrape]]
url = "http://127.0.0.1:9100/metrics"
[[scrape]]
url = "https://app.internal/metrics"
name = "app"
labels = { team = "web" }
interval = "1m"
timeout = "10s"
max_bytes = "1MiB"
[[exec]]
command = ["/usr/local/bin/queue-depth", "--json"]
[[exec]]
command = ["/bin/echo", "x 1"]
name = "echo"
format = "influx"
interval = 2
[[probe]]
http = "https://example.org/health"
expect_status = [200, 204]
expect_body = "ok"
tls_insecure = true
[[probe]]
tcp = "db.internal:5432"
[[probe]]
icmp = "10.0.0.1"
count = 5
[[probe]]
tcp = "[::1]:22"
"#,
    )
    .unwrap();
    let s = &c.scrapes[0];
    assert_eq!(s.common.name, "http://127.0.0.1:9100/metrics");
    assert_eq!(
        s.common.interval,
        Duration::from_secs(30),
        "the agent's interval"
    );
    assert_eq!(s.common.timeout, Duration::from_secs(5));
    assert_eq!(s.max_bytes, 4 << 20);
    let s = &c.scrapes[1];
    assert_eq!(s.common.name, "app");
    assert_eq!(s.common.labels.get("team").map(String::as_str), Some("web"));
    assert_eq!(s.common.interval, Duration::from_secs(60));
    assert_eq!(s.common.timeout, Duration::from_secs(10));
    assert_eq!(s.max_bytes, 1 << 20);
    let e = &c.execs[0];
    assert_eq!(e.common.name, "queue-depth");
    assert_eq!(e.format, ExecFormat::Prometheus);
    assert_eq!(e.max_bytes, 1 << 20);
    let e = &c.execs[1];
    assert_eq!(e.format, ExecFormat::Influx);
    assert_eq!(
        e.common.timeout,
        Duration::from_secs(2),
        "min(5s, interval)"
    );
    assert_eq!(
        c.probes[0].target,
        ProbeTarget::Http {
            url: "https://example.org/health".into(),
            expect_status: vec![200, 204],
            expect_body: Some("ok".into()),
            tls_insecure: true,
        }
    );
    assert_eq!(c.probes[1].common.name, "db.internal:5432");
    assert_eq!(
        c.probes[2].target,
        ProbeTarget::Icmp {
            host: "10.0.0.1".into(),
            count: 5
        }
    );
    assert_eq!(
        c.probes[3].target,
        ProbeTarget::Tcp {
            address: "[::1]:22".into()
        }
    );
    let c = parse("[[probe]]\nicmp = \"127.0.0.1\"").unwrap();
    assert!(matches!(
        c.probes[0].target,
        ProbeTarget::Icmp { count: 3, .. }
    ));
}

#[test]
fn invalid_inputs_name_the_file_the_line_and_the_field() {
    for (text, line, needle) in [
        ("[[scrape]]\nurl = \"ftp://x/metrics\"", 1, "[[scrape]] url"),
        (
            "interval = \"5s\"\n\n[[scrape]]\nurl = \"http://x\"\ntimeout = \"6s\"",
            3,
            "[[scrape]] timeout: 6s is longer than the input's interval 5s",
        ),
        (
            "[[scrape]]\nurl = \"http://x\"\ninterval = \"10ms\"",
            1,
            "[[scrape]] interval",
        ),
        (
            "[[scrape]]\nurl = \"http://x\"\nmax_bytes = 10",
            1,
            "[[scrape]] max_bytes",
        ),
        (
            "[[scrape]]\nurl = \"http://x\"\nlabels = { \"bad-name\" = \"1\" }",
            1,
            "[[scrape]] labels: invalid label name \"bad-name\"",
        ),
        (
            "[[scrape]]\nurl = \"http://x\"\nlabels = { __x = \"1\" }",
            1,
            "[[scrape]] labels",
        ),
        ("[[exec]]\ncommand = []", 1, "[[exec]] command"),
        ("[[exec]]\ncommand = [\"\"]", 1, "[[exec]] command"),
        (
            "[[exec]]\ncommand = [\"/bin/true\"]\nformat = \"json\"",
            1,
            "[[exec]] format: \"json\"",
        ),
        (
            "[[probe]]\nhttp = \"http://x\"\ntcp = \"x:1\"",
            1,
            "exactly one of",
        ),
        ("[[probe]]\nname = \"nothing\"", 1, "exactly one of"),
        ("[[probe]]\ntcp = \"db.internal\"", 1, "[[probe]] tcp"),
        ("[[probe]]\ntcp = \"db:99999\"", 1, "[[probe]] tcp"),
        ("[[probe]]\nicmp = \"a b\"", 1, "[[probe]] icmp"),
        ("[[probe]]\nicmp = \"h\"\ncount = 0", 1, "[[probe]] count"),
        ("[[probe]]\nicmp = \"h\"\ncount = 101", 1, "[[probe]] count"),
        (
            "[[probe]]\nhttp = \"https://x\"\nexpect_status = [99]",
            1,
            "[[probe]] expect_status: 99",
        ),
        (
            "[[probe]]\ntcp = \"h:1\"\nexpect_body = \"ok\"",
            1,
            "http probes only",
        ),
        (
            "[[probe]]\nhttp = \"https://x\"\ncount = 2",
            1,
            "icmp probes only",
        ),
    ] {
        let e = parse(text).unwrap_err().0;
        assert!(
            e.starts_with(&format!("config file /etc/secumon/agent.toml: line {line}")),
            "{text:?} -> {e}"
        );
        assert!(e.contains(needle), "{text:?} -> {e}");
        assert!(!e.contains('\n'), "{e}");
    }
    // Serde's own errors (unknown keys, wrong types, missing fields) carry the place too.
    for (text, needle) in [
        ("[[scrape]]\nurl = \"http://x\"\nurll = 1", "urll"),
        ("[[scrape]]\nname = \"x\"", "url"),
        (
            "[[exec]]\ncommand = \"/bin/sh -c x\"",
            "expected a sequence",
        ),
        ("[[probe]]\nicmp = \"h\"\ncount = \"three\"", "line 3"),
    ] {
        let e = parse(text).unwrap_err().0;
        assert!(
            e.contains(needle) && e.contains("/etc/secumon/agent.toml"),
            "{text:?} -> {e}"
        );
    }
}

#[test]
fn input_names_are_unique_per_kind() {
    let e = parse("[[scrape]]\nurl = \"http://a\"\n[[scrape]]\nurl = \"http://a\"")
        .unwrap_err()
        .0;
    assert!(
        e.contains("two [[scrape]] inputs are named \"http://a\""),
        "{e}"
    );
    let e = parse("[[exec]]\ncommand = [\"/a/x\"]\n[[exec]]\ncommand = [\"/b/x\"]")
        .unwrap_err()
        .0;
    assert!(e.contains("[[exec]]") && e.contains("\"x\""), "{e}");
    // The same name in two kinds is fine.
    assert!(parse("[[scrape]]\nurl = \"http://a\"\nname = \"a\"\n[[probe]]\nhttp = \"http://a\"\nname = \"a\"").is_ok());
}

#[test]
fn explicit_missing_file_is_an_error() {
    let e = load(Some(Path::new("/nonexistent/agent.toml")), &no_env)
        .unwrap_err()
        .0;
    assert!(e.contains("/nonexistent/agent.toml"), "{e}");
}
