//! Helpers of the delivery tests: retry-topic counts, committed offsets of any topic,
//! delivery accounting per receiver.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::common::seq_of;

/// Total records in `topic` (sum of high watermarks), checking nothing was deleted.
pub fn topic_records(brokers: &str, topic: &str) -> i64 {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("consumer");
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .expect("metadata");
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    drop(md);
    let mut total = 0;
    for p in partitions {
        let (low, high) = c
            .fetch_watermarks(topic, p, Duration::from_secs(5))
            .expect("watermarks");
        assert_eq!(low, 0, "{topic}/{p}: the mock cluster deleted data");
        total += high;
    }
    total
}

/// Sum of the committed offsets of `group` on every partition of `topic`.
pub fn committed_sum(brokers: &str, group: &str, topic: &str) -> i64 {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .expect("metadata");
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    drop(md);
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(topic, p);
    }
    let got = c
        .committed_offsets(tpl, Duration::from_secs(5))
        .expect("committed offsets");
    let sum = got
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum();
    drop(got);
    sum
}

/// What one receiver got, by sample sequence number.
pub struct Tally {
    pub counts: BTreeMap<u64, usize>,
    pub frames: usize,
}

impl Tally {
    pub fn of(frames: &[Bytes]) -> Self {
        let mut counts = BTreeMap::new();
        for f in frames {
            let seq = seq_of(f).unwrap_or_else(|| panic!("frame without a sample id: {f:?}"));
            *counts.entry(seq).or_insert(0) += 1;
        }
        Tally {
            counts,
            frames: frames.len(),
        }
    }

    /// Sequence numbers of `want` never received.
    pub fn missing(&self, want: impl IntoIterator<Item = u64>) -> Vec<u64> {
        want.into_iter()
            .filter(|s| !self.counts.contains_key(s))
            .collect()
    }

    /// Frames beyond the first of each event.
    pub fn duplicates(&self) -> usize {
        self.frames - self.counts.len()
    }

    pub fn has_all(&self, want: impl IntoIterator<Item = u64>) -> bool {
        self.missing(want).is_empty()
    }
}

/// Waits until `frames()` covers every sequence number of `want` (at least once), or `timeout`.
pub async fn wait_covers(
    frames: impl Fn() -> Vec<Bytes>,
    want: std::ops::Range<u64>,
    timeout: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if Tally::of(&frames()).has_all(want.clone()) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// VmRSS of this process, in KiB.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Logs to the test output (`RUST_LOG` overrides the default filter).
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,librdkafka=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A pipeline running in this process until its token is cancelled.
pub struct Instance {
    pub stop: tokio_util::sync::CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub trackers:
        std::sync::Arc<std::sync::OnceLock<std::sync::Arc<plura_forwarder::source::Trackers>>>,
}

impl Instance {
    pub fn start(cfg: plura_forwarder::config::Config) -> Self {
        let stop = tokio_util::sync::CancellationToken::new();
        let trackers: std::sync::Arc<std::sync::OnceLock<_>> = Default::default();
        let t2 = std::sync::Arc::clone(&trackers);
        let opts = plura_forwarder::pipeline::RunOptions {
            shutdown: stop.clone(),
            on_start: Some(Box::new(
                move |info: plura_forwarder::pipeline::StartInfo| {
                    let _ = t2.set(info.trackers);
                },
            )),
            ..Default::default()
        };
        let task = tokio::spawn(plura_forwarder::pipeline::run(cfg, opts));
        Instance {
            stop,
            task,
            trackers,
        }
    }

    /// Events dispatched and not finished, over the partitions this instance owns.
    pub fn in_flight(&self) -> usize {
        self.trackers
            .get()
            .map_or(0, |t| t.all().iter().map(|p| p.in_flight()).sum())
    }

    /// Stops it and waits (bounded) for the drain and the final commit.
    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("instance stops within 60 s")
            .expect("instance task")
            .expect("instance run");
    }
}

