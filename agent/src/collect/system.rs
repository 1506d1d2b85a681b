//! Host identity (hostname, OS description) and `/proc/uptime`.

fn uname() -> Option<libc::utsname> {
    // SAFETY: utsname is plain old data; uname fills it and returns 0 on success.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        (libc::uname(&mut u) == 0).then_some(u)
    }
}

fn field(chars: &[libc::c_char]) -> String {
    // uname guarantees NUL termination within the array; fall back to empty if not.
    let bytes: Vec<u8> = chars
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The kernel's node name; `localhost` if it cannot be read.
pub fn hostname() -> String {
    let name = uname().map(|u| field(&u.nodename)).unwrap_or_default();
    if name.is_empty() {
        "localhost".to_string()
    } else {
        name
    }
}

pub fn kernel_release() -> String {
    uname().map(|u| field(&u.release)).unwrap_or_default()
}

/// `PRETTY_NAME` from an os-release file.
pub fn parse_os_release(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l.strip_prefix("PRETTY_NAME=")?.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        Some(v.to_string()).filter(|v| !v.is_empty())
    })
}

/// e.g. `Debian GNU/Linux 12 (bookworm), kernel 6.1.0-28-amd64`.
pub fn os_description() -> String {
    let name = ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| {
            std::fs::read_to_string(p)
                .ok()
                .and_then(|t| parse_os_release(&t))
        })
        .unwrap_or_else(|| "Linux".to_string());
    let release = kernel_release();
    if release.is_empty() {
        name
    } else {
        format!("{name}, kernel {release}")
    }
}

/// Seconds since boot, the first field of `/proc/uptime`.
pub fn parse_uptime(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_pretty_name() {
        let t = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_ID=\"12\"\n";
        assert_eq!(
            parse_os_release(t).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(
            parse_os_release("PRETTY_NAME=Alpine").as_deref(),
            Some("Alpine")
        );
        assert_eq!(parse_os_release("NAME=x"), None);
    }

    #[test]
    fn uptime() {
        assert_eq!(parse_uptime("309.24 263.18\n"), Some(309.24));
        assert_eq!(parse_uptime(""), None);
    }

    #[test]
    fn hostname_is_not_empty() {
        assert!(!hostname().is_empty());
    }
}
