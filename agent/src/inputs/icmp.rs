//! ICMP echo ("ping") without a setuid helper: an unprivileged ICMP datagram socket where
//! the kernel's `net.ipv4.ping_group_range` admits the agent's group, else a raw socket
//! (root or CAP_NET_RAW), else a clear message saying which of the two to grant.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// Most echo requests one probe sends.
pub const MAX_COUNT: u32 = 100;
/// Bytes after the 8-byte ICMP header.
const PAYLOAD: usize = 24;
/// Replies are small; a raw IPv4 socket adds the IP header (at most 60 bytes).
const RECV_BUF: usize = 512;

/// What a ping run saw.
#[derive(Debug, Clone, PartialEq)]
pub struct PingStats {
    pub sent: u32,
    pub received: u32,
    /// Mean round trip of the replies; None without replies.
    pub rtt_mean: Option<Duration>,
}

impl PingStats {
    pub fn loss_percent(&self) -> f64 {
        if self.sent == 0 {
            100.0
        } else {
            100.0 * f64::from(self.sent - self.received) / f64::from(self.sent)
        }
    }
}

/// Why no ping could be sent at all.
#[derive(Debug, Clone, PartialEq)]
pub enum PingError {
    /// Neither an ICMP datagram socket nor a raw socket is allowed.
    NotPermitted(String),
    /// Anything else (name resolution, a socket error).
    Other(String),
}

impl std::fmt::Display for PingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PingError::NotPermitted(s) | PingError::Other(s) => f.write_str(s),
        }
    }
}

/// Which kind of socket carried the echo requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The kernel sets the identifier and hands back only this socket's replies.
    Datagram,
    /// Every ICMP packet arrives (IPv4: with its IP header); replies are matched by id.
    Raw,
}

static DENIED_LOGGED: AtomicBool = AtomicBool::new(false);
static NEXT_ID: AtomicU16 = AtomicU16::new(0);

/// Sends `count` echo requests to `host` and waits for replies, all within `timeout`.
pub fn ping(host: &str, count: u32, timeout: Duration) -> Result<PingStats, PingError> {
    let start = Instant::now();
    let deadline = start + timeout;
    let count = count.clamp(1, MAX_COUNT);
    let addrs = super::http::resolve_within(host, 0, timeout).map_err(PingError::Other)?;
    let ip = addrs
        .iter()
        .map(SocketAddr::ip)
        .find(IpAddr::is_ipv4)
        .or_else(|| addrs.first().map(SocketAddr::ip))
        .ok_or_else(|| PingError::Other(format!("resolve {host}: no address")))?;
    let (fd, kind) = match open(ip) {
        Ok(pair) => pair,
        Err(PingError::NotPermitted(detail)) => {
            let message = format!(
                "ICMP probe {host}: the kernel refuses unprivileged ICMP \
                 (net.ipv4.ping_group_range = {}) and the agent lacks CAP_NET_RAW ({detail}); \
                 allow the agent's group in net.ipv4.ping_group_range or grant CAP_NET_RAW",
                ping_group_range()
            );
            if !DENIED_LOGGED.swap(true, Ordering::Relaxed) {
                crate::log_error!("{message}");
            }
            return Err(PingError::NotPermitted(message));
        }
        Err(e) => return Err(e),
    };
    connect(&fd, ip).map_err(|e| PingError::Other(format!("ICMP connect {ip}: {e}")))?;

    let v6 = ip.is_ipv6();
    let id = (std::process::id() as u16).wrapping_add(NEXT_ID.fetch_add(1, Ordering::Relaxed));
    // Spread the requests over the first half of the timeout (at most one a second, as
    // ping does), leaving the rest for the last replies.
    let spacing = (timeout / (2 * count)).min(Duration::from_secs(1));
    let mut sent_at: Vec<Option<Instant>> = Vec::with_capacity(count as usize);
    let mut answered = vec![false; count as usize];
    let mut received = 0u32;
    let mut rtt_total = Duration::ZERO;
    let mut next_send = start;
    let mut buf = [0u8; RECV_BUF];
    loop {
        let now = Instant::now();
        if sent_at.len() < count as usize && now >= next_send {
            let seq = sent_at.len() as u16;
            let packet = echo_request(v6, id, seq);
            // SAFETY: fd is an open socket; packet is a live buffer of packet.len() bytes.
            let n = unsafe {
                libc::send(
                    fd.as_raw_fd(),
                    packet.as_ptr().cast(),
                    packet.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                // Host unreachable and the like: counted as a lost request.
                crate::log_debug!("ICMP probe {host}: send: {}", io::Error::last_os_error());
            }
            sent_at.push(Some(Instant::now()));
            next_send += spacing;
            continue;
        }
        if received as usize == sent_at.len() && sent_at.len() == count as usize {
            break;
        }
        let Some(left) = deadline
            .checked_duration_since(now)
            .filter(|d| !d.is_zero())
        else {
            break;
        };
        let wait = if sent_at.len() < count as usize {
            left.min(next_send.saturating_duration_since(now))
        } else {
            left
        };
        if !readable(&fd, wait) {
            continue;
        }
        // SAFETY: fd is an open socket; buf is a live, writable buffer of buf.len() bytes.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        let Ok(n) = usize::try_from(n) else {
            // EAGAIN, or an ICMP error queued for the socket (unreachable): nothing to count.
            continue;
        };
        if let Some(seq) = parse_reply(&buf[..n], v6, kind, id) {
            let i = usize::from(seq);
            if i < sent_at.len() && !answered[i] {
                if let Some(at) = sent_at[i] {
                    answered[i] = true;
                    received += 1;
                    rtt_total += at.elapsed();
                }
            }
        }
    }
    let sent = sent_at.len() as u32;
    Ok(PingStats {
        sent,
        received,
        rtt_mean: (received > 0).then(|| rtt_total / received),
    })
}