/// A TCP receiver that resets (RST) each of its first `resets` connections after `every`
/// frames. Before the reset it stops reading until its kernel queue is still and takes
/// (peeks) what the kernel holds: everything its kernel acknowledged counts as received,
/// which is the promise (delivery.md §1).
pub struct Resetting {
    pub addr: std::net::SocketAddr,
    frames: std::sync::Arc<std::sync::Mutex<Vec<Bytes>>>,
    pub connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Resetting {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Resetting {
    pub fn start(every: usize, resets: usize) -> Self {
        use plura_forwarder::receiver::{next_frame, Split};
        use std::sync::atomic::Ordering;
        use tokio::io::AsyncReadExt;
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(16 * 1024).unwrap();
        let addr: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        sock.bind(&addr.into()).unwrap();
        sock.listen(16).unwrap();
        sock.set_nonblocking(true).unwrap();
        let l = tokio::net::TcpListener::from_std(sock.into()).unwrap();
        let addr = l.local_addr().unwrap();
        let frames: std::sync::Arc<std::sync::Mutex<Vec<Bytes>>> = Default::default();
        let connections: std::sync::Arc<std::sync::atomic::AtomicUsize> = Default::default();
        let (f2, c2) = (
            std::sync::Arc::clone(&frames),
            std::sync::Arc::clone(&connections),
        );
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut s, _)) = l.accept().await {
                let idx = c2.fetch_add(1, Ordering::SeqCst);
                let f3 = std::sync::Arc::clone(&f2);
                conns.spawn(async move {
                    let mut buf = bytes::BytesMut::new();
                    let mut chunk = vec![0u8; 64 * 1024];
                    let mut got = 0;
                    loop {
                        while let Some(fr) = next_frame(&mut buf, Split::OctetCounting) {
                            f3.lock().unwrap().push(fr);
                            got += 1;
                        }
                        if idx < resets && got >= every {
                            break;
                        }
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let mut last = usize::MAX;
                    let mut still = 0;
                    while still < 3 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        let now = unread(&s);
                        still = if now == last { still + 1 } else { 0 };
                        last = now;
                    }
                    let mut peek = vec![std::mem::MaybeUninit::<u8>::uninit(); last];
                    let n = socket2::SockRef::from(&s).peek(&mut peek).unwrap_or(0);
                    // SAFETY: peek initialised the first n bytes.
                    let taken: Vec<u8> = peek[..n]
                        .iter()
                        .map(|b| unsafe { b.assume_init() })
                        .collect();
                    buf.extend_from_slice(&taken);
                    while let Some(fr) = next_frame(&mut buf, Split::OctetCounting) {
                        f3.lock().unwrap().push(fr);
                    }
                    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                    drop(s);
                });
            }
        });
        Resetting {
            addr,
            frames,
            connections,
            task,
        }
    }

    pub fn frames(&self) -> Vec<Bytes> {
        self.frames.lock().unwrap().clone()
    }
}

/// FIONREAD: bytes waiting in a socket's receive queue.
fn unread(s: &tokio::net::TcpStream) -> usize {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int.
    let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::FIONREAD, &mut n as *mut libc::c_int) };
    assert!(r >= 0);
    n as usize
}

/// A TCP receiver that accepts but reads nothing until [`Gated::open`]: a SIEM that stalls,
/// then recovers. Its receive buffer is small, so the stall reaches the sender quickly.
pub struct Gated {
    pub addr: std::net::SocketAddr,
    gate: std::sync::Arc<tokio::sync::Notify>,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    frames: std::sync::Arc<std::sync::Mutex<Vec<Bytes>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Gated {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Gated {
    pub fn start() -> Self {
        use plura_forwarder::receiver::{next_frame, Split};
        use std::sync::atomic::Ordering;
        use tokio::io::AsyncReadExt;
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let addr: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        sock.bind(&addr.into()).unwrap();
        sock.listen(16).unwrap();
        sock.set_nonblocking(true).unwrap();
        let l = tokio::net::TcpListener::from_std(sock.into()).unwrap();
        let addr = l.local_addr().unwrap();
        let gate = std::sync::Arc::new(tokio::sync::Notify::new());
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let frames: std::sync::Arc<std::sync::Mutex<Vec<Bytes>>> = Default::default();
        let (g2, o2, f2) = (gate.clone(), open.clone(), frames.clone());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut s, _)) = l.accept().await {
                let (g3, o3, f3) = (g2.clone(), o2.clone(), f2.clone());
                conns.spawn(async move {
                    while !o3.load(Ordering::SeqCst) {
                        let _ =
                            tokio::time::timeout(Duration::from_millis(50), g3.notified()).await;
                    }
                    let mut buf = bytes::BytesMut::new();
                    let mut chunk = vec![0u8; 64 * 1024];
                    loop {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        while let Some(fr) = next_frame(&mut buf, Split::OctetCounting) {
                            f3.lock().unwrap().push(fr);
                        }
                    }
                });
            }
        });
        Gated {
            addr,
            gate,
            open,
            frames,
            task,
        }
    }

    /// Starts reading.
    pub fn open(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
        self.gate.notify_waiters();
    }

    pub fn frames(&self) -> Vec<Bytes> {
        self.frames.lock().unwrap().clone()
    }
}
