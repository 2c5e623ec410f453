//! A syslog receiver on loopback (UDP, TCP or TLS) that keeps every frame it gets, exactly as
//! it came off the wire (framing included): the peer of `demo`, the tests and the load harness.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// How frames are delimited on the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// `MSG-LEN SP SYSLOG-MSG` (RFC 6587 octet counting, RFC 5425).
    OctetCounting,
    /// A frame ends with this byte (LF or NUL).
    Byte(u8),
    /// A frame ends with CR LF.
    CrLf,
}

#[derive(Default)]
struct Shared {
    frames: Mutex<Vec<Bytes>>,
    /// Frames arrived so far, kept or only counted.
    count: AtomicUsize,
    connections: AtomicUsize,
    arrived: Notify,
    /// Set by [`Receiver::unpace`], cleared by [`Receiver::pace`]: a paced receiver reads at
    /// full speed while it is set.
    unpaced: AtomicBool,
    /// Set by [`Receiver::counting`]: frames are counted, not kept.
    counting: AtomicBool,
}

impl Shared {
    /// Takes every whole frame off the front of `buf`: kept, or only counted.
    fn take_frames(&self, buf: &mut BytesMut, split: Split) {
        let mut n = 0;
        if self.counting.load(Ordering::Relaxed) {
            while let Some(end) = frame_end(buf, split) {
                buf.advance(end);
                n += 1;
            }
        } else {
            let mut frames = self.frames.lock().unwrap_or_else(|p| p.into_inner());
            while let Some(end) = frame_end(buf, split) {
                frames.push(buf.split_to(end).freeze());
                n += 1;
            }
        }
        self.arrived_n(n);
    }

    /// One datagram: one frame.
    fn take_datagram(&self, datagram: &[u8]) {
        if !self.counting.load(Ordering::Relaxed) {
            self.frames
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Bytes::copy_from_slice(datagram));
        }
        self.arrived_n(1);
    }

    /// Counted after the frames are kept, so that [`Receiver::frames`] never holds fewer than
    /// [`Receiver::count`] said.
    fn arrived_n(&self, n: usize) {
        if n > 0 {
            self.count.fetch_add(n, Ordering::Relaxed);
            self.arrived.notify_waiters();
        }
    }
}

