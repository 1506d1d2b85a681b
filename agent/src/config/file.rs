//! The configuration file's schema: what TOML may say (unknown keys are errors).

use super::units::{IntervalSetting, SizeSetting};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    pub(super) agent_id: Option<String>,
    pub(super) database: Option<String>,
    pub(super) enroll_token: Option<String>,
    pub(super) interval: Option<IntervalSetting>,
    pub(super) spool_dir: Option<String>,
    pub(super) spool_max_bytes: Option<SizeSetting>,
    pub(super) top_processes: Option<i64>,
    pub(super) labels: Option<BTreeMap<String, String>>,
    pub(super) disks: Option<DisksSection>,
    pub(super) network: Option<NetworkSection>,
    pub(super) log_level: Option<String>,
    pub(super) scrape: Option<Vec<toml::Spanned<ScrapeSection>>>,
    pub(super) exec: Option<Vec<toml::Spanned<ExecSection>>>,
    pub(super) probe: Option<Vec<toml::Spanned<ProbeSection>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ScrapeSection {
    pub(super) url: String,
    pub(super) name: Option<String>,
    pub(super) labels: Option<BTreeMap<String, String>>,
    pub(super) interval: Option<IntervalSetting>,
    pub(super) timeout: Option<IntervalSetting>,
    pub(super) max_bytes: Option<SizeSetting>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExecSection {
    pub(super) command: Vec<String>,
    pub(super) format: Option<String>,
    pub(super) name: Option<String>,
    pub(super) labels: Option<BTreeMap<String, String>>,
    pub(super) interval: Option<IntervalSetting>,
    pub(super) timeout: Option<IntervalSetting>,
    pub(super) max_bytes: Option<SizeSetting>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ProbeSection {
    pub(super) http: Option<String>,
    pub(super) tcp: Option<String>,
    pub(super) icmp: Option<String>,
    pub(super) expect_status: Option<Vec<i64>>,
    pub(super) expect_body: Option<String>,
    pub(super) tls_insecure: Option<bool>,
    pub(super) count: Option<i64>,
    pub(super) name: Option<String>,
    pub(super) labels: Option<BTreeMap<String, String>>,
    pub(super) interval: Option<IntervalSetting>,
    pub(super) timeout: Option<IntervalSetting>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct DisksSection {
    pub(super) exclude_fs_types: Option<Vec<String>>,
    pub(super) include_mountpoints: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct NetworkSection {
    pub(super) include_interfaces: Option<Vec<String>>,
    pub(super) exclude_interfaces: Option<Vec<String>>,
    pub(super) include_loopback: Option<bool>,
}
