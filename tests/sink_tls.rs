//! TLS sink (RFC 5425) against real tokio-rustls receivers on 127.0.0.1 with certificates made
//! by rcgen at test time: byte-exact octet-counted delivery, acknowledgement on ciphertext,
//! named verification errors with nothing acked, the fix path losing nothing, mutual TLS,
//! handshake timeout, file rotation mid-stream, IP addresses as server names.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use plura_forwarder::ack::{NoStore, PartitionTracker};
use plura_forwarder::config::{TlsConfig, TlsVersion};
use plura_forwarder::render::settings::Protocol;
use plura_forwarder::sink::{self, Frame, SinkHandle, SinkSpec, SinkState, TlsSpec};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::time::{timeout, Instant};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

// ---------------------------------------------------------------------------------------------
// Certificates

struct Ca {
    cert: rcgen::Certificate,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf certificate and its key, as PEM and DER.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Ca {
            cert,
            issuer: Issuer::new(p, key),
        }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    fn leaf(&self, sans: &[&str], client: bool, expired: bool) -> Leaf {
        self.leaf_for(KeyPair::generate().unwrap(), sans, client, expired)
    }

    fn leaf_for(&self, key: KeyPair, sans: &[&str], client: bool, expired: bool) -> Leaf {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name
            .push(DnType::CommonName, if client { "client" } else { "server" });
        p.use_authority_key_identifier_extension = true;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert: cert.der().clone(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server config presenting `leaf`; with `client_ca`, client certificates from that CA are
/// required.
fn server_config(leaf: &Leaf, client_ca: Option<&Ca>) -> ServerConfig {
    let b = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let b = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            roots.add(ca.der()).unwrap();
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .unwrap();
            b.with_client_cert_verifier(v)
        }
        None => b.with_no_client_auth(),
    };
    b.with_single_cert(vec![leaf.cert.clone()], leaf.key.clone_key())
        .unwrap()
}

fn write(path: &Path, s: &str) {
    // Write then rename, as certificate tooling does: a reader never sees half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, s).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Receiver

/// One frame as received: (connection number, SYSLOG-MSG).
type Received = (usize, Vec<u8>);

/// A TLS syslog receiver: parses octet-counted frames per connection.
struct Receiver {
    addr: SocketAddr,
    /// Frames (SYSLOG-MSG only), in arrival order, with the connection number.
    frames: Arc<Mutex<Vec<Received>>>,
    /// Raw application bytes per connection.
    raw: Arc<Mutex<Vec<Vec<u8>>>>,
    /// TLS connections established.
    sessions: Arc<AtomicUsize>,
    /// Of those, with a client certificate.
    with_client_cert: Arc<AtomicUsize>,
    /// The config used for new connections (swap it to rotate).
    config: Arc<Mutex<Arc<ServerConfig>>>,
}

impl Receiver {
    async fn start(config: ServerConfig) -> Receiver {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let r = Receiver {
            addr: l.local_addr().unwrap(),
            frames: Arc::default(),
            raw: Arc::default(),
            sessions: Arc::default(),
            with_client_cert: Arc::default(),
            config: Arc::new(Mutex::new(Arc::new(config))),
        };
        let (frames, raw, sessions, with_cert, config) = (
            Arc::clone(&r.frames),
            Arc::clone(&r.raw),
            Arc::clone(&r.sessions),
            Arc::clone(&r.with_client_cert),
            Arc::clone(&r.config),
        );
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = l.accept().await else {
                    return;
                };
                let acceptor = TlsAcceptor::from(Arc::clone(&config.lock().unwrap()));
                let (frames, raw, sessions, with_cert) = (
                    Arc::clone(&frames),
                    Arc::clone(&raw),
                    Arc::clone(&sessions),
                    Arc::clone(&with_cert),
                );
                tokio::spawn(async move {
                    let Ok(Ok(mut tls)) =
                        timeout(Duration::from_secs(5), acceptor.accept(tcp)).await
                    else {
                        return;
                    };
                    let conn = sessions.fetch_add(1, Ordering::SeqCst);
                    if tls.get_ref().1.peer_certificates().is_some() {
                        with_cert.fetch_add(1, Ordering::SeqCst);
                    }
                    raw.lock().unwrap().push(Vec::new());
                    let mut buf = Vec::new();
                    let mut chunk = vec![0u8; 64 * 1024];
                    loop {
                        let n = match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(r) = raw.lock().unwrap().get_mut(conn) {
                            r.extend_from_slice(&chunk[..n]);
                        }
                        // Octet counting: MSG-LEN SP SYSLOG-MSG.
                        while let Some(sp) = buf.iter().position(|&b| b == b' ') {
                            let len: usize = std::str::from_utf8(&buf[..sp])
                                .expect("MSG-LEN is ASCII")
                                .parse()
                                .expect("MSG-LEN is a number");
                            if buf.len() < sp + 1 + len {
                                break;
                            }
                            let msg = buf[sp + 1..sp + 1 + len].to_vec();
                            buf.drain(..sp + 1 + len);
                            frames.lock().unwrap().push((conn, msg));
                        }
                    }
                });
            }
        });
        r
    }

    fn seqs(&self) -> BTreeSet<i64> {
        self.frames
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, m)| seq_of(m))
            .collect()
    }

    /// The sequence numbers received, once there are at least `n` (or after 5 s). An ack means
    /// the sink wrote the bytes; the receiver's task may not have read and parsed them yet.
    async fn seqs_once(&self, n: usize) -> BTreeSet<i64> {
        wait_until(Duration::from_secs(5), || self.seqs().len() >= n).await;
        self.seqs()
    }

    fn rotate(&self, config: ServerConfig) {
        *self.config.lock().unwrap() = Arc::new(config);
    }
}

