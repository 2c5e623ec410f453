//! Hot reload of the running service (`app::serve`): an invalid file is refused with its errors
//! and the running configuration keeps delivering; a valid one swaps destinations under load —
//! the destination that stays gets every event (nothing lost), the removed one stops, the added
//! one starts — and `config_reloads_total` counts both outcomes.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use plura_forwarder::receiver::{Receiver, Split};
use plura_forwarder::source::embedded::EmbeddedKafka;

fn seqs(r: &Receiver) -> BTreeSet<u64> {
    r.frames().iter().filter_map(|f| seq_of(f)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_refuses_a_bad_file_and_swaps_destinations_without_loss() {
    let mut topics: Vec<(&str, i32)> = TOPICS.iter().map(|t| (*t, PARTITIONS)).collect();
    topics.push(("plura.forwarder.dlq", 1));
    for d in ["stays", "removed", "added"] {
        topics.push((
            Box::leak(format!("plura.forwarder.retry.{d}").into_boxed_str()),
            1,
        ));
    }
    let kafka = EmbeddedKafka::start(&topics).unwrap();
    let brokers = kafka.bootstrap_servers();
    let (stays, removed, added) = (
        Receiver::tcp(Split::OctetCounting).await.unwrap(),
        Receiver::tcp(Split::OctetCounting).await.unwrap(),
        Receiver::tcp(Split::OctetCounting).await.unwrap(),
    );
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let token = "reload-token";
    std::env::set_var("PLURA_TEST_RELOAD_TOKEN", token);
    let head = base_toml(&brokers, "reload").replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{admin}\"\ntoken_env = \"PLURA_TEST_RELOAD_TOKEN\""),
    ) + &format!(
        "[compliance]\nmode = \"all\"\nmapping_file = \"{}/config/compliance.toml\"\n",
        env!("CARGO_MANIFEST_DIR")
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("forwarder.toml");
    std::fs::write(
        &path,
        head.clone() + &dest("stays", stays.addr()) + &dest("removed", removed.addr()),
    )
    .unwrap();
    let cfg = plura_forwarder::config::load(&path).expect("valid config");

    let all = samples(0..300);
    let (first, rest) = all.split_at(100);
    let (second, third) = rest.split_at(100);
    produce(&brokers, first).await;

    let stop = tokio_util::sync::CancellationToken::new();
    let serve = plura_forwarder::app::serve(cfg, stop.clone());
    let script = async {
        assert_eq!(stays.wait_for(100, Duration::from_secs(60)).await, 100);
        assert_eq!(removed.wait_for(100, Duration::from_secs(60)).await, 100);

        // An invalid file: refused with its errors; the running configuration keeps going.
        std::fs::write(
            &path,
            head.clone() + "[[syslog]]\nname = \"x\"\naddress = \"10.0.0.5\"\n",
        )
        .unwrap();
        let (status, body) =
            tokio::task::spawn_blocking(move || http(admin, "POST", "/api/reload", Some(token)))
                .await
                .unwrap();
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("missing port"), "{body}");
        produce(&brokers, second).await;
        assert_eq!(stays.wait_for(200, Duration::from_secs(60)).await, 200);
        assert_eq!(removed.wait_for(200, Duration::from_secs(60)).await, 200);

        // A valid file: `removed` goes, `added` comes, `stays` stays; under load.
        std::fs::write(
            &path,
            head.clone() + &dest("stays", stays.addr()) + &dest("added", added.addr()),
        )
        .unwrap();
        let producing = produce(&brokers, third);
        let reloading =
            tokio::task::spawn_blocking(move || http(admin, "POST", "/api/reload", Some(token)));
        let ((), reloaded) = tokio::join!(producing, reloading);
        let (status, body) = reloaded.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains("\"added\"") && !body.contains("\"removed\""),
            "{body}"
        );

        let want_all: BTreeSet<u64> = (0..300).collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while seqs(&stays) != want_all && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (_, metrics) =
            tokio::task::spawn_blocking(move || http(admin, "GET", "/metrics", Some(token)))
                .await
                .unwrap();
        stop.cancel();
        metrics
    };
    let (result, metrics) = tokio::join!(serve, script);
    result.expect("service");
    assert_nothing_deleted(&brokers);

    let want_all: BTreeSet<u64> = (0..300).collect();
    assert_eq!(
        seqs(&stays),
        want_all,
        "the destination that stays loses nothing across the reload"
    );
    let got_added = seqs(&added);
    let third_seqs: BTreeSet<u64> = (200..300).collect();
    assert!(
        third_seqs.is_subset(&got_added),
        "the added destination gets what came after the reload"
    );
    assert!(
        got_added
            .iter()
            .all(|s| *s >= 200 || stays.frames().len() > 300),
        "before the reload only redeliveries"
    );
    let got_removed = seqs(&removed);
    let after: Vec<_> = got_removed.iter().filter(|s| **s >= 200).collect();
    assert!(
        got_removed.len() >= 200,
        "it had every event before the reload"
    );
    // Events of the third batch consumed before the drain may still reach it; none after.
    assert!(
        after.len() < 100,
        "the removed destination stopped: it got {} of the last 100",
        after.len()
    );
    assert!(
        metrics.contains("plura_forwarder_config_reloads_total{outcome=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("plura_forwarder_config_reloads_total{outcome=\"error\"} 1"),
        "{metrics}"
    );
    // Compliance totals are summed when `/metrics` is rendered, across the reload too.
    let hits: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("plura_forwarder_compliance_hits_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(hits > 0.0, "no compliance hits on /metrics: {metrics}");
    eprintln!("reload: compliance_hits_total summed over controls: {hits}");
    eprintln!(
        "reload: stays {} frames for 300 events, removed got {} of the last 100, added got {}",
        stays.frames().len(),
        after.len(),
        got_added.len()
    );
}
