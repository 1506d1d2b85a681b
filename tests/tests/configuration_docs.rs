//! docs/configuration.md lists every setting: each `secumon.*` GUC the extension registers (as
//! `pg_settings` of a cluster with the library preloaded shows them) and each key of the agent's
//! config file (as the agent binary itself names them when it meets an unknown key). A setting
//! added without a row in the tables fails here, naming it.

use std::path::Path;

use secumon_e2e::*;

fn configuration_md() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("expected to read {}: {e}", path.display()))
}

/// The part of the document from heading `## title` to the next `## ` heading.
fn section<'a>(doc: &'a str, title: &str) -> &'a str {
    let heading = format!("\n## {title}\n");
    let start = doc
        .find(&heading)
        .unwrap_or_else(|| panic!("expected a section \"## {title}\" in docs/configuration.md"))
        + heading.len();
    let end = doc[start..].find("\n## ").map_or(doc.len(), |i| start + i);
    &doc[start..end]
}

/// The first cell of the table row that lists `` `name` `` there, if any.
fn table_row<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let quoted = format!("`{name}`");
    text.lines().find(|line| {
        line.starts_with('|')
            && line
                .split('|')
                .nth(1)
                .is_some_and(|first_cell| first_cell.contains(&quoted))
    })
}

#[test]
fn every_extension_setting_has_a_row_in_configuration_md() {
    let doc = configuration_md();
    let settings = section(&doc, "Extension settings");
    let cluster = Cluster::start();
    let names: Vec<String> = cluster
        .psql("SELECT name FROM pg_settings WHERE name LIKE 'secumon.%' ORDER BY name")
        .into_iter()
        .filter_map(|row| row.into_iter().next().flatten())
        .collect();
    assert!(
        names.len() >= 10,
        "expected the preloaded library to register its settings, pg_settings has {names:?}"
    );
    let missing: Vec<&String> = names
        .iter()
        .filter(|name| table_row(settings, name).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "expected a row for every secumon.* setting in the tables of \"## Extension settings\" in \
         docs/configuration.md (first column `name`); missing: {missing:?}"
    );
}

/// The keys the agent expects where `toml` has the unknown key `zzz_not_a_key`, from its
/// one-line error ("unknown field `zzz_not_a_key`, expected one of `a`, `b`, …").
fn keys_named_by_the_agent(toml: &str) -> Vec<String> {
    let agent = Agent::with_raw_config(toml);
    let output = agent.run(&["--dry-run"]);
    let line = assert_one_line_error(&output, &["zzz_not_a_key"], "an unknown config key");
    assert_eq!(
        output.status.code(),
        Some(2),
        "expected exit status 2 for an unknown key"
    );
    let expected = line
        .split_once("expected")
        .unwrap_or_else(|| panic!("expected the error to list the known keys: {line}"))
        .1;
    let keys: Vec<String> = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    assert!(!keys.is_empty(), "expected known keys in: {line}");
    keys
}

#[test]
fn every_agent_key_has_a_row_in_configuration_md_and_a_line_in_the_example() {
    let doc = configuration_md();
    let agent_section = section(&doc, "Agent");
    let example_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/agent.example.toml");
    let example =
        std::fs::read_to_string(&example_path).expect("expected agent/agent.example.toml");
    let mut problems = Vec::new();

    let top = keys_named_by_the_agent("zzz_not_a_key = 1\n");
    for key in &top {
        // Inputs: arrays of tables, without environment variables (docs/agent-inputs.md).
        if ["scrape", "exec", "probe"].contains(&key.as_str()) {
            let table = format!("[[{key}]]");
            if table_row(agent_section, &table).is_none() {
                problems.push(format!("no row for `{table}` in docs/configuration.md"));
            }
            if !example.contains(&table) {
                problems.push(format!("no {table} in agent.example.toml"));
            }
            for field in keys_named_by_the_agent(&format!("{table}\nzzz_not_a_key = 1\n")) {
                if !agent_section.lines().any(|l| {
                    l.starts_with('|') && l.contains(&table) && l.contains(&format!("`{field}`"))
                }) {
                    problems.push(format!(
                        "no row naming `{table}` and `{field}` in docs/configuration.md"
                    ));
                }
                if !example.lines().any(|l| {
                    l.trim_start_matches(['#', ' '])
                        .starts_with(&format!("{field} = "))
                }) {
                    problems.push(format!("no `{field} = ` line in agent.example.toml"));
                }
            }
            continue;
        }
        if ["labels", "disks", "network"].contains(&key.as_str()) {
            let table = format!("[{key}]");
            if table_row(agent_section, &table).is_none() {
                problems.push(format!("no row for `{table}` in docs/configuration.md"));
            }
            if !example.contains(&table) {
                problems.push(format!("no {table} in agent.example.toml"));
            }
            continue;
        }
        match table_row(agent_section, key) {
            None => problems.push(format!("no row for `{key}` in docs/configuration.md")),
            Some(row) => {
                let variable = format!("SECUMON_{}", key.to_uppercase());
                if !row.contains(&variable) {
                    problems.push(format!("the row of `{key}` does not name {variable}"));
                }
            }
        }
        if !example.lines().any(|l| {
            l.trim_start_matches(['#', ' '])
                .starts_with(&format!("{key} = "))
        }) {
            problems.push(format!("no `{key} = ` line in agent.example.toml"));
        }
    }
    for table in ["disks", "network"] {
        for key in keys_named_by_the_agent(&format!("[{table}]\nzzz_not_a_key = 1\n")) {
            if !agent_section.lines().any(|l| {
                l.starts_with('|')
                    && l.contains(&format!("[{table}]"))
                    && l.contains(&format!("`{key}`"))
            }) {
                problems.push(format!(
                    "no row naming `[{table}]` and `{key}` in docs/configuration.md"
                ));
            }
            if !example
                .lines()
                .any(|l| l.trim_start_matches('#').starts_with(&format!("{key} = ")))
            {
                problems.push(format!(
                    "no `{key} = ` line under [{table}] in agent.example.toml"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "expected every agent config key documented (agent keys: {top:?}):\n  {}",
        problems.join("\n  ")
    );
}