// ---------------------------------------------------------------------------------------------
// Frames and the sink

fn msg(i: i64, size: Option<usize>) -> Vec<u8> {
    let mut v = format!("<13>1 2026-01-01T00:00:00Z host app - - - seq={i:07} ").into_bytes();
    let pad = size.map_or((i as usize * 53) % 400, |s| s.saturating_sub(v.len()));
    v.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, pad));
    v
}

/// RFC 5425 frame: MSG-LEN SP SYSLOG-MSG.
fn framed(i: i64, size: Option<usize>) -> Vec<u8> {
    let m = msg(i, size);
    let mut v = format!("{} ", m.len()).into_bytes();
    v.extend_from_slice(&m);
    v
}

fn seq_of(m: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(m).ok()?;
    let at = s.find("seq=")? + 4;
    s.get(at..at + 7)?.parse().ok()
}

fn tls_config(server_name: &str) -> TlsConfig {
    TlsConfig {
        ca_file: None,
        cert_file: None,
        key_file: None,
        server_name: server_name.into(),
        verify: true,
        min_version: TlsVersion::V1_2,
    }
}

fn spec(address: String, tls: TlsConfig) -> SinkSpec {
    SinkSpec {
        name: "tls-test".into(),
        protocol: Protocol::Tls,
        address,
        queue_events: 1024,
        batch_max_events: 128,
        batch_max_bytes: 64 * 1024,
        batch_linger: Duration::from_millis(2),
        connect_timeout: Duration::from_secs(2),
        tls: Some(TlsSpec {
            config: tls,
            handshake_timeout: Duration::from_secs(5),
        }),
    }
}

async fn feed(sink: &SinkHandle, tracker: &Arc<PartitionTracker>, range: std::ops::Range<i64>) {
    for i in range {
        let ack = tracker.dispatch(i, 1).pop().unwrap();
        let f = Frame {
            bytes: Bytes::from(framed(i, None)),
            ack,
            event_time_ms: Some(0),
        };
        sink.send(f).await.unwrap();
    }
}

async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cond()
}

