//! Mounted filesystems (`/proc/self/mounts` + `statvfs`) and their IO counters
//! (`/proc/diskstats`).

use crate::config::{DiskConfig, PSEUDO_FS_TYPES};
use crate::report::{ratio_percent, Disk};
use std::collections::HashSet;
use std::ffi::CString;
use std::os::unix::fs::MetadataExt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub device: String,
    pub mountpoint: String,
    pub fs_type: String,
}

/// Parses `/proc/self/mounts` (fstab format; spaces in paths are octal escapes).
pub fn parse_mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let mut it = line.split_whitespace();
            Some(Mount {
                device: unescape(it.next()?),
                mountpoint: unescape(it.next()?),
                fs_type: it.next()?.to_string(),
            })
        })
        .collect()
}

/// Decodes the kernel's `\040`-style octal escapes.
fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = (oct[0] - b'0') as u32 * 64
                    + (oct[1] - b'0') as u32 * 8
                    + (oct[2] - b'0') as u32;
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Keeps real filesystems: drops pseudo and excluded types (unless the mountpoint is
/// explicitly included) and bind mounts of an already seen device.
pub fn select_mounts(mounts: Vec<Mount>, cfg: &DiskConfig) -> Vec<Mount> {
    let mut seen_devices = HashSet::new();
    let mut seen_mountpoints = HashSet::new();
    let mut out = Vec::new();
    for m in mounts {
        let included = cfg.include_mountpoints.contains(&m.mountpoint);
        if !included {
            let pseudo = PSEUDO_FS_TYPES.contains(&m.fs_type.as_str())
                || m.fs_type.starts_with("cgroup")
                || cfg.exclude_fs_types.contains(&m.fs_type);
            if pseudo || !seen_devices.insert(m.device.clone()) {
                continue;
            }
        }
        if seen_mountpoints.insert(m.mountpoint.clone()) {
            out.push(m);
        }
    }
    out
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskIo {
    pub major: u32,
    pub minor: u32,
    pub read_ops: u64,
    pub read_bytes: u64,
    pub write_ops: u64,
    pub write_bytes: u64,
}

/// Parses `/proc/diskstats` into (device name, counters); sectors are always 512 bytes.
pub fn parse_diskstats(text: &str) -> Vec<(String, DiskIo)> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                return None;
            }
            let n = |i: usize| f[i].parse::<u64>().ok();
            Some((
                f[2].to_string(),
                DiskIo {
                    major: f[0].parse().ok()?,
                    minor: f[1].parse().ok()?,
                    read_ops: n(3)?,
                    read_bytes: n(5)?.saturating_mul(512),
                    write_ops: n(7)?,
                    write_bytes: n(9)?.saturating_mul(512),
                },
            ))
        })
        .collect()
}

/// Finds the diskstats entry of a mount: by the device node's name (following symlinks
/// such as /dev/mapper/* → dm-N), else by the major:minor of the mounted filesystem.
fn find_io<'a>(m: &Mount, stats: &'a [(String, DiskIo)]) -> Option<&'a DiskIo> {
    if m.device.starts_with("/dev/") {
        let resolved = std::fs::canonicalize(&m.device).ok();
        let name = resolved
            .as_ref()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .or_else(|| m.device.rsplit('/').next());
        if let Some(name) = name {
            if let Some((_, io)) = stats.iter().find(|(n, _)| n == name) {
                return Some(io);
            }
        }
    }
    let dev = std::fs::metadata(&m.mountpoint).ok()?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    stats
        .iter()
        .find(|(_, io)| io.major == major && io.minor == minor)
        .map(|(_, io)| io)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsStats {
    pub total_bytes: u64,
    pub free_bytes: u64,
    pub avail_bytes: u64,
    pub inodes_total: u64,
    pub inodes_free: u64,
}

pub fn statvfs(path: &str) -> Option<FsStats> {
    let c = CString::new(path).ok()?;
    // SAFETY: c is a valid NUL-terminated path; st is written by statvfs on success.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return None;
        }
        st
    };
    let frsize = if st.f_frsize > 0 {
        st.f_frsize as u64
    } else {
        st.f_bsize as u64
    };
    Some(FsStats {
        total_bytes: (st.f_blocks as u64).saturating_mul(frsize),
        free_bytes: (st.f_bfree as u64).saturating_mul(frsize),
        avail_bytes: (st.f_bavail as u64).saturating_mul(frsize),
        inodes_total: st.f_files as u64,
        inodes_free: st.f_ffree as u64,
    })
}

/// Builds the report entry of one filesystem from its sizes and IO counters.
pub fn disk_entry(m: &Mount, fs: &FsStats, io: Option<&DiskIo>) -> Disk {
    let used = fs.total_bytes.saturating_sub(fs.free_bytes);
    let inodes_used = fs.inodes_total.saturating_sub(fs.inodes_free);
    // Filesystems without a fixed inode table (btrfs) report 0 inodes: unknown, not full.
    let has_inodes = fs.inodes_total > 0;
    Disk {
        device: m.device.clone(),
        mountpoint: m.mountpoint.clone(),
        fs_type: m.fs_type.clone(),
        total_bytes: fs.total_bytes,
        used_bytes: used,
        free_bytes: fs.avail_bytes,
        usage_percent: ratio_percent(used as f64, (used + fs.avail_bytes) as f64),
        inodes_total: has_inodes.then_some(fs.inodes_total),
        inodes_used: has_inodes.then_some(inodes_used),
        inodes_usage_percent: if has_inodes {
            ratio_percent(inodes_used as f64, fs.inodes_total as f64)
        } else {
            None
        },
        read_bytes: io.map(|i| i.read_bytes),
        write_bytes: io.map(|i| i.write_bytes),
        read_ops: io.map(|i| i.read_ops),
        write_ops: io.map(|i| i.write_ops),
    }
}