/// The current `net.ipv4.ping_group_range`, for the message.
fn ping_group_range() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range")
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_string())
}

/// A datagram ICMP socket, else a raw one.
fn open(ip: IpAddr) -> Result<(OwnedFd, Kind), PingError> {
    let (domain, protocol) = if ip.is_ipv6() {
        (libc::AF_INET6, libc::IPPROTO_ICMPV6)
    } else {
        (libc::AF_INET, libc::IPPROTO_ICMP)
    };
    let denied = |e: &io::Error| matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM));
    match socket(domain, libc::SOCK_DGRAM, protocol) {
        Ok(fd) => return Ok((fd, Kind::Datagram)),
        Err(e) if denied(&e) => {}
        Err(e) => return Err(PingError::Other(format!("ICMP socket: {e}"))),
    }
    match socket(domain, libc::SOCK_RAW, protocol) {
        Ok(fd) => Ok((fd, Kind::Raw)),
        Err(e) if denied(&e) => Err(PingError::NotPermitted(format!("raw socket: {e}"))),
        Err(e) => Err(PingError::Other(format!("ICMP raw socket: {e}"))),
    }
}

fn socket(domain: i32, kind: i32, protocol: i32) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes plain integers and returns a new descriptor or -1.
    let fd = unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Connects the socket to the target: send/recv then need no address, and the kernel
