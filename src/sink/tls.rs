//! TLS transport (RFC 5425) over tokio-rustls, plugged into the stream writer as a
//! [`Transport`]: the writer's acknowledgement tracking works on ciphertext, so a frame is
//! acked only once the TCP segment that carried its last TLS record was acknowledged.
//!
//! - A counting adapter sits *under* the TLS stream: `wire_bytes` is the ciphertext (handshake
//!   included) handed to the socket, `unacked_bytes` is `SIOCOUTQ` of the same socket.
//! - Verification is on by default, against `ca_file` or the system roots (rustls-native-certs);
//!   `verify = false` accepts any certificate but still checks the handshake signatures.
//! - Handshakes are bounded (10 s by default); failures name the reason ([`TlsReason`]).
//! - Certificate, key and CA files are watched (mtime, size, inode) on every dial and every
//!   [`CHECK_EVERY`]; a change rebuilds the client config and retires the open connection,
//!   whose unacknowledged frames are written again on the new one.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::{rustls, TlsConnector};

use crate::config::{TlsConfig, TlsVersion};
use crate::throttle::Throttle;

use super::connector::{self, SinkError};
use super::tcp::{Dialer, Transport};

/// How often an open connection checks whether its TLS files changed.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(2);
/// After a TLS 1.3 handshake in which the server asked for a client certificate, how long to
/// wait for the server's verdict (session tickets = accepted, an alert = refused) before
/// writing: the client's handshake ends before the server has checked the certificate, and
/// frames written into a refused connection would be acknowledged by the peer's TCP stack.
const CONFIRM_WAIT: Duration = Duration::from_secs(1);

/// TLS settings of one destination, as [`SinkSpec::tls`](super::SinkSpec::tls) takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSpec {
    /// `[syslog.tls]`.
    pub config: TlsConfig,
    /// Limit for the TLS handshake, after the TCP connection (delivery.md §4: 10 s).
    pub handshake_timeout: Duration,
}

impl TlsSpec {
    /// The settings with the standard 10 s handshake timeout.
    pub fn new(config: TlsConfig) -> Self {
        TlsSpec {
            config,
            handshake_timeout: Duration::from_secs(10),
        }
    }

    /// Verification against the system roots, SNI = the host part of `address`.
    pub fn defaults_for(address: &str) -> Self {
        let host = crate::config::split_address(address)
            .map(|(h, _)| h.to_owned())
            .unwrap_or_default();
        Self::new(TlsConfig {
            ca_file: None,
            cert_file: None,
            key_file: None,
            server_name: host,
            verify: true,
            min_version: TlsVersion::V1_2,
        })
    }
}

/// Why a TLS connection failed, as a bounded kind (metric label, log throttling key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsReason {
    /// The server's certificate does not chain to a trusted CA.
    UnknownIssuer,
    /// The server's certificate has expired.
    Expired,
    /// The server's certificate is not valid yet.
    NotYetValid,
    /// The server's certificate is not valid for `server_name`.
    NameMismatch,
    /// The server's certificate was revoked.
    Revoked,
    /// The server's certificate is invalid otherwise (encoding, signature, purpose).
    BadCertificate,
    /// The server requires a client certificate and none is configured.
    ClientCertRequired,
    /// The server refused the client certificate (unknown CA, bad, expired...).
    ClientCertRefused,
    /// No TLS version or cipher suite in common, or the server's generic refusal.
    HandshakeFailure,
    /// The server closed the connection during the handshake.
    Closed,
    /// Any other TLS protocol error or alert.
    Protocol,
}

