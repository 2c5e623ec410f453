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

const RETRY: &str = "plura.forwarder.retry";

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
    let (warm, a, b, c) = (0..100u64, 100..400u64, 400..1000u64, 1000..1200u64);
    let all = 0..c.end;

    let mut first_frames = Vec::new();
    let mut second: Option<Receiver> = None;
    let mut rates = (0.0, 0.0);
    run_until(cfg, async {
        // Warm-up: the group is joined and both connections are up.
        produce(&brokers, &samples(warm.clone())).await;
        assert!(wait_covers(|| steady.frames(), warm.clone(), Duration::from_secs(60)).await);
        // Before: both up.
        let t = Instant::now();
        produce(&brokers, &samples(a.clone())).await;
        assert!(
            wait_covers(|| steady.frames(), a.clone(), Duration::from_secs(60)).await,
            "steady: phase A"
        );
        rates.0 = (a.end - a.start) as f64 / t.elapsed().as_secs_f64();
        assert!(
            wait_covers(|| flaky.frames(), 0..a.end, Duration::from_secs(60)).await,
            "flaky: phase A"
        );
        // The SIEM goes away while idle (nothing of ours sits unread in its kernel buffer).
        first_frames = flaky.frames();
        drop(flaky);
        // Long enough for the sink's idle probe (1 s) to notice; frames written before that
        // would wait, unacknowledged, for the destination to come back.
        tokio::time::sleep(Duration::from_millis(1500)).await;

        // During the outage: 600 events, ten times its queue.
        let t = Instant::now();
        produce(&brokers, &samples(b.clone())).await;
        assert!(
            wait_covers(|| steady.frames(), b.clone(), Duration::from_secs(60)).await,
            "steady destination stalled by the dead one"
        );
        rates.1 = (b.end - b.start) as f64 / t.elapsed().as_secs_f64();
        // Nothing holds the main topics back while the destination is still down: what was
        // queued for it when it was parked was taken back and parked too.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut committed_during = 0;
        while Instant::now() < deadline {
            committed_during = committed(&brokers, "park")
                .values()
                .map(|o| o.unwrap_or(0))
                .sum::<i64>();
            if committed_during as u64 == b.end {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let parked_during = topic_records(&brokers, &format!("{RETRY}.flaky"));
        eprintln!(
            "while down: parked {parked_during}, main topics committed {committed_during} of {}",
            b.end
        );
        assert_eq!(
            committed_during as u64, b.end,
            "commits held back by the dead destination"
        );

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
    let committed: i64 = committed_total(&brokers, "park");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_destination_is_parked_after_park_after_ms_and_fed_back_once_it_reads_again() {
    init_logs();
    let kafka = start_kafka();
    let brokers = kafka.bootstrap_servers();
    // About 5 MB: more than the kernel's socket send buffer (up to 4 MiB) can swallow for the
    // stalled receiver, so its queue fills and stays full.
    const TOTAL: u64 = 20_000;
    let steady = Receiver::tcp(Split::OctetCounting).await.unwrap();
    let stalled = Gated::start();
    let toml = base_toml(&brokers, "stall").replace(
        "[forwarder]\n",
        "[forwarder]\nqueue_events = 64\npark_after_ms = 500\n",
    ) + &dest("steady", steady.addr())
        + &dest("stalled", stalled.addr);
    let cfg = config(&toml);
    let inst = Instance::start(cfg);
    let t = Instant::now();
    produce(&brokers, &samples(0..TOTAL)).await;
    let steady_ok = wait_covers(|| steady.frames(), 0..TOTAL, Duration::from_secs(60)).await;
    let steady_took = t.elapsed();
    let parked_while_stalled = topic_records(&brokers, &format!("{RETRY}.stalled"));
    let committed_while_stalled: i64 = committed_total(&brokers, "stall");
    assert!(
        steady_ok,
        "the steady destination was held up by the stalled one"
    );
    stalled.open();
    let back = wait_covers(|| stalled.frames(), 0..TOTAL, Duration::from_secs(90)).await;
    // Let the last commits happen.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let c: i64 = committed_total(&brokers, "stall");
        if c as u64 == TOTAL {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    inst.stop().await;
    assert_nothing_deleted(&brokers);
    let s = Tally::of(&stalled.frames());
    let parked = topic_records(&brokers, &format!("{RETRY}.stalled"));
    let unparked = committed_sum(&brokers, "stall.retry", &format!("{RETRY}.stalled"));
    let committed: i64 = committed_total(&brokers, "stall");
    eprintln!(
        "stall: steady got {TOTAL} in {:.2} s while the other was stalled; parked {parked_while_stalled} then, \
         main topics committed {committed_while_stalled} then (the stalled sink's queued frames hold the rest); \
         after: stalled got {} events, {} duplicates, parked {parked}, fed back {unparked}, committed {committed}",
        steady_took.as_secs_f64(),
        s.counts.len(),
        s.duplicates()
    );
    assert!(
        parked_while_stalled > 0,
        "the stalled destination was parked"
    );
    assert!(
        back,
        "stalled: missing {:?}",
        &s.missing(0..TOTAL)[..s.missing(0..TOTAL).len().min(20)]
    );
    assert_eq!(
        parked, unparked,
        "every parked event was fed back and committed"
    );
    assert_eq!(committed as u64, TOTAL);
    assert_eq!(Tally::of(&steady.frames()).duplicates(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_slower_than_the_input_is_parked_and_the_other_keeps_its_speed() {
    init_logs();
    let kafka = start_kafka();
    let brokers = kafka.bootstrap_servers();
    // About 5 MB; the slow receiver reads at most 0.4 MB/s, so it needs seconds more. (At
    // 1.6 MB/s the backlog could fit in the kernel's send buffer, up to 4 MB with autotuning,
    // and the destination was then never full for long enough to be parked.)
    const TOTAL: u64 = 20_000;
    let fast = Receiver::tcp(Split::OctetCounting).await.unwrap();
    let slow = Receiver::tcp_paced(Split::OctetCounting, 16 * 1024, Duration::from_millis(40))
        .await
        .unwrap();
    let toml = base_toml(&brokers, "slowpark").replace(
        "[forwarder]\n",
        "[forwarder]\nqueue_events = 256\npark_after_ms = 300\n",
    ) + &dest("fast", fast.addr())
        + &dest("slow", slow.addr());
    let inst = Instance::start(config(&toml));
    produce(&brokers, &samples(0..1)).await;
    assert!(
        wait_covers(|| fast.frames(), 0..1, Duration::from_secs(60)).await,
        "warm-up"
    );
    let t = Instant::now();
    produce(&brokers, &samples(1..TOTAL)).await;
    let fast_ok = wait_covers(|| fast.frames(), 0..TOTAL, Duration::from_secs(60)).await;
    let fast_took = t.elapsed();
    let slow_at_that_time = Tally::of(&slow.frames()).counts.len();
    let slow_ok = wait_covers(|| slow.frames(), 0..TOTAL, Duration::from_secs(120)).await;
    let slow_took = t.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    inst.stop().await;
    assert_nothing_deleted(&brokers);
    let parked = topic_records(&brokers, &format!("{RETRY}.slow"));
    let unparked = committed_sum(&brokers, "slowpark.retry", &format!("{RETRY}.slow"));
    let s = Tally::of(&slow.frames());
    eprintln!(
        "slow destination: fast got {TOTAL} in {:.2} s ({:.0} ev/s) while slow had {slow_at_that_time}; \
         slow got all in {:.2} s, {} duplicates; parked {parked}, fed back {unparked}",
        fast_took.as_secs_f64(),
        (TOTAL - 1) as f64 / fast_took.as_secs_f64(),
        slow_took.as_secs_f64(),
        s.duplicates()
    );
    assert!(fast_ok, "the fast destination did not get everything");
    assert!(slow_ok, "slow: missing {}", s.missing(0..TOTAL).len());
    assert!(parked > 0, "the slow destination was parked");
    assert_eq!(
        parked, unparked,
        "every parked event was fed back and committed"
    );
    assert_eq!(Tally::of(&fast.frames()).duplicates(), 0);
}
