//! Processes and groups (delivery.md §6, §7): the real binary killed with SIGKILL mid-stream
//! and restarted; a second instance joining and leaving the group under load; two instances
//! sharing one topic. The union of what the receivers got covers every event; duplicates are
//! counted and printed.

mod common;
mod delivery_util;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use delivery_util::*;
use plura_forwarder::receiver::{Receiver, Split};

const BIN: &str = env!("CARGO_BIN_EXE_plura-forwarder");

fn spawn_child(cfg: &std::path::Path, log: &std::path::Path) -> Child {
    Command::new(BIN)
        .args(["run", "-c"])
        .arg(cfg)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "info,librdkafka=warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("spawn the forwarder")
}

/// Waits for the child to exit, at most `limit`; kills it (and fails) otherwise.
fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the forwarder did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_killed_with_sigkill_mid_stream_and_restarted_loses_nothing() {
    let kafka = start_kafka();
    let brokers = kafka.bootstrap_servers();
    const TOTAL: u64 = 6000;
    // About 400 KB/s: the stream takes a few seconds, so the kill lands mid-stream.
    let rx = Receiver::tcp_paced(Split::OctetCounting, 4096, Duration::from_millis(10))
        .await
        .unwrap();
    produce(&brokers, &samples(0..TOTAL)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("forwarder.toml");
    std::fs::write(
        &cfg,
        base_toml(&brokers, "kill9") + &dest("siem", rx.addr()),
    )
    .unwrap();

    let mut first = spawn_child(&cfg, &dir.path().join("first.log"));
    let got = rx.wait_for(1500, Duration::from_secs(60)).await;
    assert!(got >= 1500, "the first process delivered only {got}");
    first.kill().expect("SIGKILL");
    let _ = first.wait();
    let at_kill = rx.count();
    let committed_at_kill: i64 = committed_total(&brokers, "kill9");

    let mut second = spawn_child(&cfg, &dir.path().join("second.log"));
    let covered = wait_covers(|| rx.frames(), 0..TOTAL, Duration::from_secs(90)).await;
    // The dead process's kernel may well have delivered everything it had written (its socket
    // buffer outlives it): wait until the second one has taken over and committed it all.
    wait_committed(&brokers, "kill9", TOTAL, Duration::from_secs(90)).await;
    // SAFETY: plain kill(2) on our own child.
    let rc = unsafe { libc::kill(second.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let status = wait_exit(&mut second, Duration::from_secs(30));
    if !covered || !status.success() || std::env::var_os("DELIVERY_DEBUG").is_some() {
        for name in ["first.log", "second.log"] {
            let text = std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
            eprintln!("--- {name} (last lines)");
            for l in text
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                eprintln!("{l}");
            }
        }
    }
    assert_nothing_deleted(&brokers);
    let t = Tally::of(&rx.frames());
    let missing = t.missing(0..TOTAL);
    eprintln!(
        "kill -9: {at_kill} frames before the kill (committed {committed_at_kill}), {} frames in all, \
         {} events, {} duplicates, missing {}",
        t.frames,
        t.counts.len(),
        t.duplicates(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "lost {} events: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    assert!(
        status.success(),
        "the second process exits 0 on SIGTERM: {status:?}"
    );
    let committed: i64 = committed_total(&brokers, "kill9");
    assert_eq!(
        committed as u64, TOTAL,
        "everything committed after the clean stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_joining_and_leaving_under_load_loses_nothing() {
    init_logs();
    let kafka = start_kafka();
    let brokers = kafka.bootstrap_servers();
    const TOTAL: u64 = 6000;
    let rx = Receiver::tcp_paced(Split::OctetCounting, 4096, Duration::from_millis(10))
        .await
        .unwrap();
    produce(&brokers, &samples(0..TOTAL)).await;
    let cfg = config(&(base_toml(&brokers, "rebalance") + &dest("siem", rx.addr())));
    let a = Instance::start(cfg.clone());
    rx.wait_for(1000, Duration::from_secs(60)).await;
    let b = Instance::start(cfg.clone());
    // B joins (cooperative rebalance: A gives up some partitions after finishing them) ...
    rx.wait_for(2500, Duration::from_secs(60)).await;
    // ... and leaves while events are still flowing.
    b.stop().await;
    let covered = wait_covers(|| rx.frames(), 0..TOTAL, Duration::from_secs(90)).await;
    // Under load the group may still be rebalancing after B left (commits then fail with
    // RebalanceInProgress and are retried): give A's commits time to land before stopping it.
    wait_committed(&brokers, "rebalance", TOTAL, Duration::from_secs(60)).await;
    a.stop().await;
    assert_nothing_deleted(&brokers);
    let t = Tally::of(&rx.frames());
    let missing = t.missing(0..TOTAL);
    eprintln!(
        "rebalance: {} frames, {} events, {} duplicates, {} connections, missing {}",
        t.frames,
        t.counts.len(),
        t.duplicates(),
        rx.connections(),
        missing.len()
    );
    assert!(
        covered && missing.is_empty(),
        "lost {} events: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    assert!(rx.connections() >= 2, "the second instance took part");
    let committed: i64 = committed_total(&brokers, "rebalance");
    assert_eq!(committed as u64, TOTAL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_topic_cover_every_event_between_them() {
    init_logs();
    let kafka = start_kafka();
    let brokers = kafka.bootstrap_servers();
    const TOTAL: u64 = 4000;
    let rx1 = Receiver::tcp(Split::OctetCounting).await.unwrap();
    let rx2 = Receiver::tcp(Split::OctetCounting).await.unwrap();
    let one = Instance::start(config(
        &(base_toml(&brokers, "scale") + &dest("siem", rx1.addr())),
    ));
    let two = Instance::start(config(
        &(base_toml(&brokers, "scale") + &dest("siem", rx2.addr())),
    ));
    // Produce while both run (they join at about the same time).
    produce(&brokers, &samples(0..TOTAL)).await;
    let both = || [rx1.frames(), rx2.frames()].concat();
    let covered = wait_covers(both, 0..TOTAL, Duration::from_secs(90)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    one.stop().await;
    two.stop().await;
    assert_nothing_deleted(&brokers);
    let (t1, t2) = (Tally::of(&rx1.frames()), Tally::of(&rx2.frames()));
    let all = Tally::of(&both());
    let missing = all.missing(0..TOTAL);
    eprintln!(
        "scale-out: instance one {} events, instance two {} events, union {} events, {} duplicates, missing {}",
        t1.counts.len(),
        t2.counts.len(),
        all.counts.len(),
        all.duplicates(),
        missing.len()
    );
    assert!(
        covered && missing.is_empty(),
        "lost {} events",
        missing.len()
    );
    assert!(t1.frames > 0 && t2.frames > 0, "both instances worked");
    let committed: i64 = committed_total(&brokers, "scale");
    assert_eq!(committed as u64, TOTAL);
}
