//! Faults at the destination, through the whole pipeline (mock Kafka → forwarder → loopback):
//! a receiver that resets its connection every N frames, and a receiver too slow for the
//! input. Nothing is lost; duplicates and memory are counted and printed.

mod common;
mod delivery_util;

use std::time::{Duration, Instant};

use common::*;
use delivery_util::*;
use plura_forwarder::receiver::{Receiver, Split};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_resetting_every_n_frames_loses_nothing() {
    init_logs();
    let kafka = start_kafka();
    let brokers = kafka.bootstrap_servers();
    const TOTAL: u64 = 1500;
    let rx = Resetting::start(200, 5);
    let cfg = config(&(base_toml(&brokers, "resets") + &dest("siem", rx.addr)));
    let inst = Instance::start(cfg);
    produce(&brokers, &samples(0..TOTAL)).await;
    let covered = wait_covers(|| rx.frames(), 0..TOTAL, Duration::from_secs(90)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    inst.stop().await;
    assert_nothing_deleted(&brokers);
    let t = Tally::of(&rx.frames());
    let missing = t.missing(0..TOTAL);
    let parked = topic_records(&brokers, "plura.forwarder.retry.siem");
    eprintln!(
        "resets: {} connections, {} events, {} frames, {} duplicates, {} parked, missing {}",
        rx.connections.load(std::sync::atomic::Ordering::SeqCst),
        t.counts.len(),
        t.frames,
        t.duplicates(),
        parked,
        missing.len()
    );
    assert!(
        covered && missing.is_empty(),
        "lost {} events: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    // Each reset opens a new connection (a reset may come after more than 200 frames: what
    // the kernel held is taken too).
    assert!(
        rx.connections.load(std::sync::atomic::Ordering::SeqCst) >= 4,
        "the resets happened"
    );
    let committed: i64 = committed_total(&brokers, "resets");
    assert_eq!(
        committed as u64, TOTAL,
        "everything committed once delivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_throttles_the_consumer_with_bounded_memory_then_catches_up() {
    init_logs();
    let kafka = start_kafka();
    let brokers = kafka.bootstrap_servers();
    const TOTAL: u64 = 40_000;
    const QUEUE: usize = 256;
    // At most 3 MB/s; the frames are about 350 B (14 MB in all): seconds of backlog, more
    // than the kernel's socket buffers can take.
    let rx = Receiver::tcp_paced(Split::OctetCounting, 16 * 1024, Duration::from_millis(5))
        .await
        .unwrap();
    // Parking for slowness off: this is the backpressure path alone.
    let toml = base_toml(&brokers, "slow").replace(
        "[forwarder]\n",
        &format!("[forwarder]\nqueue_events = {QUEUE}\npark_after_ms = 600000\n"),
    ) + &dest("siem", rx.addr());
    let cfg = config(&toml);
    let batch = cfg.forwarder.batch_max_events;
    produce(&brokers, &samples(0..TOTAL)).await;
    let rss_before = rss_kib();
    let t0 = Instant::now();
    let inst = Instance::start(cfg);
    let mut max_in_flight = 0;
    let mut rss_peak = rss_before;
    let mut first = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !Tally::of(&rx.frames()).has_all(0..TOTAL) && Instant::now() < deadline {
        max_in_flight = max_in_flight.max(inst.in_flight());
        if first.is_none() && rx.count() > 0 {
            first = Some(Instant::now());
        }
        if std::env::var_os("DELIVERY_DEBUG").is_some() {
            if let Some(tr) = inst.trackers.get() {
                let v: Vec<_> = tr
                    .all()
                    .iter()
                    .map(|t| (t.partition(), t.in_flight(), t.done_upto()))
                    .collect();
                eprintln!("{:?} got {} {v:?}", t0.elapsed(), rx.count());
            }
        }
        rss_peak = rss_peak.max(rss_kib());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = t0.elapsed();
    let delivering = first.map_or(took, |f| f.elapsed());
    tokio::time::sleep(Duration::from_millis(300)).await;
    inst.stop().await;
    let rss_after = rss_kib();
    assert_nothing_deleted(&brokers);
    let t = Tally::of(&rx.frames());
    eprintln!(
        "slow receiver: {} events in {:.1} s, {:.1} s from the first ({:.0} ev/s), {} duplicates; max events in flight {max_in_flight} \
         (queue {QUEUE}, batch {batch}); VmRSS before {rss_before} KiB, peak {rss_peak} KiB, after {rss_after} KiB",
        t.counts.len(),
        took.as_secs_f64(),
        delivering.as_secs_f64(),
        t.counts.len() as f64 / delivering.as_secs_f64(),
        t.duplicates()
    );
    assert_eq!(t.missing(0..TOTAL), Vec::<u64>::new(), "lost events");
    // Held = queued + the batch being written + what the kernel's socket send buffer took
    // (Linux autotunes it up to tcp_wmem's maximum, 4 MiB by default), never the backlog.
    let frames = rx.frames();
    let avg = frames.iter().map(|f| f.len()).sum::<usize>() / frames.len().max(1);
    let kernel = (4 << 20) / avg.max(1);
    eprintln!("bound: queue {QUEUE} + batch {batch} + socket buffer {kernel} frames of {avg} B");
    assert!(
        max_in_flight <= QUEUE + batch + kernel * 6 / 5 && max_in_flight < (TOTAL as usize) / 2,
        "the consumer read ahead of the slow receiver: {max_in_flight} events in flight"
    );
    assert_eq!(
        topic_records(&brokers, "plura.forwarder.retry.siem"),
        0,
        "nothing parked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_longer_than_max_poll_interval_pauses_the_consumer_which_stays_in_its_group() {
    init_logs();
    let kafka = start_kafka();
    let brokers = kafka.bootstrap_servers();
    // About 5 MB: more than the kernel's socket buffers take, so the queue fills and stays full.
    const TOTAL: u64 = 20_000;
    let rx = Gated::start();
    // Parking for slowness off: the pipeline must wait, so the consumer must pause and keep
    // being polled, or librdkafka would leave the group after max.poll.interval.ms.
    let toml = base_toml(&brokers, "stallpoll")
        .replace(
            "[forwarder]\n",
            "[forwarder]\nqueue_events = 64\npark_after_ms = 600000\n",
        )
        .replace(
            "[kafka.properties]\n",
            "[kafka.properties]\n\"max.poll.interval.ms\" = \"7000\"\n",
        )
        + &dest("siem", rx.addr);
    let inst = Instance::start(config(&toml));
    produce(&brokers, &samples(0..TOTAL)).await;
    // Joined and stuck: the queue is full.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !inst.trackers.get().is_some_and(|t| t.joined()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let generation = inst.trackers.get().expect("joined").generation();
    let stalled_for = Duration::from_secs(10);
    let mut max_in_flight = 0;
    let until = Instant::now() + stalled_for;
    while Instant::now() < until {
        max_in_flight = max_in_flight.max(inst.in_flight());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let generation_after = inst.trackers.get().expect("joined").generation();
    rx.open();
    let covered = wait_covers(|| rx.frames(), 0..TOTAL, Duration::from_secs(90)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    inst.stop().await;
    assert_nothing_deleted(&brokers);
    let t = Tally::of(&rx.frames());
    eprintln!(
        "stall {:?} > max.poll.interval.ms 7 s: assignment generation {generation} → {generation_after}; \
         max in flight {max_in_flight}; then {} events, {} duplicates",
        stalled_for,
        t.counts.len(),
        t.duplicates()
    );
    assert_eq!(
        generation, generation_after,
        "no rebalance: the consumer stayed in its group"
    );
    assert!(covered, "lost {} events", t.missing(0..TOTAL).len());
    assert_eq!(t.duplicates(), 0);
    assert_eq!(
        topic_records(&brokers, "plura.forwarder.retry.siem"),
        0,
        "nothing parked"
    );
    let committed: i64 = committed_total(&brokers, "stallpoll");
    assert_eq!(committed as u64, TOTAL);
}
