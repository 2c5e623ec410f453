//! Connector: resolves the address again on every attempt, dials with a timeout, sets socket
//! options, and spaces attempts with capped, jittered exponential backoff (delivery.md §4).
//!
//! It knows nothing about batches or acknowledgements.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use rand::Rng;
use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpStream, UdpSocket};

/// Why a connection attempt or a write failed. Each variant maps to a bounded `error_type`.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The host name did not resolve.
    #[error("resolving {address}: {source}")]
    Resolve {
        /// The configured address.
        address: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// The host name resolved to nothing.
    #[error("{0} resolved to no address")]
    NoAddress(String),
    /// No address accepted the connection within the connect timeout.
    #[error("connecting to {0}: timed out")]
    ConnectTimeout(SocketAddr),
    /// The connection was refused or failed.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// The address tried last.
        addr: SocketAddr,
        /// The socket error.
        source: io::Error,
    },
    /// Writing to the connection failed.
    #[error("writing: {0}")]
    Write(io::Error),
    /// The peer closed the connection.
    #[error("the peer closed the connection")]
    PeerClosed,
    /// The TLS handshake failed, or the server refused the connection right after it; the
    /// reason is named (unknown issuer, expired, name mismatch, client certificate refused...).
    #[error("tls with {addr}: {reason}: {detail}")]
    Tls {
        /// The server's address.
        addr: SocketAddr,
        /// Why, as a bounded kind.
        reason: super::tls::TlsReason,
        /// rustls' own description.
        detail: String,
    },
    /// The server accepted the TCP connection but did not finish the TLS handshake in time.
    #[error("tls with {addr}: handshake timeout after {after:?} (the server never answered)")]
    TlsHandshakeTimeout {
        /// The server's address.
        addr: SocketAddr,
        /// The handshake timeout.
        after: Duration,
    },
    /// The TLS settings cannot be used (CA, certificate or key file unreadable or invalid).
    #[error("tls settings: {0}")]
    TlsSettings(String),
}

impl SinkError {
    /// A bounded label for metrics and log throttling.
    pub const fn error_type(&self) -> &'static str {
        match self {
            Self::Resolve { .. } | Self::NoAddress(_) => "resolve",
            Self::ConnectTimeout(_) => "connect_timeout",
            Self::Connect { .. } => "connect",
            Self::Write(_) => "write",
            Self::PeerClosed => "peer_closed",
            Self::Tls { reason, .. } => reason.error_type(),
            Self::TlsHandshakeTimeout { .. } => "tls_handshake_timeout",
            Self::TlsSettings(_) => "tls_settings",
        }
    }
}

/// Exponential backoff with jitter: 100 ms doubling to 30 s.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(30))
    }
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            next: min,
            min,
            max,
        }
    }

    /// The delay before the next attempt: the current step with ±25 % jitter, then doubles.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = rand::rng().random_range(0.75..=1.25);
        base.mul_f64(jitter).min(self.max)
    }

    /// Back to the first step (after a successful connection).
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Resolves `address` (`host:port`) now; the first address is the preferred one.
pub(crate) async fn resolve(
    address: &str,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, SinkError> {
    let res = tokio::time::timeout(timeout, tokio::net::lookup_host(address)).await;
    let addrs: Vec<SocketAddr> = match res {
        Ok(Ok(it)) => it.collect(),
        Ok(Err(source)) => {
            return Err(SinkError::Resolve {
                address: address.to_owned(),
                source,
            })
        }
        Err(_) => {
            return Err(SinkError::Resolve {
                address: address.to_owned(),
                source: io::Error::new(io::ErrorKind::TimedOut, "lookup timed out"),
            })
        }
    };
    if addrs.is_empty() {
        return Err(SinkError::NoAddress(address.to_owned()));
    }
    Ok(addrs)
}

/// Resolves and connects to the first address that answers, each within `timeout`, with
/// TCP_NODELAY and keepalive on.
pub(crate) async fn dial_tcp(address: &str, timeout: Duration) -> Result<TcpStream, SinkError> {
    let addrs = resolve(address, timeout).await?;
    let mut last = None;
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                configure_tcp(&stream);
                return Ok(stream);
            }
            Ok(Err(source)) => last = Some(SinkError::Connect { addr, source }),
            Err(_) => last = Some(SinkError::ConnectTimeout(addr)),
        }
    }
    Err(last.unwrap_or_else(|| SinkError::NoAddress(address.to_owned())))
}