impl TlsReason {
    /// A bounded label for metrics and log throttling.
    pub const fn error_type(self) -> &'static str {
        match self {
            Self::UnknownIssuer => "tls_unknown_issuer",
            Self::Expired => "tls_expired",
            Self::NotYetValid => "tls_not_yet_valid",
            Self::NameMismatch => "tls_name_mismatch",
            Self::Revoked => "tls_revoked",
            Self::BadCertificate => "tls_bad_certificate",
            Self::ClientCertRequired => "tls_client_cert_required",
            Self::ClientCertRefused => "tls_client_cert_refused",
            Self::HandshakeFailure => "tls_handshake_failure",
            Self::Closed => "tls_closed",
            Self::Protocol => "tls_protocol",
        }
    }

    /// Classifies a rustls error.
    pub fn of(e: &rustls::Error) -> Self {
        use rustls::{AlertDescription as A, CertificateError as C, Error as E};
        match e {
            E::InvalidCertificate(c) => match c {
                C::UnknownIssuer => Self::UnknownIssuer,
                C::Expired | C::ExpiredContext { .. } => Self::Expired,
                C::NotValidYet | C::NotValidYetContext { .. } => Self::NotYetValid,
                C::NotValidForName | C::NotValidForNameContext { .. } => Self::NameMismatch,
                C::Revoked => Self::Revoked,
                _ => Self::BadCertificate,
            },
            E::AlertReceived(a) => match *a {
                A::CertificateRequired => Self::ClientCertRequired,
                A::BadCertificate
                | A::UnsupportedCertificate
                | A::CertificateRevoked
                | A::CertificateExpired
                | A::CertificateUnknown
                | A::UnknownCA
                | A::AccessDenied => Self::ClientCertRefused,
                A::HandshakeFailure | A::ProtocolVersion | A::InsufficientSecurity => {
                    Self::HandshakeFailure
                }
                _ => Self::Protocol,
            },
            E::PeerIncompatible(_) => Self::HandshakeFailure,
            _ => Self::Protocol,
        }
    }
}

impl std::fmt::Display for TlsReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::UnknownIssuer => "certificate verification failed: unknown issuer",
            Self::Expired => "certificate verification failed: expired",
            Self::NotYetValid => "certificate verification failed: not valid yet",
            Self::NameMismatch => "certificate verification failed: name mismatch",
            Self::Revoked => "certificate verification failed: revoked",
            Self::BadCertificate => "certificate verification failed: invalid certificate",
            Self::ClientCertRequired => {
                "client certificate required by the server (set tls.cert_file and tls.key_file)"
            }
            Self::ClientCertRefused => "client certificate refused by the server",
            Self::HandshakeFailure => "handshake failure",
            Self::Closed => "the server closed the connection during the handshake",
            Self::Protocol => "protocol error",
        })
    }
}

/// Turns an I/O error from tokio-rustls into a [`SinkError`], naming the TLS reason when the
/// error came from rustls.
fn tls_error(addr: SocketAddr, e: io::Error) -> SinkError {
    if let Some(r) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return SinkError::Tls {
            addr,
            reason: TlsReason::of(r),
            detail: r.to_string(),
        };
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => SinkError::Tls {
            addr,
            reason: TlsReason::Closed,
            detail: e.to_string(),
        },
        _ => SinkError::Connect { addr, source: e },
    }
}

/// The TCP stream under the TLS layer, counting the ciphertext written and read.
pub(crate) struct Counted {
    inner: TcpStream,
    written: u64,
    read: u64,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            self.read += (buf.filled().len() - before) as u64;
        }
        res
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            self.written += n as u64;
        }
        res
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A connected TLS stream, as the writer needs it.
pub(crate) struct TlsTransport {
    stream: TlsStream<Counted>,
    addr: SocketAddr,
    settings: Arc<TlsReloader>,
    generation: u64,
}

impl AsyncWrite for TlsTransport {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A waker that does nothing: for polling once without waiting.
struct NoopWake;

impl Wake for NoopWake {
    fn wake(self: Arc<Self>) {}
}

impl Transport for TlsTransport {
    fn wire_bytes(&self) -> u64 {
        self.stream.get_ref().0.written
    }

    #[cfg(unix)]
    fn unacked_bytes(&self) -> io::Result<u64> {
        use std::os::fd::AsRawFd;
        super::unacked::unacked_bytes(self.stream.get_ref().0.inner.as_raw_fd())
    }

    #[cfg(not(unix))]
    fn unacked_bytes(&self) -> io::Result<u64> {
        Ok(0)
    }

