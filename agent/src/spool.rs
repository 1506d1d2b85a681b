//! The on-disk spool: every report is written here before it is shipped and leaves only
//! once `secumon.ingest` answered, so nothing is lost while the database is away or the
//! agent restarts.
//!
//! One file per report, `<20-digit sequence>.json`; the sequence never goes backwards
//! (it is max(last + 1, now in µs)), so lexical order is collection order even across
//! restarts and clock steps. Files are written atomically: a hidden `.tmp` file, fsync,
//! rename, fsync of the directory. Reports the database rejects for good are moved to
//! `rejected/` and kept. When the spool exceeds its size bound the OLDEST reports are
//! dropped and counted.

use crate::report::Report;
use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

const SUFFIX: &str = ".json";
const TMP_SUFFIX: &str = ".tmp";
const LOCK_FILE: &str = ".lock";
pub const REJECTED_DIR: &str = "rejected";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    seq: u64,
    size: u64,
}

pub struct Spool {
    dir: PathBuf,
    rejected_dir: PathBuf,
    max_bytes: u64,
    entries: VecDeque<Entry>,
    total_bytes: u64,
    last_seq: u64,
    /// Being shipped right now: never dropped under it.
    in_flight: Option<u64>,
    dropped_total: u64,
    dropped_unreported: u64,
    dir_handle: File,
    // Held for the spool's lifetime: two agents sharing a spool would ship twice.
    _lock: File,
}

/// Why the spool directory cannot be used; names the directory.
#[derive(Debug)]
pub struct SpoolError {
    pub dir: PathBuf,
    pub message: String,
}

impl fmt::Display for SpoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot use spool directory {}: {}",
            self.dir.display(),
            self.message
        )
    }
}

impl std::error::Error for SpoolError {}

fn file_name(seq: u64) -> String {
    format!("{seq:020}{SUFFIX}")
}

fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

fn now_micros() -> u64 {
    crate::time::Timestamp::now().unix_micros().max(0) as u64
}