/// delivers only packets from the target.
fn connect(fd: &OwnedFd, ip: IpAddr) -> io::Result<()> {
    let rc = match ip {
        IpAddr::V4(v4) => {
            let addr = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: addr is a valid sockaddr_in that lives across the call, with its size.
            unsafe {
                libc::connect(
                    fd.as_raw_fd(),
                    std::ptr::from_ref(&addr).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        IpAddr::V6(v6) => {
            // SAFETY: sockaddr_in6 is plain old data; all zeroes is a valid value.
            let mut addr: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            addr.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            addr.sin6_addr = libc::in6_addr {
                s6_addr: v6.octets(),
            };
            // SAFETY: addr is a valid sockaddr_in6 that lives across the call, with its size.
            unsafe {
                libc::connect(
                    fd.as_raw_fd(),
                    std::ptr::from_ref(&addr).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Waits up to `wait` for the socket to become readable.
fn readable(fd: &OwnedFd, wait: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // Round up so that a sub-millisecond wait does not spin.
    let ms = i32::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
    // SAFETY: pfd is one valid pollfd, live across the call.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    rc > 0 && pfd.revents & libc::POLLIN != 0
}

/// An echo request: type, code, checksum, identifier, sequence, payload.
fn echo_request(v6: bool, id: u16, seq: u16) -> [u8; 8 + PAYLOAD] {
    let mut p = [0u8; 8 + PAYLOAD];
    p[0] = if v6 { 128 } else { 8 };
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in p[8..].iter_mut().enumerate() {
        *b = b'S'.wrapping_add(i as u8);
    }
    // ICMPv6 checksums cover a pseudo-header the kernel fills in; IPv4's we compute.
    if !v6 {
        let sum = checksum(&p);
        p[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    p
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The sequence number of an echo reply meant for us, if `packet` is one.
fn parse_reply(packet: &[u8], v6: bool, kind: Kind, id: u16) -> Option<u16> {
    let icmp = if !v6 && kind == Kind::Raw {
        // Raw IPv4 sockets hand over the IP header too.
        let ihl = usize::from(packet.first()? & 0x0f) * 4;
        packet.get(ihl..)?
    } else {
        packet
    };
    if icmp.len() < 8 || icmp[0] != if v6 { 129 } else { 0 } {
        return None;
    }
    // A datagram socket's identifier is chosen by the kernel, which already matched it.
    if kind == Kind::Raw && u16::from_be_bytes([icmp[4], icmp[5]]) != id {
        return None;
    }
    Some(u16::from_be_bytes([icmp[6], icmp[7]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_a_packet_with_its_checksum_is_zero() {
        let p = echo_request(false, 0x1234, 7);
        assert_eq!(checksum(&p), 0);
    }

    #[test]
    fn replies_are_matched_by_type_id_and_sequence() {
        let mut reply = echo_request(false, 42, 3);
        reply[0] = 0;
        assert_eq!(parse_reply(&reply, false, Kind::Datagram, 0), Some(3));
        assert_eq!(parse_reply(&reply, false, Kind::Raw, 41), None);
        let mut with_ip = vec![0x45u8; 20];
        with_ip.extend_from_slice(&reply);
        assert_eq!(parse_reply(&with_ip, false, Kind::Raw, 42), Some(3));
        // Our own request, looped back on a raw socket, is not a reply.
        let request = echo_request(false, 42, 3);
        assert_eq!(parse_reply(&request, false, Kind::Datagram, 42), None);
    }

    #[test]
    fn loss_is_a_percentage_of_requests_sent() {
        let stats = PingStats {
            sent: 4,
            received: 3,
            rtt_mean: None,
        };
        assert_eq!(stats.loss_percent(), 25.0);
    }

    #[test]
    fn ping_to_loopback_gets_replies() {
        match ping("127.0.0.1", 3, Duration::from_secs(2)) {
            Ok(stats) => {
                assert_eq!((stats.sent, stats.received), (3, 3), "{stats:?}");
                assert!(stats.rtt_mean.is_some_and(|d| d < Duration::from_secs(1)));
            }
            Err(PingError::NotPermitted(why)) => {
                println!("skipped: no ICMP socket may be opened here: {why}");
            }
            Err(e) => panic!("ping 127.0.0.1: {e}"),
        }
    }

    #[test]
    fn ping_to_ipv6_loopback_gets_replies() {
        if std::net::UdpSocket::bind("[::1]:0").is_err() {
            println!("skipped: no IPv6 loopback here");
            return;
        }
        match ping("::1", 2, Duration::from_secs(2)) {
            Ok(stats) => assert_eq!((stats.sent, stats.received), (2, 2), "{stats:?}"),
            Err(PingError::NotPermitted(why)) => {
                println!("skipped: no ICMPv6 socket may be opened here: {why}");
            }
            Err(e) => panic!("ping ::1: {e}"),
        }
    }

    #[test]
    fn an_unresolvable_host_is_an_error_not_a_hang() {
        assert!(ping("no-such-host.invalid", 1, Duration::from_secs(2)).is_err());
    }
}