    /// Reads what the server sent, without waiting, through the TLS layer: session tickets
    /// and application data are consumed, `close_notify` or end of stream is a close, and an
    /// alert (a refused client certificate in TLS 1.3 arrives after our handshake ended) is
    /// an error naming its reason.
    fn peer_closed(&mut self) -> Option<SinkError> {
        let waker = Waker::from(Arc::new(NoopWake));
        let mut cx = Context::from_waker(&waker);
        let mut scratch = [0u8; 512];
        // Bounded: a server that keeps talking must not keep us here.
        for _ in 0..64 {
            let mut rb = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.stream).poll_read(&mut cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                    return Some(SinkError::PeerClosed)
                }
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(e)) => {
                    return Some(match tls_error(self.addr, e) {
                        SinkError::Tls {
                            reason: TlsReason::Closed,
                            ..
                        }
                        | SinkError::Connect { .. } => SinkError::PeerClosed,
                        other => other,
                    })
                }
                Poll::Pending => return None,
            }
        }
        None
    }

    fn stale(&self) -> bool {
        self.settings.changed_since(self.generation)
    }
}

impl Drop for TlsTransport {
    /// Sends `close_notify` (RFC 5425 §4.4) if the socket takes it right away.
    fn drop(&mut self) {
        self.stream.get_mut().1.send_close_notify();
        let waker = Waker::from(Arc::new(NoopWake));
        let mut cx = Context::from_waker(&waker);
        let _ = Pin::new(&mut self.stream).poll_flush(&mut cx);
    }
}

/// Dials TLS connections: TCP (resolve, connect timeout, socket options), then the handshake
/// within its own timeout.
pub(crate) struct TlsDialer {
    pub address: String,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    pub settings: Arc<TlsReloader>,
}

impl Dialer for TlsDialer {
    type Stream = TlsTransport;

    fn dial(&mut self) -> impl Future<Output = Result<TlsTransport, SinkError>> + Send {
        let address = self.address.clone();
        let (connect_timeout, handshake_timeout) = (self.connect_timeout, self.handshake_timeout);
        let settings = Arc::clone(&self.settings);
        async move {
            // Files are checked on every attempt: a fixed CA file is used at once.
            let built = settings.current()?;
            let tcp = connector::dial_tcp(&address, connect_timeout).await?;
            let addr = tcp.peer_addr().map_err(|source| SinkError::Connect {
                addr: ([0, 0, 0, 0], 0).into(),
                source,
            })?;
            built.client_cert.asked.store(false, Ordering::Relaxed);
            let io = Counted {
                inner: tcp,
                written: 0,
                read: 0,
            };
            let connector = TlsConnector::from(Arc::clone(&built.config));
            let connect = connector.connect(built.server_name.clone(), io);
            let mut stream = match tokio::time::timeout(handshake_timeout, connect).await {
                Err(_) => {
                    return Err(SinkError::TlsHandshakeTimeout {
                        addr,
                        after: handshake_timeout,
                    })
                }
                Ok(Err(e)) => return Err(tls_error(addr, e)),
                Ok(Ok(s)) => s,
            };
            let tls13 =
                stream.get_ref().1.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3);
            if tls13 && built.client_cert.asked.load(Ordering::Relaxed) {
                confirm(&mut stream, addr, CONFIRM_WAIT.min(handshake_timeout)).await?;
            }
            Ok(TlsTransport {
                stream,
                addr,
                settings,
                generation: built.generation,
            })
        }
    }
}

/// Waits up to `wait` for the server's first post-handshake bytes: any bytes (session tickets,
/// data) mean it accepted our certificate; an alert or a close means it refused it.
async fn confirm(
    stream: &mut TlsStream<Counted>,
    addr: SocketAddr,
    wait: Duration,
) -> Result<(), SinkError> {
    let base = stream.get_ref().0.read;
    let mut scratch = [0u8; 512];
    let verdict = std::future::poll_fn(|cx| {
        let mut rb = ReadBuf::new(&mut scratch);
        match Pin::new(&mut *stream).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) if rb.filled().is_empty() => Poll::Ready(Err(SinkError::Tls {
                addr,
                reason: TlsReason::ClientCertRefused,
                detail: "the server closed the connection after asking for a client certificate"
                    .into(),
            })),
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(match tls_error(addr, e) {
                SinkError::Tls {
                    reason: TlsReason::Closed,
                    detail,
                    ..
                } => SinkError::Tls {
                    addr,
                    reason: TlsReason::ClientCertRefused,
                    detail,
                },
                other => other,
            })),
            Poll::Pending if stream.get_ref().0.read > base => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    });
    // No answer at all: a server that sends no tickets; nothing to learn by waiting longer.
    tokio::time::timeout(wait, verdict).await.unwrap_or(Ok(()))
}