/// TCP_NODELAY (a batch is one write; Nagle would only delay it) and keepalive so that a peer
/// that vanished without a reset is noticed. Failures here are not fatal.
fn configure_tcp(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "Could not set TCP_NODELAY.");
    }
    let ka = TcpKeepalive::new().with_time(Duration::from_secs(30));
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "macos",
        windows
    ))]
    let ka = ka.with_interval(Duration::from_secs(10));
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "macos"))]
    let ka = ka.with_retries(3);
    if let Err(e) = SockRef::from(stream).set_tcp_keepalive(&ka) {
        tracing::debug!(error = %e, "Could not set TCP keepalive.");
    }
    // Written data the peer does not acknowledge for this long fails the connection (instead
    // of ~15 minutes of retransmissions), so its frames are resent on a new one sooner. A slow
    // peer that acknowledges zero-window probes is not affected.
    #[cfg(target_os = "linux")]
    if let Err(e) = SockRef::from(stream).set_tcp_user_timeout(Some(USER_TIMEOUT)) {
        tracing::debug!(error = %e, "Could not set TCP_USER_TIMEOUT.");
    }
}

/// See `configure_tcp`.
#[cfg(target_os = "linux")]
const USER_TIMEOUT: Duration = Duration::from_secs(30);

/// Resolves `address` and returns a UDP socket connected to its first address.
pub(crate) async fn dial_udp(address: &str, timeout: Duration) -> Result<UdpSocket, SinkError> {
    let addrs = resolve(address, timeout).await?;
    let mut last = None;
    for addr in addrs {
        let local: SocketAddr = if addr.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let res = async {
            let sock = UdpSocket::bind(local).await?;
            sock.connect(addr).await?;
            Ok::<_, io::Error>(sock)
        }
        .await;
        match res {
            Ok(sock) => return Ok(sock),
            Err(source) => last = Some(SinkError::Connect { addr, source }),
        }
    }
    Err(last.unwrap_or_else(|| SinkError::NoAddress(address.to_owned())))
}

/// Whether the peer has closed or reset the connection, checked without blocking before a
/// write (as Vector's `shutdown_check`): a read that returns 0 bytes means end of stream.
/// Bytes the peer sent (syslog receivers send none) are read and discarded so that they
/// cannot fill the receive buffer. On Unix this asks the kernel directly rather than the
/// runtime's readiness cache, which may not have seen the FIN or RST yet.
pub(crate) fn peer_closed(stream: &TcpStream) -> bool {
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 512];
    // Bounded: a peer that keeps talking must not keep us here.
    for _ in 0..64 {
        match read_now(stream, &mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
    false
}

#[cfg(unix)]
fn read_now(stream: &TcpStream, buf: &mut [std::mem::MaybeUninit<u8>]) -> io::Result<usize> {
    SockRef::from(stream).recv_with_flags(buf, libc::MSG_DONTWAIT)
}

#[cfg(not(unix))]
fn read_now(stream: &TcpStream, buf: &mut [std::mem::MaybeUninit<u8>]) -> io::Result<usize> {
    let mut tmp = [0u8; 512];
    let n = stream.try_read(&mut tmp[..buf.len().min(512)])?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        let d: Vec<Duration> = (0..12).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(75) && d[0] <= Duration::from_millis(125));
        assert!(d[1] >= Duration::from_millis(150) && d[1] <= Duration::from_millis(250));
        assert!(d.iter().all(|x| *x <= Duration::from_secs(30)));
        assert!(d[11] >= Duration::from_millis(22_500));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(125));
    }

    #[tokio::test]
    async fn peer_close_and_reset_are_seen_at_once() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let c = TcpStream::connect(addr).await.unwrap();
        let (mut p, _) = l.accept().await.unwrap();
        assert!(!peer_closed(&c));
        tokio::io::AsyncWriteExt::write_all(&mut p, b"chatter")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !peer_closed(&c),
            "bytes from the peer are discarded, not a close"
        );
        drop(p);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(peer_closed(&c));

        let c = TcpStream::connect(addr).await.unwrap();
        let (p, _) = l.accept().await.unwrap();
        SockRef::from(&p).set_linger(Some(Duration::ZERO)).unwrap();
        drop(p);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(peer_closed(&c), "a reset");
    }

    #[tokio::test]
    async fn unresolvable_and_refused_are_errors() {
        let e = dial_tcp("no-port", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(e.error_type(), "resolve");
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let e = dial_tcp(&addr.to_string(), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(e.error_type(), "connect");
    }
}