/// Every real mounted filesystem with its sizes and IO counters.
pub fn collect(cfg: &DiskConfig, mounts_text: &str, diskstats_text: &str) -> Vec<Disk> {
    let stats = parse_diskstats(diskstats_text);
    let explicit = |m: &Mount| cfg.include_mountpoints.contains(&m.mountpoint);
    select_mounts(parse_mounts(mounts_text), cfg)
        .iter()
        .filter_map(|m| {
            let fs = statvfs(&m.mountpoint)?;
            // Zero-sized filesystems are pseudo ones we do not know by name.
            if fs.total_bytes == 0 && !explicit(m) {
                return None;
            }
            Some(disk_entry(m, &fs, find_io(m, &stats)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS: &str = r"proc /proc proc rw,relatime 0 0
sysfs /sys sysfs rw,relatime 0 0
devtmpfs /dev devtmpfs rw,relatime,size=12334492k 0 0
tmpfs /dev/shm tmpfs rw,relatime 0 0
/dev/vda / ext4 rw,relatime,discard 0 0
/dev/vdb1 /srv/my\040data xfs rw 0 0
/dev/vdb1 /var/lib/docker xfs rw 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
overlay /var/lib/docker/overlay2/x/merged overlay rw 0 0
server:/export /mnt/nfs nfs4 rw 0 0
";

    #[test]
    fn parses_mounts_with_escapes() {
        let m = parse_mounts(MOUNTS);
        assert_eq!(m.len(), 11);
        assert_eq!(m[5].mountpoint, "/srv/my data");
        assert_eq!(
            m[4],
            Mount {
                device: "/dev/vda".into(),
                mountpoint: "/".into(),
                fs_type: "ext4".into()
            }
        );
    }

    #[test]
    fn selects_real_filesystems_deduplicated_by_device() {
        let got: Vec<String> = select_mounts(parse_mounts(MOUNTS), &DiskConfig::default())
            .into_iter()
            .map(|m| m.mountpoint)
            .collect();
        assert_eq!(got, vec!["/", "/srv/my data", "/mnt/nfs"]);
    }

    #[test]
    fn configuration_excludes_types_and_includes_mountpoints() {
        let cfg = DiskConfig {
            exclude_fs_types: vec!["nfs4".into()],
            include_mountpoints: vec![
                "/dev/shm".into(),
                "/var/lib/docker/overlay2/x/merged".into(),
            ],
        };
        let got: Vec<String> = select_mounts(parse_mounts(MOUNTS), &cfg)
            .into_iter()
            .map(|m| m.mountpoint)
            .collect();
        assert_eq!(
            got,
            vec![
                "/dev/shm",
                "/",
                "/srv/my data",
                "/var/lib/docker/overlay2/x/merged"
            ]
        );
    }

    #[test]
    fn parses_diskstats_in_bytes() {
        let t = " 254       0 vda 30758 6065 2619962 7780 12622 37042 3824416 11748 0 4636 20221 10249 40 1748584 669 724 22
   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0
";
        let s = parse_diskstats(t);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].0, "vda");
        assert_eq!(
            s[0].1,
            DiskIo {
                major: 254,
                minor: 0,
                read_ops: 30758,
                read_bytes: 2619962 * 512,
                write_ops: 12622,
                write_bytes: 3824416 * 512
            }
        );
    }

    #[test]
    fn disk_entry_computes_df_style_usage() {
        let m = Mount {
            device: "/dev/vda".into(),
            mountpoint: "/".into(),
            fs_type: "ext4".into(),
        };
        // 100 total, 40 free of which 30 available to users (10 reserved): used 60.
        let fs = FsStats {
            total_bytes: 100,
            free_bytes: 40,
            avail_bytes: 30,
            inodes_total: 10,
            inodes_free: 7,
        };
        let d = disk_entry(&m, &fs, None);
        assert_eq!((d.used_bytes, d.free_bytes), (60, 30));
        assert_eq!(d.usage_percent, Some(66.67));
        assert_eq!(d.inodes_used, Some(3));
        assert_eq!(d.inodes_usage_percent, Some(30.0));
        assert_eq!(d.read_bytes, None);
        let btrfs = disk_entry(
            &m,
            &FsStats {
                inodes_total: 0,
                ..fs
            },
            None,
        );
        assert_eq!(btrfs.inodes_usage_percent, None);
    }

    #[test]
    fn statvfs_of_root_is_plausible() {
        let fs = statvfs("/").unwrap();
        assert!(fs.total_bytes > 0 && fs.avail_bytes <= fs.total_bytes);
        assert!(statvfs("/nonexistent/path").is_none());
    }
}