fn tracker() -> Arc<PartitionTracker> {
    PartitionTracker::new("t", 0, Arc::new(NoStore))
}

/// Files for a client: `ca.pem`, and `client.pem` / `client.key`.
struct Files {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn files() -> Files {
    let dir = tempfile::tempdir().unwrap();
    Files {
        ca: dir.path().join("ca.pem"),
        cert: dir.path().join("client.pem"),
        key: dir.path().join("client.key"),
        _dir: dir,
    }
}

/// Waits for an error naming `what`, then checks that nothing was acked.
async fn expect_error(sink: &SinkHandle, t: &Arc<PartitionTracker>, what: &str) -> String {
    let seen = wait_until(Duration::from_secs(8), || {
        sink.status().last_error.is_some_and(|e| e.contains(what))
    })
    .await;
    let st = sink.status();
    assert!(seen, "expected an error naming {what:?}: {st:?}");
    assert_eq!(t.done_upto(), None, "nothing acked");
    assert_eq!(st.acked, 0);
    assert_ne!(st.state, SinkState::Connected);
    st.last_error.unwrap()
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn tls_delivers_byte_exact_octet_counted_frames_in_order_all_acked() {
    timeout(Duration::from_secs(30), async {
        let ca = Ca::new("ca");
        let rx = Receiver::start(server_config(&ca.leaf(&["localhost"], false, false), None)).await;
        let f = files();
        write(&f.ca, &ca.pem());
        let mut cfg = tls_config("localhost");
        cfg.ca_file = Some(f.ca.clone());
        let sink = sink::spawn(spec(rx.addr.to_string(), cfg));
        let t = tracker();
        const N: i64 = 2000;
        feed(&sink, &t, 0..N).await;
        assert!(
            wait_until(Duration::from_secs(10), || t.done_upto() == Some(N - 1)).await,
            "{:?}",
            sink.status()
        );
        let expect: Vec<u8> = (0..N).flat_map(|i| framed(i, None)).collect();
        assert!(
            wait_until(Duration::from_secs(5), || rx.raw.lock().unwrap()[0].len()
                >= expect.len())
            .await
        );
        assert_eq!(rx.raw.lock().unwrap().len(), 1, "one connection");
        assert!(rx.raw.lock().unwrap()[0] == expect, "byte-exact, in order");
        let st = sink.status();
        assert_eq!(
            (st.acked, st.resent, st.state),
            (N as u64, 0, SinkState::Connected)
        );
        assert!(st.last_error.is_none(), "{st:?}");
        let report = sink.close(Duration::from_secs(2)).await;
        assert_eq!(report.unacked, 0);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn wrong_ca_is_unknown_issuer_then_fixed_ca_delivers_everything() {
    timeout(Duration::from_secs(40), async {
        let (ca, other) = (Ca::new("right"), Ca::new("wrong"));
        let rx = Receiver::start(server_config(&ca.leaf(&["localhost"], false, false), None)).await;
        let f = files();
        write(&f.ca, &other.pem());
        let mut cfg = tls_config("localhost");
        cfg.ca_file = Some(f.ca.clone());
        let sink = sink::spawn(spec(rx.addr.to_string(), cfg));
        let t = tracker();
        feed(&sink, &t, 0..100).await;
        let e = expect_error(&sink, &t, "unknown issuer").await;
        assert!(e.contains(&rx.addr.to_string()), "{e}");
        assert!(wait_until(Duration::from_secs(3), || sink.status().reconnects >= 1).await);
        assert!(rx.frames.lock().unwrap().is_empty());

        write(&f.ca, &ca.pem());
        assert!(
            wait_until(Duration::from_secs(15), || t.done_upto() == Some(99)).await,
            "{:?}",
            sink.status()
        );
        assert_eq!(
            rx.seqs_once(100).await,
            (0..100).collect::<BTreeSet<_>>(),
            "0 lost"
        );
        let report = sink.close(Duration::from_secs(2)).await;
        assert_eq!(report.unacked, 0);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn wrong_name_is_a_name_mismatch() {
    timeout(Duration::from_secs(20), async {
        let ca = Ca::new("ca");
        let rx = Receiver::start(server_config(
            &ca.leaf(&["elsewhere.test"], false, false),
            None,
        ))
        .await;
        let f = files();
        write(&f.ca, &ca.pem());
        let mut cfg = tls_config("localhost");
        cfg.ca_file = Some(f.ca.clone());
        let sink = sink::spawn(spec(rx.addr.to_string(), cfg));
        let t = tracker();
        feed(&sink, &t, 0..10).await;
        expect_error(&sink, &t, "name mismatch").await;
        let report = sink.close(Duration::from_millis(200)).await;
        assert_eq!(report.unacked, 10);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn expired_certificate_is_named() {
    timeout(Duration::from_secs(20), async {
        let ca = Ca::new("ca");
        let rx = Receiver::start(server_config(&ca.leaf(&["localhost"], false, true), None)).await;
        let f = files();
        write(&f.ca, &ca.pem());
        let mut cfg = tls_config("localhost");
        cfg.ca_file = Some(f.ca.clone());
        let sink = sink::spawn(spec(rx.addr.to_string(), cfg));
        let t = tracker();
        feed(&sink, &t, 0..10).await;
        expect_error(&sink, &t, "expired").await;
        let report = sink.close(Duration::from_millis(200)).await;
        assert_eq!(report.unacked, 10);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn missing_client_certificate_is_named_and_nothing_is_acked() {
    timeout(Duration::from_secs(20), async {
        let (ca, clients) = (Ca::new("ca"), Ca::new("clients"));
        let rx = Receiver::start(server_config(
            &ca.leaf(&["localhost"], false, false),
            Some(&clients),
        ))
        .await;
        let f = files();
        write(&f.ca, &ca.pem());
        let mut cfg = tls_config("localhost");
        cfg.ca_file = Some(f.ca.clone());
        let mut s = spec(rx.addr.to_string(), cfg);
        // Frames wait in the queue before the first handshake and go out without linger,
        // right after it: the TLS 1.3 refusal arrives after the client's handshake ended,
        // and frames written before it must not be acked.
        s.batch_linger = Duration::ZERO;
        let t = tracker();
        let sink = sink::spawn(s);
        feed(&sink, &t, 0..10).await;
        expect_error(&sink, &t, "client certificate required").await;
        // Give a wrongly acked write every chance to show.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(t.done_upto(), None);
        let report = sink.close(Duration::from_millis(200)).await;
        assert_eq!(report.unacked, 10);
        assert_eq!(report.acked, 0);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn refused_client_certificate_is_named_then_a_good_one_delivers_everything() {
    timeout(Duration::from_secs(40), async {
        let (ca, clients, strangers) = (Ca::new("ca"), Ca::new("clients"), Ca::new("strangers"));
        let rx = Receiver::start(server_config(
            &ca.leaf(&["localhost"], false, false),
            Some(&clients),
        ))
        .await;
        let f = files();
        write(&f.ca, &ca.pem());
        let bad = strangers.leaf(&["client"], true, false);
        write(&f.cert, &bad.cert_pem);
        write(&f.key, &bad.key_pem);
        let mut cfg = tls_config("localhost");
        cfg.ca_file = Some(f.ca.clone());
        cfg.cert_file = Some(f.cert.clone());
        cfg.key_file = Some(f.key.clone());
        let sink = sink::spawn(spec(rx.addr.to_string(), cfg));
        let t = tracker();
        feed(&sink, &t, 0..50).await;
        expect_error(&sink, &t, "client certificate refused").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(t.done_upto(), None);

        let good = clients.leaf(&["client"], true, false);
        write(&f.key, &good.key_pem);
        write(&f.cert, &good.cert_pem);
        assert!(
            wait_until(Duration::from_secs(15), || t.done_upto() == Some(49)).await,
            "{:?}",
            sink.status()
        );
        assert_eq!(
            rx.seqs_once(50).await,
            (0..50).collect::<BTreeSet<_>>(),
            "0 lost"
        );
        assert!(rx.with_client_cert.load(Ordering::SeqCst) >= 1);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn mutual_tls_works() {
    timeout(Duration::from_secs(20), async {
        let (ca, clients) = (Ca::new("ca"), Ca::new("clients"));
        let rx = Receiver::start(server_config(
            &ca.leaf(&["localhost"], false, false),
            Some(&clients),
        ))
        .await;
        let f = files();
        write(&f.ca, &ca.pem());
        let c = clients.leaf(&["client"], true, false);
        write(&f.cert, &c.cert_pem);
        write(&f.key, &c.key_pem);
        let mut cfg = tls_config("localhost");
        cfg.ca_file = Some(f.ca.clone());
        cfg.cert_file = Some(f.cert.clone());
        cfg.key_file = Some(f.key.clone());
        let sink = sink::spawn(spec(rx.addr.to_string(), cfg));
        let t = tracker();
        feed(&sink, &t, 0..200).await;
        assert!(
            wait_until(Duration::from_secs(10), || t.done_upto() == Some(199)).await,
            "{:?}",
            sink.status()
        );
        assert_eq!(rx.with_client_cert.load(Ordering::SeqCst), 1);
        assert_eq!(rx.seqs_once(200).await.len(), 200);
        assert!(sink.status().last_error.is_none());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn silent_peer_is_a_handshake_timeout() {
    timeout(Duration::from_secs(20), async {
        // Accepts TCP, never answers the ClientHello.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let held = Arc::new(Mutex::new(Vec::new()));
        let h = Arc::clone(&held);
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                h.lock().unwrap().push(s);
            }
        });
        let mut s = spec(addr.to_string(), tls_config("localhost"));
        s.tls.as_mut().unwrap().handshake_timeout = Duration::from_secs(1);
        let t0 = Instant::now();
        let sink = sink::spawn(s);
        let t = tracker();
        feed(&sink, &t, 0..5).await;
        let e = expect_error(&sink, &t, "handshake timeout").await;
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(4),
            "{took:?}: {e}"
        );
        let report = sink.close(Duration::from_millis(200)).await;
        assert_eq!(report.unacked, 5);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn rotating_ca_and_certificates_mid_stream_loses_nothing() {
    timeout(Duration::from_secs(60), async {
        let (ca1, ca2) = (Ca::new("ca1"), Ca::new("ca2"));
        let (cl1, cl2) = (Ca::new("clients1"), Ca::new("clients2"));
        let rx = Receiver::start(server_config(
            &ca1.leaf(&["localhost"], false, false),
            Some(&cl1),
        ))
        .await;
        let f = files();
        write(&f.ca, &ca1.pem());
        let c1 = cl1.leaf(&["client"], true, false);
        write(&f.cert, &c1.cert_pem);
        write(&f.key, &c1.key_pem);
        let mut cfg = tls_config("localhost");
        cfg.ca_file = Some(f.ca.clone());
        cfg.cert_file = Some(f.cert.clone());
        cfg.key_file = Some(f.key.clone());
        let sink = sink::spawn(spec(rx.addr.to_string(), cfg));
        let t = tracker();
        const N: i64 = 3000;
        let feeder = async {
            {
                for chunk in 0..30 {
                    feed(&sink, &t, chunk * 100..(chunk + 1) * 100).await;
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
            }
        };
        let rotate = async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            // The server moves to the new CA (trusting clients of both), then the client's
            // files follow: the connection is replaced, nothing is lost.
            let mut both = RootCertStore::empty();
            both.add(cl1.der()).unwrap();
            both.add(cl2.der()).unwrap();
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(both), provider())
                .build()
                .unwrap();
            let leaf = ca2.leaf(&["localhost"], false, false);
            let cfg = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_client_cert_verifier(v)
                .with_single_cert(vec![leaf.cert.clone()], leaf.key.clone_key())
                .unwrap();
            rx.rotate(cfg);
            write(&f.ca, &format!("{}{}", ca1.pem(), ca2.pem()));
            let c2 = cl2.leaf(&["client"], true, false);
            write(&f.key, &c2.key_pem);
            write(&f.cert, &c2.cert_pem);
        };
        tokio::join!(feeder, rotate);
        assert!(
            wait_until(Duration::from_secs(15), || t.done_upto() == Some(N - 1)).await,
            "{:?}",
            sink.status()
        );
        assert_eq!(
            rx.seqs_once(N as usize).await,
            (0..N).collect::<BTreeSet<_>>(),
            "0 lost"
        );
        let sessions = rx.sessions.load(Ordering::SeqCst);
        assert!(sessions >= 2, "the connection was replaced: {sessions}");
        // Frames arrive in order on each connection.
        let frames = rx.frames.lock().unwrap().clone();
        for conn in 0..sessions {
            let s: Vec<i64> = frames
                .iter()
                .filter(|(c, _)| *c == conn)
                .filter_map(|(_, m)| seq_of(m))
                .collect();
            assert!(
                s.windows(2).all(|w| w[0] < w[1]),
                "connection {conn} in order"
            );
        }
        let st = sink.status();
        println!("rotation: {sessions} sessions, {st:?}");
        assert_eq!(st.acked, N as u64);
        assert_eq!(
            st.resent, 0,
            "the old connection's frames were acked before it closed"
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn ip_address_as_server_name_works() {
    timeout(Duration::from_secs(20), async {
        let ca = Ca::new("ca");
        let rx = Receiver::start(server_config(&ca.leaf(&["127.0.0.1"], false, false), None)).await;
        let f = files();
        write(&f.ca, &ca.pem());
        let mut cfg = tls_config("127.0.0.1");
        cfg.ca_file = Some(f.ca.clone());
        let sink = sink::spawn(spec(rx.addr.to_string(), cfg));
        let t = tracker();
        feed(&sink, &t, 0..50).await;
        assert!(
            wait_until(Duration::from_secs(10), || t.done_upto() == Some(49)).await,
            "{:?}",
            sink.status()
        );
        assert_eq!(rx.seqs_once(50).await.len(), 50);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn verify_false_accepts_an_unknown_certificate() {
    timeout(Duration::from_secs(20), async {
        let ca = Ca::new("nobody-trusts-me");
        let rx = Receiver::start(server_config(
            &ca.leaf(&["elsewhere.test"], false, true),
            None,
        ))
        .await;
        let mut cfg = tls_config("localhost");
        cfg.verify = false;
        cfg.min_version = TlsVersion::V1_3;
        let sink = sink::spawn(spec(rx.addr.to_string(), cfg));
        let t = tracker();
        feed(&sink, &t, 0..20).await;
        assert!(
            wait_until(Duration::from_secs(10), || t.done_upto() == Some(19)).await,
            "{:?}",
            sink.status()
        );
    })
    .await
    .unwrap();
}

/// N frames of 400 B over TLS and over plain TCP to local receivers, first send to last ack.
/// `cargo test --release --test sink_tls -- --ignored --nocapture throughput`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput_tls_vs_tcp() {
    const N: i64 = 200_000;
    let frames: Vec<Bytes> = (0..N).map(|i| Bytes::from(framed(i, Some(396)))).collect();
    assert_eq!(frames[0].len(), 400);

    async fn run(sink: SinkHandle, frames: &[Bytes]) -> f64 {
        let t = tracker();
        let t0 = Instant::now();
        for (i, b) in frames.iter().enumerate() {
            let ack = t.dispatch(i as i64, 1).pop().unwrap();
            sink.send(Frame {
                bytes: b.clone(),
                ack,
                event_time_ms: None,
            })
            .await
            .unwrap();
        }
        let last = frames.len() as i64 - 1;
        assert!(wait_until(Duration::from_secs(120), || t.done_upto() == Some(last)).await);
        let secs = t0.elapsed().as_secs_f64();
        sink.close(Duration::from_secs(2)).await;
        frames.len() as f64 / secs
    }

    // A plain TCP receiver that discards.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut b = vec![0u8; 256 * 1024];
                while matches!(s.read(&mut b).await, Ok(n) if n > 0) {}
            });
        }
    });
    let mut tcp_spec = spec(tcp_addr.to_string(), tls_config("localhost"));
    tcp_spec.protocol = Protocol::Tcp;
    tcp_spec.queue_events = 8192;
    tcp_spec.batch_max_events = 1024;
    tcp_spec.batch_max_bytes = 256 * 1024;
    let tcp = run(sink::spawn(tcp_spec), &frames).await;

    // A TLS receiver that discards.
    let ca = Ca::new("ca");
    let cfg = Arc::new(server_config(&ca.leaf(&["localhost"], false, false), None));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = TlsAcceptor::from(Arc::clone(&cfg));
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(s).await else {
                    return;
                };
                let mut b = vec![0u8; 256 * 1024];
                while matches!(s.read(&mut b).await, Ok(n) if n > 0) {}
            });
        }
    });
    let f = files();
    write(&f.ca, &ca.pem());
    let mut c = tls_config("localhost");
    c.ca_file = Some(f.ca.clone());
    let mut tls_spec = spec(tls_addr.to_string(), c);
    tls_spec.queue_events = 8192;
    tls_spec.batch_max_events = 1024;
    tls_spec.batch_max_bytes = 256 * 1024;
    let tls = run(sink::spawn(tls_spec), &frames).await;
    println!(
        "throughput, {N} frames of 400 B: tcp {tcp:.0} frames/s, tls {tls:.0} frames/s, tls/tcp = {:.2}",
        tls / tcp
    );
}

#[tokio::test]
async fn tls_1_2_server_is_served_unless_min_version_is_1_3() {
    timeout(Duration::from_secs(20), async {
        let ca = Ca::new("ca");
        let leaf = ca.leaf(&["localhost"], false, false);
        let only_12 = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.cert.clone()], leaf.key.clone_key())
            .unwrap();
        let rx = Receiver::start(only_12).await;
        let f = files();
        write(&f.ca, &ca.pem());
        let mut cfg = tls_config("localhost");
        cfg.ca_file = Some(f.ca.clone());
        let sink = sink::spawn(spec(rx.addr.to_string(), cfg.clone()));
        let t = tracker();
        feed(&sink, &t, 0..20).await;
        assert!(
            wait_until(Duration::from_secs(10), || t.done_upto() == Some(19)).await,
            "{:?}",
            sink.status()
        );
        assert_eq!(rx.seqs_once(20).await.len(), 20);

        cfg.min_version = TlsVersion::V1_3;
        let sink = sink::spawn(spec(rx.addr.to_string(), cfg));
        let t = tracker();
        feed(&sink, &t, 0..5).await;
        expect_error(&sink, &t, "handshake failure").await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn reload_tls_replaces_the_connection_without_loss() {
    timeout(Duration::from_secs(30), async {
        let ca = Ca::new("ca");
        let rx = Receiver::start(server_config(&ca.leaf(&["localhost"], false, false), None)).await;
        let f = files();
        write(&f.ca, &ca.pem());
        let mut cfg = tls_config("localhost");
        cfg.ca_file = Some(f.ca.clone());
        let sink = sink::spawn(spec(rx.addr.to_string(), cfg));
        let t = tracker();
        feed(&sink, &t, 0..100).await;
        assert!(wait_until(Duration::from_secs(10), || t.done_upto() == Some(99)).await);
        assert_eq!(rx.sessions.load(Ordering::SeqCst), 1);
        assert!(sink.reload_tls().unwrap());
        // Idle: the connection is replaced at the next idle check (about a second).
        assert!(
            wait_until(Duration::from_secs(5), || rx
                .sessions
                .load(Ordering::SeqCst)
                == 2)
            .await
        );
        feed(&sink, &t, 100..200).await;
        assert!(wait_until(Duration::from_secs(10), || t.done_upto() == Some(199)).await);
        assert_eq!(rx.seqs_once(200).await, (0..200).collect::<BTreeSet<_>>());
        let st = sink.status();
        assert!(st.last_error.is_none(), "a reload is not an error: {st:?}");
        assert_eq!(st.state, SinkState::Connected);

        // Files that cannot be used are refused; the previous settings stay.
        write(&f.ca, "not a certificate\n");
        assert!(sink
            .reload_tls()
            .unwrap_err()
            .to_string()
            .contains("ca_file"));
        feed(&sink, &t, 200..210).await;
        assert!(wait_until(Duration::from_secs(10), || t.done_upto() == Some(209)).await);

        // UDP and TCP destinations have nothing to reload.
        let mut s = spec("127.0.0.1:9".into(), tls_config("localhost"));
        s.protocol = Protocol::Udp;
        let udp = sink::spawn(s);
        assert!(!udp.reload_tls().unwrap());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn client_keys_in_pkcs1_rsa_and_sec1_ec_form_work() {
    timeout(Duration::from_secs(30), async {
        let (ca, clients) = (Ca::new("ca"), Ca::new("clients"));
        let rx = Receiver::start(server_config(
            &ca.leaf(&["localhost"], false, false),
            Some(&clients),
        ))
        .await;
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls");
        let read = |n: &str| std::fs::read_to_string(data.join(n)).unwrap();
        for (pkcs8, other, header) in [
            ("rsa8.pem", "rsa1.pem", "BEGIN RSA PRIVATE KEY"),
            ("ec8.pem", "ec1.pem", "BEGIN EC PRIVATE KEY"),
        ] {
            let key_pem = read(other);
            assert!(key_pem.contains(header));
            let leaf = clients.leaf_for(
                KeyPair::from_pem(&read(pkcs8)).unwrap(),
                &["c"],
                true,
                false,
            );
            let f = files();
            write(&f.ca, &ca.pem());
            write(&f.cert, &leaf.cert_pem);
            write(&f.key, &key_pem);
            let mut cfg = tls_config("localhost");
            cfg.ca_file = Some(f.ca.clone());
            cfg.cert_file = Some(f.cert.clone());
            cfg.key_file = Some(f.key.clone());
            let sink = sink::spawn(spec(rx.addr.to_string(), cfg));
            let t = tracker();
            feed(&sink, &t, 0..10).await;
            assert!(
                wait_until(Duration::from_secs(10), || t.done_upto() == Some(9)).await,
                "{other}: {:?}",
                sink.status()
            );
            sink.close(Duration::from_secs(1)).await;
        }
        assert_eq!(rx.with_client_cert.load(Ordering::SeqCst), 2);

        // A key that does not belong to the certificate is a settings error, not a handshake.
        let leaf = clients.leaf(&["c"], true, false);
        let f = files();
        write(&f.ca, &ca.pem());
        write(&f.cert, &leaf.cert_pem);
        write(&f.key, &read("ec1.pem"));
        let mut cfg = tls_config("localhost");
        cfg.ca_file = Some(f.ca.clone());
        cfg.cert_file = Some(f.cert.clone());
        cfg.key_file = Some(f.key.clone());
        let sink = sink::spawn(spec(rx.addr.to_string(), cfg));
        let t = tracker();
        feed(&sink, &t, 0..3).await;
        let e = expect_error(&sink, &t, "tls settings").await;
        assert!(e.contains("key_file"), "{e}");
    })
    .await
    .unwrap();
}
