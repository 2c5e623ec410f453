//! TCP sink against real sockets on 127.0.0.1: byte-exact ordered delivery, acknowledgement
//! only after the peer's TCP stack has the bytes (SIOCOUTQ), resends after resets, reconnect
//! with backoff, and a bounded close.

use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use plura_forwarder::ack::{NoStore, PartitionTracker};
use plura_forwarder::render::settings::Protocol;
use plura_forwarder::sink::{self, Frame, SinkHandle, SinkSpec, SinkState};
use socket2::{Domain, SockRef, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Instant};

fn spec(address: String) -> SinkSpec {
    SinkSpec {
        name: "tcp-test".into(),
        protocol: Protocol::Tcp,
        address,
        queue_events: 1024,
        batch_max_events: 128,
        batch_max_bytes: 64 * 1024,
        batch_linger: Duration::from_millis(2),
        connect_timeout: Duration::from_secs(2),
        tls: None,
    }
}

/// One LF-framed frame carrying its sequence number.
fn payload(i: i64) -> Vec<u8> {
    let pad = (i as usize * 53) % 400;
    let mut v = format!("<13>1 2026-01-01T00:00:00Z host app - - - seq={i:07} ").into_bytes();
    v.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, pad));
    v.push(b'\n');
    v
}

fn seq_of(line: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(line).ok()?;
    let at = s.find("seq=")? + 4;
    s.get(at..at + 7)?.parse().ok()
}