/// A running receiver; stops when dropped.
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// A UDP receiver on 127.0.0.1 (any port): one frame per datagram.
    ///
    /// # Errors
    /// When the socket cannot be bound.
    pub async fn udp() -> std::io::Result<Self> {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
        // A large buffer, so that a burst is not lost in this receiver before it is counted.
        let _ = sock.set_recv_buffer_size(32 << 20);
        force_recv_buffer(&sock, 32 << 20);
        let addr: SocketAddr = "127.0.0.1:0".parse().map_err(std::io::Error::other)?;
        sock.bind(&addr.into())?;
        sock.set_nonblocking(true)?;
        let sock = UdpSocket::from_std(sock.into())?;
        let addr = sock.local_addr()?;
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok(n) = sock.recv(&mut buf).await {
                s.take_datagram(&buf[..n]);
            }
        });
        Ok(Receiver { addr, shared, task })
    }

    /// A TCP receiver on 127.0.0.1 (any port) that splits each connection's stream.
    ///
    /// # Errors
    /// When the listener cannot be bound.
    pub async fn tcp(split: Split) -> std::io::Result<Self> {
        Self::tcp_on("127.0.0.1:0".parse().map_err(std::io::Error::other)?, split).await
    }

    /// A TCP receiver on a given loopback address (for restart tests).
    ///
    /// # Errors
    /// When the listener cannot be bound.
    pub async fn tcp_on(addr: SocketAddr, split: Split) -> std::io::Result<Self> {
        Self::start_tcp(TcpListener::bind(addr).await?, split, None, None)
    }

    /// A TLS receiver (RFC 5425) on 127.0.0.1 presenting `config`'s certificate.
    ///
    /// # Errors
    /// When the listener cannot be bound.
    pub async fn tls(
        split: Split,
        config: Arc<tokio_rustls::rustls::ServerConfig>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        Self::start_tcp(
            listener,
            split,
            None,
            Some(tokio_rustls::TlsAcceptor::from(config)),
        )
    }

    /// A slow TCP receiver: a small receive buffer, and a pause after each read of at most
    /// `chunk` bytes. It models a SIEM that cannot keep up.
    ///
    /// # Errors
    /// When the listener cannot be bound.
    pub async fn tcp_paced(split: Split, chunk: usize, pause: Duration) -> std::io::Result<Self> {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        sock.set_recv_buffer_size(chunk.max(4096))?;
        let addr: SocketAddr = "127.0.0.1:0".parse().map_err(std::io::Error::other)?;
        sock.bind(&addr.into())?;
        sock.listen(16)?;
        sock.set_nonblocking(true)?;
        let listener = TcpListener::from_std(sock.into())?;
        Self::start_tcp(listener, split, Some((chunk, pause)), None)
    }

    fn start_tcp(
        listener: TcpListener,
        split: Split,
        pace: Option<(usize, Duration)>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            // Owned by this task: dropping the receiver aborts it, which closes every
            // connection too (a SIEM that went away, for the delivery tests).
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                s.connections.fetch_add(1, Ordering::Relaxed);
                while conns.try_join_next().is_some() {}
                let s = Arc::clone(&s);
                match tls.clone() {
                    None => conns.spawn(read_stream(stream, split, pace, s)),
                    Some(acceptor) => conns.spawn(async move {
                        if let Ok(Ok(tls)) =
                            tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                                .await
                        {
                            read_stream(tls, split, pace, s).await;
                        }
                    }),
                };
            }
        });
        Ok(Receiver { addr, shared, task })
    }

    /// Where to send.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on frames are only counted, not kept (the load harness: keeping millions of
    /// frames would cost the machine it shares with what it measures). [`Receiver::frames`]
    /// then holds only what arrived before.
    #[must_use]
    pub fn counting(self) -> Self {
        self.shared.counting.store(true, Ordering::Relaxed);
        self
    }

    /// Every frame kept so far, in arrival order.
    pub fn frames(&self) -> Vec<Bytes> {
        self.shared
            .frames
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many frames so far.
    pub fn count(&self) -> usize {
        self.shared.count.load(Ordering::Relaxed)
    }

    /// A paced receiver reads at full speed from now on (the SIEM recovered).
    pub fn unpace(&self) {
        self.shared.unpaced.store(true, Ordering::Relaxed);
    }

    /// A receiver made with [`Receiver::tcp_paced`] reads at its pace again (the SIEM slowed
    /// down again); no effect on one made without a pace.
    pub fn pace(&self) {
        self.shared.unpaced.store(false, Ordering::Relaxed);
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` frames arrived or `timeout` passed; returns the count.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.shared.arrived.notified();
            let count = self.count();
            if count >= n {
                return count;
            }
            // Notify can miss a wake-up between count() and the await: poll as a fallback.
            let step = tokio::time::Instant::now() + Duration::from_millis(50);
            if tokio::time::timeout_at(step.min(deadline), arrived)
                .await
                .is_err()
                && tokio::time::Instant::now() >= deadline
            {
                return self.count();
            }
        }
    }
}

/// A CA made on the spot (PEM, for a destination's `ca_file`) and a server config for
/// 127.0.0.1 signed by it: the TLS peer of the demo and the load harness.
///
/// # Errors
/// When a key or certificate cannot be made.
pub fn loopback_tls() -> anyhow::Result<(String, Arc<tokio_rustls::rustls::ServerConfig>)> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "plura-forwarder demo CA");
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])?;
    leaf.distinguished_name
        .push(DnType::CommonName, "demo syslog receiver");
    let leaf_key = KeyPair::generate()?;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(rustls_pki_types::PrivatePkcs8KeyDer::from(
        leaf_key.serialize_der(),
    ));
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let server = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![leaf_cert.der().clone()], key)?;
    Ok((ca_cert.pem(), Arc::new(server)))
}

/// Above `net.core.rmem_max` only root may go (SO_RCVBUFFORCE); elsewhere the kernel's cap
/// stays, which is fine for tests.
#[cfg(target_os = "linux")]
fn force_recv_buffer(sock: &socket2::Socket, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt on a socket we own, with a correctly sized int option.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn force_recv_buffer(_: &socket2::Socket, _: i32) {}

async fn read_stream<S: AsyncRead + Unpin>(
    mut stream: S,
    split: Split,
    pace: Option<(usize, Duration)>,
    shared: Arc<Shared>,
) {
    // A paced receiver reads at most its chunk at a time; reads go straight into `buf`.
    let most = pace.map_or(64 * 1024, |(c, _)| c);
    let mut buf = BytesMut::with_capacity(most);
    loop {
        shared.take_frames(&mut buf, split);
        buf.reserve(most);
        match (&mut stream).take(most as u64).read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if let Some((_, pause)) = pace {
            if !shared.unpaced.load(Ordering::Relaxed) {
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// Takes one whole frame (framing included) off the front of `buf`, if there is one.
pub fn next_frame(buf: &mut BytesMut, split: Split) -> Option<Bytes> {
    let end = frame_end(buf, split)?;
    Some(buf.split_to(end).freeze())
}

/// Where the first whole frame in `buf` ends, if there is one.
fn frame_end(buf: &[u8], split: Split) -> Option<usize> {
    Some(match split {
        Split::OctetCounting => {
            let sp = buf.iter().position(|&b| b == b' ')?;
            let len: usize = std::str::from_utf8(&buf[..sp]).ok()?.parse().ok()?;
            let end = sp + 1 + len;
            (buf.len() >= end).then_some(end)?
        }
        Split::Byte(d) => buf.iter().position(|&b| b == d)? + 1,
        Split::CrLf => buf.windows(2).position(|w| w == b"\r\n")? + 2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_each_framing() {
        let mut b = BytesMut::from(&b"5 hello3 abc2 x"[..]);
        assert_eq!(
            next_frame(&mut b, Split::OctetCounting).as_deref(),
            Some(&b"5 hello"[..])
        );
        assert_eq!(
            next_frame(&mut b, Split::OctetCounting).as_deref(),
            Some(&b"3 abc"[..])
        );
        assert_eq!(
            next_frame(&mut b, Split::OctetCounting),
            None,
            "incomplete frame waits"
        );
        let mut b = BytesMut::from(&b"a\nb\r\nc"[..]);
        assert_eq!(
            next_frame(&mut b, Split::Byte(b'\n')).as_deref(),
            Some(&b"a\n"[..])
        );
        assert_eq!(
            next_frame(&mut b, Split::CrLf).as_deref(),
            Some(&b"b\r\n"[..])
        );
        assert_eq!(next_frame(&mut b, Split::CrLf), None);
    }

    /// A counting receiver counts whole frames, also one split across writes, and keeps none;
    /// one that keeps frames has each, exactly as sent.
    #[tokio::test]
    async fn counts_or_keeps_whole_frames() {
        use tokio::io::AsyncWriteExt;
        for counting in [true, false] {
            let mut rx = Receiver::tcp(Split::OctetCounting).await.expect("bind");
            if counting {
                rx = rx.counting();
            }
            let mut peer = tokio::net::TcpStream::connect(rx.addr())
                .await
                .expect("connect");
            peer.write_all(b"5 hello3 ab").await.expect("write");
            assert_eq!(rx.wait_for(1, Duration::from_secs(5)).await, 1);
            peer.write_all(b"c2 x").await.expect("write");
            peer.write_all(b"y").await.expect("write");
            assert_eq!(rx.wait_for(3, Duration::from_secs(5)).await, 3);
            let want: Vec<&[u8]> = if counting {
                vec![]
            } else {
                vec![b"5 hello", b"3 abc", b"2 xy"]
            };
            assert_eq!(rx.frames(), want, "counting: {counting}");
        }
    }

    #[tokio::test]
    async fn a_counting_udp_receiver_counts_each_datagram() {
        let rx = Receiver::udp().await.expect("bind").counting();
        let peer = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        for d in [&b"one"[..], b"two", b"three"] {
            peer.send_to(d, rx.addr()).await.expect("send");
        }
        assert_eq!(rx.wait_for(3, Duration::from_secs(5)).await, 3);
        assert!(rx.frames().is_empty());
    }
}
