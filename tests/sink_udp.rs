//! UDP sink against a real socket on 127.0.0.1: datagrams byte-equal, acked, batched.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use plura_forwarder::ack::{NoStore, PartitionTracker};
use plura_forwarder::render::settings::Protocol;
use plura_forwarder::sink::{self, Frame, SinkSpec, SinkState};
use tokio::net::UdpSocket;
use tokio::time::{timeout, Instant};

fn spec(address: String) -> SinkSpec {
    SinkSpec {
        name: "udp-test".into(),
        protocol: Protocol::Udp,
        address,
        queue_events: 4096,
        batch_max_events: 64,
        batch_max_bytes: 1 << 20,
        batch_linger: Duration::from_millis(5),
        connect_timeout: Duration::from_secs(2),
        tls: None,
    }
}

fn payload(i: i64) -> Vec<u8> {
    // Varied sizes, including one big datagram, so byte equality means something.
    let pad = match i % 7 {
        0 => 0,
        3 => 9000,
        _ => (i as usize * 37) % 900,
    };
    let mut v = format!("<13>1 2026-01-01T00:00:00Z host app - - - seq={i:06} ").into_bytes();
    v.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, pad));
    v
}

/// A receiving socket with as big a buffer as the system allows.
fn receiver() -> UdpSocket {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    s.set_recv_buffer_size(4 << 20).unwrap();
    s.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    s.set_nonblocking(true).unwrap();
    UdpSocket::from_std(s.into()).unwrap()
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

#[tokio::test]
async fn udp_frames_arrive_as_datagrams_byte_equal_acked_and_batched() {
    timeout(Duration::from_secs(30), async {
        let rx = receiver();
        let addr = rx.local_addr().unwrap();
        let sink = sink::spawn(spec(addr.to_string()));
        let tracker = PartitionTracker::new("t", 0, Arc::new(NoStore));
        const N: i64 = 1200;
        const ROUND: i64 = 40;
        let mut buf = vec![0u8; 70_000];
        let mut got = Vec::new();
        // Rounds small enough for the receive buffer, so loopback drops nothing.
        for round in 0..N / ROUND {
            for i in round * ROUND..(round + 1) * ROUND {
                let ack = tracker.dispatch(i, 1).pop().unwrap();
                let f = Frame {
                    bytes: Bytes::from(payload(i)),
                    ack,
                    event_time_ms: Some(0),
                };
                sink.send(f).await.unwrap();
            }
            while (got.len() as i64) < (round + 1) * ROUND {
                let n = timeout(Duration::from_secs(5), rx.recv(&mut buf))
                    .await
                    .unwrap_or_else(|_| panic!("only {} datagrams arrived", got.len()))
                    .unwrap();
                got.push(buf[..n].to_vec());
            }
        }
        assert_eq!(got.len() as i64, N);
        for (i, d) in got.iter().enumerate() {
            assert_eq!(d, &payload(i as i64), "datagram {i}");
        }
        assert!(
            wait_until(Duration::from_secs(5), || tracker.done_upto()
                == Some(N - 1))
            .await
        );
        let st = sink.status();
        println!("udp status: {st:?}");
        assert_eq!(st.state, SinkState::Connected);
        assert_eq!(st.written, N as u64);
        assert_eq!(st.acked, N as u64);
        assert!(
            st.batches < N as u64 / 4,
            "frames are batched: {} batches",
            st.batches
        );
        assert!(
            st.send_calls < N as u64 / 4,
            "sendmmsg sends many datagrams per call: {}",
            st.send_calls
        );
        let report = timeout(Duration::from_secs(2), sink.close(Duration::from_secs(1)))
            .await
            .unwrap();
        assert_eq!(report.unacked, 0);
        assert!(!report.timed_out);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn udp_without_a_receiver_still_hands_frames_to_the_kernel() {
    timeout(Duration::from_secs(20), async {
        // A port nobody listens on: ICMP port unreachable comes back and must not stall us.
        let probe = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let sink = sink::spawn(spec(addr.to_string()));
        let tracker = PartitionTracker::new("t", 0, Arc::new(NoStore));
        for i in 0..300 {
            let ack = tracker.dispatch(i, 1).pop().unwrap();
            sink.send(Frame {
                bytes: Bytes::from(payload(i)),
                ack,
                event_time_ms: None,
            })
            .await
            .unwrap();
            if i % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        assert!(wait_until(Duration::from_secs(10), || tracker.done_upto() == Some(299)).await);
        let report = sink.close(Duration::from_secs(1)).await;
        println!("udp refused: {report:?}");
        assert_eq!(report.unacked, 0);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn udp_close_flushes_the_queue() {
    timeout(Duration::from_secs(20), async {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut s = spec(rx.local_addr().unwrap().to_string());
        s.batch_linger = Duration::from_secs(10);
        let sink = sink::spawn(s);
        let tracker = PartitionTracker::new("t", 0, Arc::new(NoStore));
        for i in 0..10 {
            let ack = tracker.dispatch(i, 1).pop().unwrap();
            sink.try_send(Frame {
                bytes: Bytes::from(payload(i)),
                ack,
                event_time_ms: None,
            })
            .unwrap();
        }
        let t0 = Instant::now();
        let report = sink.close(Duration::from_secs(5)).await;
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "close does not wait for the linger"
        );
        assert_eq!(report.unacked, 0);
        assert_eq!(tracker.done_upto(), Some(9));
        let mut buf = vec![0u8; 70_000];
        for i in 0..10 {
            let n = timeout(Duration::from_secs(2), rx.recv(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&buf[..n], &payload(i)[..]);
        }
    })
    .await
    .unwrap();
}

/// Not a timed assertion: prints datagrams/s handed to the kernel by one UDP destination.
/// `cargo test --test sink_udp udp_throughput -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, run by hand"]
async fn udp_throughput() {
    timeout(Duration::from_secs(120), async {
        let rx = receiver();
        let addr = rx.local_addr().unwrap();
        let mut s = spec(addr.to_string());
        s.queue_events = 65536;
        s.batch_max_events = 1024;
        let sink = sink::spawn(s);
        let tracker = PartitionTracker::new("t", 0, Arc::new(NoStore));
        const N: i64 = 300_000;
        let frame = Bytes::from(vec![b'x'; 400]);
        let t0 = Instant::now();
        for i in 0..N {
            let ack = tracker.dispatch(i, 1).pop().unwrap();
            sink.send(Frame { bytes: frame.clone(), ack, event_time_ms: None }).await.unwrap();
        }
        assert!(wait_until(Duration::from_secs(60), || tracker.done_upto() == Some(N - 1)).await);
        let took = t0.elapsed();
        let st = sink.status();
        println!(
            "udp: {N} datagrams of 400 B handed to the kernel in {took:?}: {:.0}/s; {} sendmmsg calls",
            N as f64 / took.as_secs_f64(),
            st.send_calls
        );
        drop(rx);
        sink.close(Duration::from_secs(1)).await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn udp_oversize_datagram_is_dropped_without_stalling() {
    timeout(Duration::from_secs(20), async {
        let rx = receiver();
        let sink = sink::spawn(spec(rx.local_addr().unwrap().to_string()));
        let tracker = PartitionTracker::new("t", 0, Arc::new(NoStore));
        let sizes = [100usize, 70_000, 200];
        for (i, size) in sizes.iter().enumerate() {
            let ack = tracker.dispatch(i as i64, 1).pop().unwrap();
            let f = Frame {
                bytes: Bytes::from(vec![b'z'; *size]),
                ack,
                event_time_ms: None,
            };
            sink.send(f).await.unwrap();
        }
        let mut buf = vec![0u8; 70_000];
        let a = timeout(Duration::from_secs(5), rx.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let b = timeout(Duration::from_secs(5), rx.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (a, b),
            (100, 200),
            "the datagram too large for UDP is skipped"
        );
        assert!(wait_until(Duration::from_secs(5), || tracker.done_upto() == Some(2)).await);
        let report = sink.close(Duration::from_secs(1)).await;
        assert_eq!(report.unacked, 0);
    })
    .await
    .unwrap();
}