/// The client certificate (if any), and whether the server asked for one in the handshake.
#[derive(Debug)]
struct ClientCert {
    key: Option<Arc<CertifiedKey>>,
    asked: AtomicBool,
}

impl ResolvesClientCert for ClientCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.asked.store(true, Ordering::Relaxed);
        self.key.clone()
    }

    fn has_certs(&self) -> bool {
        self.key.is_some()
    }
}

/// `verify = false`: any certificate is accepted, but the handshake signatures are still
/// checked (the server must hold the key of the certificate it sent).
#[derive(Debug)]
struct AcceptAnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// A built client config and what goes with it.
#[derive(Clone)]
pub(crate) struct Built {
    config: Arc<ClientConfig>,
    client_cert: Arc<ClientCert>,
    server_name: ServerName<'static>,
    generation: u64,
}

/// What identifies a version of a file: modification time, size, inode.
type Stamp = Option<(SystemTime, u64, u64)>;

struct Loaded {
    built: Option<Built>,
    stamps: Vec<Stamp>,
    checked: Instant,
}

/// The destination's TLS settings: builds the rustls client config from the files and
/// rebuilds it when they change (or on [`reload`](Self::reload)).
pub(crate) struct TlsReloader {
    config: TlsConfig,
    state: Mutex<Loaded>,
    generation: AtomicU64,
    throttle: Throttle,
    name: String,
}

impl std::fmt::Debug for TlsReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsReloader")
            .field("config", &self.config)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl TlsReloader {
    pub fn new(name: &str, config: TlsConfig) -> Self {
        TlsReloader {
            config,
            state: Mutex::new(Loaded {
                built: None,
                stamps: Vec::new(),
                checked: Instant::now(),
            }),
            generation: AtomicU64::new(0),
            throttle: Throttle::new(Duration::from_secs(60)),
            name: name.to_owned(),
        }
    }

    fn files(&self) -> impl Iterator<Item = &PathBuf> {
        [
            &self.config.ca_file,
            &self.config.cert_file,
            &self.config.key_file,
        ]
        .into_iter()
        .flatten()
    }

    fn stamps(&self) -> Vec<Stamp> {
        self.files().map(|p| stamp(p)).collect()
    }

    /// The config to dial with: rebuilt first if a file changed. When a rebuild fails (a file
    /// half rotated) the previous config stays in use; with none, the error is returned.
    pub fn current(&self) -> Result<Built, SinkError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.refresh(&mut st, false)
    }

    /// Whether the config changed since `generation` (files checked every [`CHECK_EVERY`]).
    pub fn changed_since(&self, generation: u64) -> bool {
        if let Ok(mut st) = self.state.try_lock() {
            if st.checked.elapsed() >= CHECK_EVERY {
                let _ = self.refresh(&mut st, false);
            }
        }
        self.generation.load(Ordering::Relaxed) != generation
    }

    /// Rebuilds the config from the files now, changed or not. New connections use it; the
    /// open one is replaced at its next batch or idle check.
    pub fn reload(&self) -> Result<(), SinkError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.refresh(&mut st, true).map(|_| ())
    }

    fn refresh(&self, st: &mut Loaded, force: bool) -> Result<Built, SinkError> {
        st.checked = Instant::now();
        let stamps = self.stamps();
        if let Some(b) = &st.built {
            if !force && stamps == st.stamps {
                return Ok(b.clone());
            }
        }
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        match build(&self.config, generation) {
            Ok(b) => {
                if st.built.is_some() {
                    tracing::info!(destination = %self.name, "TLS files changed; new connections use them.");
                }
                st.built = Some(b.clone());
                st.stamps = stamps;
                self.generation.store(generation, Ordering::Relaxed);
                Ok(b)
            }
            Err(e) => match &st.built {
                Some(old) => {
                    if let Some(suppressed) = self.throttle.allow("reload") {
                        tracing::warn!(destination = %self.name, error = %e, suppressed, "TLS files changed but cannot be used; keeping the previous ones.");
                    }
                    if force {
                        Err(e)
                    } else {
                        Ok(old.clone())
                    }
                }
                None => Err(e),
            },
        }
    }
}

