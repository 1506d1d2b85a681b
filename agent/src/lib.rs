//! `secumon-agent`: collects host metrics from `/proc` and `statvfs` and ships them to the
//! `secumon` PostgreSQL extension through `secumon.register_agent` and `secumon.ingest`
//! (see docs/ingest-protocol.md).
//!
//! The library exposes the agent's own write path so that the benchmark and end-to-end
//! test crates exercise exactly what the binary does:
//! [`collect::Collector`] builds a [`report::Report`], [`db::Db`] registers and ingests it,
//! [`spool::Spool`] buffers it on disk, [`daemon::run`] ties them together.

pub mod collect;
pub mod config;
pub mod daemon;
pub mod db;
pub mod enroll;
pub mod inputs;
pub mod log;
pub mod mask;
pub mod protocol;
pub mod reload;
pub mod report;
pub mod signals;
pub mod spool;
pub mod time;

/// The agent's version, as sent to `secumon.register_agent`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