impl Spool {
    /// Opens (creating with mode 0700 if needed) the spool at `dir`, checks that it is
    /// writable, removes half-written files a crash left behind and loads the backlog.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        let err = |what: &str, e: io::Error| SpoolError {
            dir: dir.to_path_buf(),
            message: format!("{what}: {e}"),
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| err("cannot create it", e))?;
        let rejected_dir = dir.join(REJECTED_DIR);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&rejected_dir)
            .map_err(|e| err("cannot create rejected/", e))?;

        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(dir.join(LOCK_FILE))
            .map_err(|e| err("cannot write to it", e))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(SpoolError {
                dir: dir.to_path_buf(),
                message: "it is in use by another secumon-agent process".into(),
            });
        }
        let probe = dir.join(format!(".probe{TMP_SUFFIX}"));
        File::create(&probe)
            .and_then(|mut f| f.write_all(b"probe"))
            .map_err(|e| err("cannot write to it", e))?;
        let _ = fs::remove_file(&probe);
        let dir_handle = File::open(dir).map_err(|e| err("cannot open it", e))?;

        let mut entries = Vec::new();
        let mut last_seq = 0;
        for item in fs::read_dir(dir)
            .map_err(|e| err("cannot list it", e))?
            .flatten()
        {
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(TMP_SUFFIX) {
                // A write that never reached its rename: the report was never spooled.
                let _ = fs::remove_file(item.path());
            } else if let Some(seq) = parse_name(name) {
                let size = item.metadata().map(|m| m.len()).unwrap_or(0);
                entries.push(Entry { seq, size });
                last_seq = last_seq.max(seq);
            }
        }
        if let Ok(rejected) = fs::read_dir(&rejected_dir) {
            for item in rejected.flatten() {
                if let Some(seq) = item.file_name().to_str().and_then(parse_name) {
                    last_seq = last_seq.max(seq);
                }
            }
        }
        entries.sort_by_key(|e| e.seq);
        let total_bytes = entries.iter().map(|e| e.size).sum();
        Ok(Spool {
            dir: dir.to_path_buf(),
            rejected_dir,
            max_bytes,
            entries: entries.into(),
            total_bytes,
            last_seq,
            in_flight: None,
            dropped_total: 0,
            dropped_unreported: 0,
            dir_handle,
            _lock: lock,
        })
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(file_name(seq))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn rejected_dir(&self) -> &Path {
        &self.rejected_dir
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn bytes(&self) -> u64 {
        self.total_bytes
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Reports dropped because the spool was full, since it was opened.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }

    /// Drops not yet reported by the caller (for the "while disconnected" log line).
    pub fn take_dropped_unreported(&mut self) -> u64 {
        std::mem::take(&mut self.dropped_unreported)
    }

    /// Sequence numbers in order, oldest first.
    pub fn sequences(&self) -> Vec<u64> {
        self.entries.iter().map(|e| e.seq).collect()
    }

    /// Appends a report; returns how many old reports had to be dropped to stay within
    /// `max_bytes` (the newest report is always kept).
    pub fn push(&mut self, data: &[u8]) -> io::Result<u64> {
        let size = data.len() as u64;
        let dropped = self.make_room(size)?;
        self.dropped_unreported += dropped;

        let seq = (self.last_seq + 1).max(now_micros());
        let tmp = self.dir.join(format!(".{}{TMP_SUFFIX}", file_name(seq)));
        let write = || -> io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            fs::rename(&tmp, self.path(seq))?;
            // Make the rename itself durable.
            self.dir_handle.sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        self.last_seq = seq;
        self.entries.push_back(Entry { seq, size });
        self.total_bytes += size;
        Ok(dropped)
    }

    /// Drops the oldest reports (never the one in flight) until `incoming` more bytes fit
    /// within `max_bytes`; returns how many went. They count in [`dropped_total`](Self::dropped_total).
    fn make_room(&mut self, incoming: u64) -> io::Result<u64> {
        let mut dropped = 0;
        while self.total_bytes + incoming > self.max_bytes {
            let Some(i) = self
                .entries
                .iter()
                .position(|e| Some(e.seq) != self.in_flight)
            else {
                break;
            };
            let Some(e) = self.entries.get(i).copied() else {
                break;
            };
            // Forget the entry only once its file is gone, so a failed unlink leaves the
            // bookkeeping matching the disk.
            remove_if_exists(&self.path(e.seq))?;
            self.entries.remove(i);
            self.total_bytes -= e.size;
            self.dropped_total += 1;
            dropped += 1;
        }
        Ok(dropped)
    }

    /// Changes the size bound (configuration reload). A bound below what is spooled
    /// applies the usual policy at once — the oldest reports go, counted — rather than at
    /// the next push; returns how many were dropped, for the caller to log. Unlike drops
    /// on push they are not added to the "while disconnected" count: the caller logs them
    /// right away.
    pub fn set_max_bytes(&mut self, max_bytes: u64) -> io::Result<u64> {
        self.max_bytes = max_bytes;
        self.make_room(0)
    }

    pub fn push_report(&mut self, report: &Report) -> io::Result<u64> {
        self.push(report.to_json().as_bytes())
    }

    /// The oldest report's sequence and bytes, marked in flight until
    /// [`complete`](Self::complete), [`reject`](Self::reject) or [`release`](Self::release).
    /// Entries whose file disappeared are forgotten.
    pub fn checkout_oldest(&mut self) -> io::Result<Option<(u64, Vec<u8>)>> {
        while let Some(&e) = self.entries.front() {
            match fs::read(self.path(e.seq)) {
                Ok(data) => {
                    self.in_flight = Some(e.seq);
                    return Ok(Some((e.seq, data)));
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    self.entries.pop_front();
                    self.total_bytes -= e.size;
                }
                Err(err) => return Err(err),
            }
        }
        Ok(None)
    }

    fn forget(&mut self, seq: u64) -> Option<Entry> {
        if self.in_flight == Some(seq) {
            self.in_flight = None;
        }
        let i = self.entries.iter().position(|e| e.seq == seq)?;
        let e = self.entries.remove(i)?;
        self.total_bytes -= e.size;
        Some(e)
    }

    /// The report reached the database: delete it.
    pub fn complete(&mut self, seq: u64) -> io::Result<()> {
        self.forget(seq);
        remove_if_exists(&self.path(seq))
    }

    /// Shipping failed for a reason that may pass: keep it for the next attempt.
    pub fn release(&mut self, seq: u64) {
        if self.in_flight == Some(seq) {
            self.in_flight = None;
        }
    }

    /// The database refused the report for good: move it to `rejected/`, keep it.
    pub fn reject(&mut self, seq: u64) -> io::Result<PathBuf> {
        let target = self.rejected_dir.join(file_name(seq));
        fs::rename(self.path(seq), &target)?;
        self.forget(seq);
        let _ = self.dir_handle.sync_all();
        Ok(target)
    }
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A scratch directory removed on drop.
    pub(crate) struct TempDir(pub PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "secumon-agent-test-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = fs::remove_dir_all(&p);
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn creates_the_directory_private() {
        use std::os::unix::fs::PermissionsExt;
        let t = TempDir::new("mode");
        let dir = t.0.join("a/spool");
        Spool::open(&dir, 1 << 20).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert!(dir.join(REJECTED_DIR).is_dir());
    }

    #[test]
    fn unusable_directory_error_names_it() {
        let e = Spool::open(Path::new("/proc/x"), 1 << 20).err().unwrap();
        assert!(
            e.to_string()
                .starts_with("cannot use spool directory /proc/x:"),
            "{e}"
        );
    }

    #[test]
    fn reports_come_back_oldest_first_and_survive_a_restart() {
        let t = TempDir::new("order");
        {
            let mut s = Spool::open(&t.0, 1 << 20).unwrap();
            for i in 0..5 {
                s.push(format!("report {i}").as_bytes()).unwrap();
            }
            let seqs = s.sequences();
            assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        }
        let mut s = Spool::open(&t.0, 1 << 20).unwrap();
        assert_eq!(s.len(), 5);
        let old = s.sequences();
        for i in 0..5 {
            let (seq, data) = s.checkout_oldest().unwrap().unwrap();
            assert_eq!(data, format!("report {i}").as_bytes());
            s.complete(seq).unwrap();
        }
        assert!(s.checkout_oldest().unwrap().is_none());
        assert_eq!(s.bytes(), 0);
        drop(s);
        // New reports after a restart sort after everything seen before.
        let mut s = Spool::open(&t.0, 1 << 20).unwrap();
        s.push(b"later").unwrap();
        assert!(s.sequences()[0] > old[4]);
    }

    #[test]
    fn lexical_file_order_is_collection_order() {
        let t = TempDir::new("lex");
        let mut s = Spool::open(&t.0, 1 << 20).unwrap();
        for i in 0..20 {
            s.push(format!("{i}").as_bytes()).unwrap();
        }
        let files: Vec<String> = names(&t.0)
            .into_iter()
            .filter(|n| n.ends_with(SUFFIX))
            .collect();
        let contents: Vec<String> = files
            .iter()
            .map(|f| fs::read_to_string(t.0.join(f)).unwrap())
            .collect();
        assert_eq!(contents, (0..20).map(|i| i.to_string()).collect::<Vec<_>>());
    }

    #[test]
    fn full_spool_drops_the_oldest_and_counts_them() {
        let t = TempDir::new("bound");
        let mut s = Spool::open(&t.0, 250).unwrap();
        let mut dropped = 0;
        for i in 0..10 {
            dropped += s.push(format!("{i:0100}").as_bytes()).unwrap();
        }
        assert_eq!(s.len(), 2);
        assert!(s.bytes() <= 250);
        assert_eq!(dropped, 8);
        assert_eq!(s.dropped_total(), 8);
        assert_eq!(s.take_dropped_unreported(), 8);
        assert_eq!(s.take_dropped_unreported(), 0);
        let (_, data) = s.checkout_oldest().unwrap().unwrap();
        assert_eq!(
            data,
            format!("{:0100}", 8).as_bytes(),
            "the newest two remain"
        );
        assert_eq!(
            names(&t.0).iter().filter(|n| n.ends_with(SUFFIX)).count(),
            2
        );
    }

    #[test]
    fn the_report_being_shipped_is_not_dropped_under_the_shipper() {
        let t = TempDir::new("inflight");
        let mut s = Spool::open(&t.0, 250).unwrap();
        s.push(&[b'a'; 100]).unwrap();
        s.push(&[b'b'; 100]).unwrap();
        let (seq, _) = s.checkout_oldest().unwrap().unwrap();
        assert_eq!(s.push(&[b'c'; 100]).unwrap(), 1);
        // 'a' survived because it was in flight; 'b' went.
        assert_eq!(s.len(), 2);
        s.complete(seq).unwrap();
        let (_, data) = s.checkout_oldest().unwrap().unwrap();
        assert_eq!(data, vec![b'c'; 100]);
    }

    #[test]
    fn half_written_files_from_a_crash_are_discarded() {
        let t = TempDir::new("atomic");
        {
            let mut s = Spool::open(&t.0, 1 << 20).unwrap();
            s.push(b"complete").unwrap();
            // What a crash between write and rename leaves behind:
            fs::write(
                t.0.join(format!(
                    ".{}{TMP_SUFFIX}",
                    file_name(99_999_999_999_999_999)
                )),
                b"{\"half",
            )
            .unwrap();
            // No temporary file remains after a normal push.
            assert!(
                names(&t.0)
                    .iter()
                    .filter(|n| n.ends_with(TMP_SUFFIX))
                    .count()
                    == 1
            );
        }
        let mut s = Spool::open(&t.0, 1 << 20).unwrap();
        assert_eq!(s.len(), 1);
        assert!(names(&t.0).iter().all(|n| !n.ends_with(TMP_SUFFIX)));
        assert_eq!(s.checkout_oldest().unwrap().unwrap().1, b"complete");
    }

    #[test]
    fn rejected_reports_are_kept_aside() {
        let t = TempDir::new("reject");
        let mut s = Spool::open(&t.0, 1 << 20).unwrap();
        s.push(b"bad").unwrap();
        s.push(b"good").unwrap();
        let (seq, _) = s.checkout_oldest().unwrap().unwrap();
        let moved = s.reject(seq).unwrap();
        assert_eq!(fs::read(&moved).unwrap(), b"bad");
        assert!(moved.starts_with(t.0.join(REJECTED_DIR)));
        assert_eq!(s.len(), 1);
        assert_eq!(s.checkout_oldest().unwrap().unwrap().1, b"good");
        drop(s);
        // Rejected files are not replayed, and new sequences never collide with them.
        let mut s = Spool::open(&t.0, 1 << 20).unwrap();
        assert_eq!(s.len(), 1);
        s.push(b"new").unwrap();
        assert!(s.sequences().iter().all(|&q| q > seq));
    }

    #[test]
    fn lowering_the_bound_drops_the_oldest_at_once_and_counts_them() {
        let t = TempDir::new("shrink");
        let mut s = Spool::open(&t.0, 1 << 20).unwrap();
        for i in 0..10 {
            s.push(format!("{i:0100}").as_bytes()).unwrap();
        }
        // Raising (or keeping) the bound drops nothing.
        assert_eq!(s.set_max_bytes(2 << 20).unwrap(), 0);
        assert_eq!(s.len(), 10);
        // The report being shipped stays, like on push; the oldest others go.
        let (in_flight, _) = s.checkout_oldest().unwrap().unwrap();
        assert_eq!(s.set_max_bytes(350).unwrap(), 7);
        assert_eq!(s.max_bytes(), 350);
        assert_eq!(s.len(), 3);
        assert!(s.bytes() <= 350);
        assert_eq!(s.dropped_total(), 7);
        assert_eq!(
            s.take_dropped_unreported(),
            0,
            "logged by the caller already"
        );
        assert_eq!(
            names(&t.0).iter().filter(|n| n.ends_with(SUFFIX)).count(),
            3
        );
        s.complete(in_flight).unwrap();
        let (_, data) = s.checkout_oldest().unwrap().unwrap();
        assert_eq!(data, format!("{:0100}", 8).as_bytes(), "the newest remain");
        // Later pushes keep to the new bound.
        assert_eq!(s.push(format!("{:0100}", 10).as_bytes()).unwrap(), 0);
        assert_eq!(s.push(format!("{:0100}", 11).as_bytes()).unwrap(), 1);
        assert!(s.bytes() <= 350);
    }

    #[test]
    fn released_reports_are_retried() {
        let t = TempDir::new("release");
        let mut s = Spool::open(&t.0, 1 << 20).unwrap();
        s.push(b"x").unwrap();
        let (seq, _) = s.checkout_oldest().unwrap().unwrap();
        s.release(seq);
        assert_eq!(s.checkout_oldest().unwrap().unwrap().0, seq);
    }

    #[test]
    fn a_second_agent_cannot_share_the_spool() {
        let t = TempDir::new("lock");
        let _first = Spool::open(&t.0, 1 << 20).unwrap();
        let e = Spool::open(&t.0, 1 << 20).err().unwrap();
        assert!(e.to_string().contains("in use"), "{e}");
    }

    #[test]
    fn unrelated_files_are_ignored() {
        let t = TempDir::new("ignore");
        fs::create_dir_all(&t.0).unwrap();
        fs::write(t.0.join("README"), b"x").unwrap();
        fs::write(t.0.join("123.json"), b"x").unwrap();
        assert_eq!(Spool::open(&t.0, 1 << 20).unwrap().len(), 0);
    }
}