async fn feed(sink: &SinkHandle, tracker: &Arc<PartitionTracker>, range: std::ops::Range<i64>) {
    for i in range {
        let ack = tracker.dispatch(i, 1).pop().unwrap();
        let f = Frame {
            bytes: Bytes::from(payload(i)),
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

/// A listener on 127.0.0.1 (or `addr`) whose accepted sockets get a small receive buffer.
fn listener(addr: Option<SocketAddr>, rcvbuf: Option<usize>) -> TcpListener {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.set_reuse_address(true).unwrap();
    if let Some(n) = rcvbuf {
        s.set_recv_buffer_size(n).unwrap();
    }
    let addr = addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
    s.bind(&addr.into()).unwrap();
    s.listen(64).unwrap();
    s.set_nonblocking(true).unwrap();
    TcpListener::from_std(s.into()).unwrap()
}

/// Bytes received per connection, in accept order.
type Conns = Arc<Mutex<Vec<Vec<u8>>>>;

fn complete_lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    bytes[..end].split_inclusive(|&b| b == b'\n')
}

fn count_lines(conns: &Conns) -> usize {
    conns
        .lock()
        .unwrap()
        .iter()
        .map(|c| complete_lines(c).count())
        .sum()
}

/// Reads everything from every connection, forever.
fn spawn_reader(l: TcpListener) -> Conns {
    let conns: Conns = Arc::default();
    let c2 = Arc::clone(&conns);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let idx = {
                let mut g = c2.lock().unwrap();
                g.push(Vec::new());
                g.len() - 1
            };
            let c3 = Arc::clone(&c2);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    c3.lock().unwrap()[idx].extend_from_slice(&buf[..n]);
                }
            });
        }
    });
    conns
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[tokio::test]
async fn tcp_frames_arrive_in_order_as_one_stream_and_are_acked() {
    timeout(Duration::from_secs(30), async {
        let l = listener(None, None);
        let addr = l.local_addr().unwrap();
        let conns = spawn_reader(l);
        let sink = sink::spawn(spec(addr.to_string()));
        let tracker = PartitionTracker::new("t", 0, Arc::new(NoStore));
        const N: i64 = 5000;
        feed(&sink, &tracker, 0..N).await;
        // close() flushes the queue and waits for the peer's acknowledgement.
        let st = sink.status();
        let report = timeout(Duration::from_secs(10), sink.close(Duration::from_secs(8)))
            .await
            .unwrap();
        println!("tcp status before close: {st:?}\nclose: {report:?}");
        assert!(!report.timed_out);
        assert_eq!(report.unacked, 0);
        assert_eq!(report.resent, 0);
        assert_eq!(tracker.done_upto(), Some(N - 1));
        assert!(wait_until(Duration::from_secs(5), || count_lines(&conns) == N as usize).await);
        let conns = conns.lock().unwrap();
        assert_eq!(conns.len(), 1, "one connection");
        let expected: Vec<u8> = (0..N).flat_map(payload).collect();
        assert!(
            conns[0] == expected,
            "the stream is every frame, byte-equal, in order"
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn tcp_batches_are_single_writes() {
    timeout(Duration::from_secs(30), async {
        let l = listener(None, None);
        let addr = l.local_addr().unwrap();
        let conns = spawn_reader(l);
        let mut s = spec(addr.to_string());
        s.batch_linger = Duration::from_millis(20);
        let sink = sink::spawn(s);
        let tracker = PartitionTracker::new("t", 0, Arc::new(NoStore));
        const N: i64 = 2000;
        feed(&sink, &tracker, 0..N).await;
        assert!(
            wait_until(Duration::from_secs(10), || tracker.done_upto()
                == Some(N - 1))
            .await
        );
        let st = sink.status();
        println!("batching: {st:?}");
        assert_eq!(st.written, N as u64);
        assert!(
            st.batches <= (N as u64) / 16,
            "{} batches for {N} frames",
            st.batches
        );
        // One write per batch (a second only when the socket buffer took part of it).
        assert!(
            st.send_calls <= 2 * st.batches,
            "{} writes for {} batches",
            st.send_calls,
            st.batches
        );
        assert_eq!(count_lines(&conns), N as usize);
        sink.close(Duration::from_secs(1)).await;
    })
    .await
    .unwrap();
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn tcp_acks_wait_for_the_peer_to_acknowledge_bytes() {
    timeout(Duration::from_secs(30), async {
        // The receiver accepts and does not read: its tiny window fills, our bytes wait in the
        // send queue unacknowledged, and acks must stop.
        let l = listener(None, Some(4096));
        let addr = l.local_addr().unwrap();
        let sink = sink::spawn(spec(addr.to_string()));
        let (mut peer, _) = l.accept().await.unwrap();
        let tracker = PartitionTracker::new("t", 0, Arc::new(NoStore));
        const N: i64 = 3000;
        let feeder = {
            let tracker = Arc::clone(&tracker);
            async move {
                feed(&sink, &tracker, 0..N).await;
                sink
            }
        };
        let feeding = tokio::spawn(feeder);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let acked_while_stalled = tracker.done_upto().map_or(0, |d| d + 1);
        println!("acked while the receiver does not read: {acked_while_stalled} of {N}");
        assert!(
            acked_while_stalled < N / 4,
            "acks stopped: {acked_while_stalled}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let later = tracker.done_upto().map_or(0, |d| d + 1);
        assert!(later < N / 4, "acks stay stopped: {later}");

        // Now it reads: everything arrives and everything is acked.
        let mut got = Vec::new();
        let expected: Vec<u8> = (0..N).flat_map(payload).collect();
        let mut buf = vec![0u8; 64 * 1024];
        while got.len() < expected.len() {
            let n = timeout(Duration::from_secs(5), peer.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got == expected);
        assert!(
            wait_until(Duration::from_secs(5), || tracker.done_upto()
                == Some(N - 1))
            .await
        );
        let sink = feeding.await.unwrap();
        let st = sink.status();
        println!("after reading: {st:?}");
        assert_eq!(st.acked, N as u64);
        assert_eq!(st.in_flight, 0);
        sink.close(Duration::from_secs(1)).await;
    })
    .await
    .unwrap();
}

/// FIONREAD: bytes waiting in a socket's receive queue.
#[cfg(target_os = "linux")]
fn unread(s: &TcpStream) -> usize {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int.
    let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::FIONREAD, &mut n as *mut libc::c_int) };
    assert!(r >= 0);
    n as usize
}

/// A receiver that, on each of its first `closes` connections, reads until it has `k` frames
/// and then drops the connection, alternating two ways:
/// - graceful: half-close (FIN), keep reading until the sink closes its side;
/// - abrupt: stop reading until the window is shut and the queue is still, take (peek) what
///   its kernel holds, then reset (RST) the connection.
///
/// Everything its kernel acknowledged is counted as received, which is the promise.
#[cfg(target_os = "linux")]
fn spawn_closing_receiver(l: TcpListener, k: usize, closes: usize) -> Conns {
    let conns: Conns = Arc::default();
    let c2 = Arc::clone(&conns);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let idx = {
                let mut g = c2.lock().unwrap();
                g.push(Vec::new());
                g.len() - 1
            };
            let c3 = Arc::clone(&c2);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let lines = |c: &Conns| complete_lines(&c.lock().unwrap()[idx]).count();
                loop {
                    if idx < closes && lines(&c3) >= k {
                        break;
                    }
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => c3.lock().unwrap()[idx].extend_from_slice(&buf[..n]),
                    }
                }
                if idx % 2 == 0 {
                    let _ = s.shutdown().await;
                    while let Ok(Ok(n)) = timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                        if n == 0 {
                            break;
                        }
                        c3.lock().unwrap()[idx].extend_from_slice(&buf[..n]);
                    }
                } else {
                    let mut last = usize::MAX;
                    let mut still = 0;
                    while still < 3 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        let now = unread(&s);
                        still = if now == last { still + 1 } else { 0 };
                        last = now;
                    }
                    let mut peek = vec![MaybeUninit::<u8>::uninit(); last];
                    let n = SockRef::from(&s).peek(&mut peek).unwrap_or(0);
                    // SAFETY: peek initialised the first n bytes.
                    let got: Vec<u8> = peek[..n]
                        .iter()
                        .map(|b| unsafe { b.assume_init() })
                        .collect();
                    c3.lock().unwrap()[idx].extend_from_slice(&got);
                    let _ = SockRef::from(&s).set_linger(Some(Duration::ZERO));
                    drop(s);
                }
            });
        }
    });
    conns
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_receiver_closing_every_k_frames_loses_nothing() {
    timeout(Duration::from_secs(60), async {
        let l = listener(None, Some(16 * 1024));
        let addr = l.local_addr().unwrap();
        const N: i64 = 8000;
        const K: usize = 300;
        const CLOSES: usize = 6;
        let conns = spawn_closing_receiver(l, K, CLOSES);
        let sink = sink::spawn(spec(addr.to_string()));
        let tracker = PartitionTracker::new("t", 0, Arc::new(NoStore));
        // In waves, so that the send queue does not swallow everything before the first close
        // and every connection sees its share.
        const WAVE: i64 = 800;
        for w in 0..N / WAVE {
            feed(&sink, &tracker, w * WAVE..(w + 1) * WAVE).await;
            let last = (w + 1) * WAVE - 1;
            assert!(
                wait_until(Duration::from_secs(20), || tracker.done_upto() == Some(last)).await,
                "wave {w} acked; status {:?}",
                sink.status()
            );
        }
        let st = sink.status();
        let report = sink.close(Duration::from_secs(2)).await;
        // Give the last readers a moment to take what was acknowledged.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let conns = conns.lock().unwrap();
        let mut seen: HashMap<i64, usize> = HashMap::new();
        let mut bad = 0;
        for c in conns.iter() {
            for line in complete_lines(c) {
                match seq_of(line) {
                    Some(s) if line == payload(s).as_slice() => *seen.entry(s).or_default() += 1,
                    _ => bad += 1,
                }
            }
        }
        let lost: Vec<i64> = (0..N).filter(|i| !seen.contains_key(i)).collect();
        let dups: usize = seen.values().map(|n| n - 1).sum();
        let per_conn: Vec<usize> = conns.iter().map(|c| complete_lines(c).count()).collect();
        println!(
            "closing receiver: {} connections (frames each {per_conn:?}), {N} frames, lost {}, duplicates {dups}, \
             corrupt lines {bad}, resent {} (of which {} never reached the receiver: \
             acking on write would have lost them), reconnects {}",
            conns.len(),
            lost.len(),
            st.resent,
            st.resent.saturating_sub(dups as u64),
            st.reconnects
        );
        assert_eq!(bad, 0, "every line is a whole frame");
        assert!(lost.is_empty(), "lost frames: {:?}", &lost[..lost.len().min(20)]);
        // Both kinds of close happened (they alternate: graceful, abrupt, graceful, ...).
        assert!(conns.len() >= 4, "{} connections", conns.len());
        assert!(st.reconnects >= 3);
        assert!(st.resent > 0, "the resend path ran");
        assert_eq!(report.unacked, 0);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn tcp_receiver_down_at_start_is_reached_after_backoff() {
    timeout(Duration::from_secs(30), async {
        let addr = free_port();
        let sink = sink::spawn(spec(addr.to_string()));
        let tracker = PartitionTracker::new("t", 0, Arc::new(NoStore));
        feed(&sink, &tracker, 0..100).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        let st = sink.status();
        println!("while down: {st:?}");
        assert_eq!(tracker.done_upto(), None);
        assert!(matches!(
            st.state,
            SinkState::Connecting | SinkState::Reconnecting
        ));
        assert!(
            st.last_error
                .as_deref()
                .is_some_and(|e| e.contains("connecting")),
            "{st:?}"
        );
        // 100, 200, 400 ms steps (±25 %): a few attempts, not a busy loop.
        assert!(
            (1..=6).contains(&st.reconnects),
            "reconnect attempts in 800 ms: {}",
            st.reconnects
        );

        let t0 = Instant::now();
        let conns = spawn_reader(listener(Some(addr), None));
        assert!(wait_until(Duration::from_secs(15), || tracker.done_upto() == Some(99)).await);
        println!("delivered {:?} after the receiver came up", t0.elapsed());
        assert!(wait_until(Duration::from_secs(5), || count_lines(&conns) == 100).await);
        let expected: Vec<u8> = (0..100).flat_map(payload).collect();
        assert!(conns.lock().unwrap()[0] == expected);
        assert_eq!(sink.status().state, SinkState::Connected);
        sink.close(Duration::from_secs(1)).await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn tcp_close_with_a_dead_receiver_returns_within_grace() {
    timeout(Duration::from_secs(10), async {
        let sink = sink::spawn(spec(free_port().to_string()));
        let tracker = PartitionTracker::new("t", 0, Arc::new(NoStore));
        feed(&sink, &tracker, 0..50).await;
        let grace = Duration::from_millis(300);
        let t0 = Instant::now();
        let report = sink.close(grace).await;
        let took = t0.elapsed();
        println!("close with a dead receiver took {took:?}: {report:?}");
        assert!(took < grace + Duration::from_millis(150), "{took:?}");
        assert!(report.timed_out);
        assert_eq!(report.unacked, 50);
        assert_eq!(tracker.done_upto(), None, "nothing acked");
        assert_eq!(
            tracker.in_flight(),
            50,
            "every ack was dropped, none completed"
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn tcp_close_with_a_stalled_receiver_returns_within_grace() {
    timeout(Duration::from_secs(10), async {
        let l = listener(None, Some(4096));
        let sink = sink::spawn(spec(l.local_addr().unwrap().to_string()));
        let (_peer, _) = l.accept().await.unwrap();
        let tracker = PartitionTracker::new("t", 0, Arc::new(NoStore));
        feed(&sink, &tracker, 0..1000).await;
        let grace = Duration::from_millis(300);
        let t0 = Instant::now();
        let report = sink.close(grace).await;
        let took = t0.elapsed();
        println!("close with a stalled receiver took {took:?}: {report:?}");
        assert!(took < grace + Duration::from_millis(150), "{took:?}");
        assert!(report.timed_out);
        assert!(report.unacked > 0);
        let acked = tracker.done_upto().map_or(0, |d| d + 1);
        assert_eq!(acked as usize + report.unacked, 1000);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn tcp_idle_connection_closed_by_the_peer_is_reopened() {
    timeout(Duration::from_secs(20), async {
        let l = listener(None, None);
        let addr = l.local_addr().unwrap();
        let sink = sink::spawn(spec(addr.to_string()));
        // The sink connects before any frame; the receiver drops that idle connection.
        let (first, _) = timeout(Duration::from_secs(5), l.accept())
            .await
            .unwrap()
            .unwrap();
        assert!(
            wait_until(Duration::from_secs(2), || sink.status().state
                == SinkState::Connected)
            .await
        );
        drop(first);
        // Noticed by the idle probe (about once a second), then reconnected without a frame.
        let (mut second, _) = timeout(Duration::from_secs(5), l.accept())
            .await
            .unwrap()
            .unwrap();
        assert!(
            wait_until(Duration::from_secs(2), || sink.status().state
                == SinkState::Connected)
            .await
        );
        let st = sink.status();
        println!("after an idle close: {st:?}");
        assert_eq!(st.reconnects, 1);
        assert_eq!(
            st.last_error.as_deref(),
            Some("the peer closed the connection")
        );
        let tracker = PartitionTracker::new("t", 0, Arc::new(NoStore));
        feed(&sink, &tracker, 0..10).await;
        let expected: Vec<u8> = (0..10).flat_map(payload).collect();
        let mut got = vec![0u8; expected.len()];
        timeout(Duration::from_secs(5), second.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert!(got == expected);
        let report = sink.close(Duration::from_secs(2)).await;
        assert_eq!(report.unacked, 0);
        assert_eq!(tracker.done_upto(), Some(9));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn tcp_close_with_a_dead_receiver_and_nothing_queued_returns_at_once() {
    timeout(Duration::from_secs(10), async {
        let sink = sink::spawn(spec(free_port().to_string()));
        tokio::time::sleep(Duration::from_millis(150)).await;
        let t0 = Instant::now();
        let report = sink.close(Duration::from_secs(5)).await;
        println!("empty close with a dead receiver took {:?}", t0.elapsed());
        assert!(
            t0.elapsed() < Duration::from_millis(500),
            "nothing to deliver: no wait for grace"
        );
        assert!(!report.timed_out);
        assert_eq!(report.unacked, 0);
    })
    .await
    .unwrap();
}

/// Not a timed assertion: prints frames/s through one TCP destination on loopback.
/// `cargo test --test sink_tcp tcp_throughput -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, run by hand"]
async fn tcp_throughput() {
    timeout(Duration::from_secs(120), async {
        let l = listener(None, None);
        let addr = l.local_addr().unwrap();
        let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let r2 = Arc::clone(&received);
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 1 << 20];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                r2.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            }
        });
        let mut s = spec(addr.to_string());
        s.queue_events = 65536;
        s.batch_max_events = 1024;
        s.batch_max_bytes = 1 << 20;
        s.batch_linger = Duration::from_millis(5);
        let sink = sink::spawn(s);
        let tracker = PartitionTracker::new("t", 0, Arc::new(NoStore));
        const N: i64 = 500_000;
        let frame = Bytes::from(vec![b'x'; 399].into_iter().chain([b'\n']).collect::<Vec<u8>>());
        let mut acks = Vec::with_capacity(1024);
        let t0 = Instant::now();
        for i in 0..N {
            tracker.dispatch_into(i, 1, &mut acks);
            let ack = acks.pop().unwrap();
            sink.send(Frame { bytes: frame.clone(), ack, event_time_ms: None }).await.unwrap();
        }
        assert!(wait_until(Duration::from_secs(60), || tracker.done_upto() == Some(N - 1)).await);
        let took = t0.elapsed();
        let st = sink.status();
        println!(
            "tcp: {N} frames of 400 B acked in {took:?}: {:.0} frames/s, {:.1} MB/s; {} batches, {} writes",
            N as f64 / took.as_secs_f64(),
            (N * 400) as f64 / took.as_secs_f64() / 1e6,
            st.batches,
            st.send_calls
        );
        assert_eq!(received.load(std::sync::atomic::Ordering::Relaxed), (N * 400) as u64);
        sink.close(Duration::from_secs(1)).await;
    })
    .await
    .unwrap();
}
