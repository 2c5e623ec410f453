//! Isolation by parking (delivery.md §3): a destination that goes down is parked to its retry
//! topic, the other destination keeps its speed, and once the destination is back the retry
//! consumer feeds it everything it missed. Counts are exact; rates are printed, not asserted
//! (the machine is shared: performance.md).

mod common;
mod delivery_util;

use std::time::{Duration, Instant};

use common::*;
use delivery_util::*;
use plura_forwarder::receiver::{Receiver, Split};
use plura_forwarder::source::embedded::EmbeddedKafka;

const RETRY: &str = "plura.forwarder.retry";

fn start_kafka() -> EmbeddedKafka {
    let mut topics: Vec<(&str, i32)> = TOPICS.iter().map(|t| (*t, PARTITIONS)).collect();
    topics.push(("plura.forwarder.dlq", 1));
    EmbeddedKafka::start(&topics).expect("mock cluster")
}

fn dest(name: &str, addr: std::net::SocketAddr) -> String {
    format!(
        "[[syslog]]\nname = \"{name}\"\nprotocol = \"tcp\"\nformat = \"rfc5424\"\ninclude_raw_log = true\naddress = \"{addr}\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_destination_is_parked_and_fed_back_while_the_other_keeps_its_speed() {
    init_logs();
    let kafka = start_kafka();
    let brokers = kafka.bootstrap_servers();
    let steady = Receiver::tcp(Split::OctetCounting).await.unwrap();
    let flaky = Receiver::tcp(Split::OctetCounting).await.unwrap();
    let flaky_addr = flaky.addr();
    // A small queue: without parking, the dead destination would stop the pipeline after 64.
    let toml = base_toml(&brokers, "park")
        .replace("[forwarder]\n", "[forwarder]\nqueue_events = 64\n")
        + &dest("steady", steady.addr())
        + &dest("flaky", flaky_addr);
    let cfg = config(&toml);
    let (a, b, c) = (0..300u64, 300..900u64, 900..1100u64);
    let all = 0..c.end;

    let mut first_frames = Vec::new();
    let mut second: Option<Receiver> = None;
    let mut rates = (0.0, 0.0);
    run_until(cfg, async {
        // Before: both up.
        let t = Instant::now();
        produce(&brokers, &samples(a.clone())).await;
        assert!(
            wait_covers(|| steady.frames(), a.clone(), Duration::from_secs(60)).await,
            "steady: phase A"
        );
        rates.0 = (a.end - a.start) as f64 / t.elapsed().as_secs_f64();
        assert!(
            wait_covers(|| flaky.frames(), a.clone(), Duration::from_secs(60)).await,
            "flaky: phase A"
        );
        // The SIEM goes away while idle (nothing of ours sits unread in its kernel buffer).
        first_frames = flaky.frames();
        drop(flaky);
        tokio::time::sleep(Duration::from_millis(300)).await;

        // During the outage: 600 events, ten times its queue.
        let t = Instant::now();
        produce(&brokers, &samples(b.clone())).await;
        assert!(
            wait_covers(|| steady.frames(), b.clone(), Duration::from_secs(60)).await,
            "steady destination stalled by the dead one"
        );
        rates.1 = (b.end - b.start) as f64 / t.elapsed().as_secs_f64();
        let parked_during = topic_records(&brokers, &format!("{RETRY}.flaky"));
        eprintln!("parked while down: {parked_during}");

        // Back: everything it missed arrives, plus what comes next.
        let back = Receiver::tcp_on(flaky_addr, Split::OctetCounting)
            .await
            .unwrap();
        produce(&brokers, &samples(c.clone())).await;
        assert!(
            wait_covers(|| steady.frames(), c.clone(), Duration::from_secs(60)).await,
            "steady: phase C"
        );
        let covered = wait_covers(
            || [first_frames.clone(), back.frames()].concat(),
            all.clone(),
            Duration::from_secs(90),
        )
        .await;
        second = Some(back);
        assert!(covered, "flaky: not everything came back");
        // Let the last acknowledgements and commits happen.
        tokio::time::sleep(Duration::from_millis(500)).await;
    })
    .await;
    assert_nothing_deleted(&brokers);

    let s = Tally::of(&steady.frames());
    assert_eq!(
        s.missing(all.clone()),
        Vec::<u64>::new(),
        "steady lost events"
    );
    assert_eq!(s.duplicates(), 0, "steady got duplicates");
    let back = second.expect("second receiver");
    let f = Tally::of(&[first_frames, back.frames()].concat());
    assert_eq!(
        f.missing(all.clone()),
        Vec::<u64>::new(),
        "flaky lost events"
    );
    let parked = topic_records(&brokers, &format!("{RETRY}.flaky"));
    let unparked = committed_sum(&brokers, "park.retry", &format!("{RETRY}.flaky"));
    assert!(parked > 0, "nothing was parked");
    assert_eq!(
        parked, unparked,
        "every parked event was fed back and committed"
    );
    assert_eq!(
        topic_records(&brokers, &format!("{RETRY}.steady")),
        0,
        "steady was never parked"
    );
    let committed: i64 = committed(&brokers, "park")
        .values()
        .map(|o| o.unwrap_or(0))
        .sum();
    assert_eq!(
        committed as u64, all.end,
        "the main topics are fully committed"
    );
    eprintln!(
        "park: steady {:.0} ev/s before, {:.0} ev/s during the outage (ratio {:.2}); \
         flaky: {} events, {} duplicates, parked {parked}, fed back {unparked}; steady duplicates {}",
        rates.0,
        rates.1,
        rates.1 / rates.0,
        f.counts.len(),
        f.duplicates(),
        s.duplicates()
    );
}