fn stamp(p: &Path) -> Stamp {
    let m = std::fs::metadata(p).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some((m.modified().ok()?, m.len(), ino))
}

/// Builds the rustls client config: ring provider, TLS 1.3 preferred and 1.2 allowed unless
/// `min_version = "1.3"`, roots from `ca_file` or the system, optional client certificate.
fn build(cfg: &TlsConfig, generation: u64) -> Result<Built, SinkError> {
    let bad = SinkError::TlsSettings;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&'static rustls::SupportedProtocolVersion] = match cfg.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let server_name = ServerName::try_from(cfg.server_name.clone())
        .map_err(|e| bad(format!("server_name {:?}: {e}", cfg.server_name)))?;
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(|e| bad(e.to_string()))?;
    let builder = if cfg.verify {
        builder.with_root_certificates(roots(cfg.ca_file.as_deref())?)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(
                provider.signature_verification_algorithms,
            )))
    };
    let key = match (&cfg.cert_file, &cfg.key_file) {
        (Some(c), Some(k)) => Some(Arc::new(certified_key(c, k, &provider)?)),
        _ => None,
    };
    let client_cert = Arc::new(ClientCert {
        key,
        asked: AtomicBool::new(false),
    });
    let config = builder.with_client_cert_resolver(Arc::clone(&client_cert) as _);
    Ok(Built {
        config: Arc::new(config),
        client_cert,
        server_name,
        generation,
    })
}

fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, SinkError> {
    let mut store = RootCertStore::empty();
    let bad = SinkError::TlsSettings;
    match ca_file {
        Some(p) => {
            let certs = CertificateDer::pem_file_iter(p)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| bad(format!("ca_file {}: {e}", p.display())))?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(bad(format!(
                    "ca_file {}: no usable CA certificate",
                    p.display()
                )));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map_or_else(String::new, |e| format!(" ({e})"));
                return Err(bad(format!(
                    "no system root certificates found{why}; install them or set tls.ca_file"
                )));
            }
        }
    }
    Ok(store)
}

/// Loads a PEM certificate chain and its PEM key (PKCS#8, PKCS#1 RSA or SEC1 EC) and checks
/// that they belong together.
fn certified_key(
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, SinkError> {
    let bad = SinkError::TlsSettings;
    let chain = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad(format!("cert_file {}: {e}", cert_file.display())))?;
    if chain.is_empty() {
        return Err(bad(format!(
            "cert_file {}: no certificate",
            cert_file.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| bad(format!("key_file {}: {e}", key_file.display())))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        bad(format!(
            "cert_file {} with key_file {}: {e}",
            cert_file.display(),
            key_file.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_named() {
        use rustls::{AlertDescription as A, CertificateError as C, Error as E};
        let r = |e: E| TlsReason::of(&e);
        assert_eq!(
            r(E::InvalidCertificate(C::UnknownIssuer)),
            TlsReason::UnknownIssuer
        );
        assert_eq!(r(E::InvalidCertificate(C::Expired)), TlsReason::Expired);
        assert_eq!(
            r(E::InvalidCertificate(C::NotValidForName)),
            TlsReason::NameMismatch
        );
        assert_eq!(
            r(E::AlertReceived(A::CertificateRequired)),
            TlsReason::ClientCertRequired
        );
        assert_eq!(
            r(E::AlertReceived(A::UnknownCA)),
            TlsReason::ClientCertRefused
        );
        assert!(TlsReason::NameMismatch
            .to_string()
            .contains("name mismatch"));
        assert_eq!(TlsReason::Expired.error_type(), "tls_expired");
    }

    #[test]
    fn missing_files_are_settings_errors() {
        let mut spec = TlsSpec::defaults_for("127.0.0.1:6514");
        assert_eq!(spec.config.server_name, "127.0.0.1");
        spec.config.ca_file = Some("/nonexistent/ca.pem".into());
        let e = build(&spec.config, 1).err().unwrap();
        assert_eq!(e.error_type(), "tls_settings");
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }
}
