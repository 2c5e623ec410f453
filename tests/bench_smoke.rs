//! The load harness runs end to end on a small load (figures are not checked here: speed is
//! the harness's job, not a test's). It keeps `bench` from rotting between measurements.

use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_plura-forwarder");

#[test]
fn harness_runs_every_kind_of_measurement() {
    let start = Instant::now();
    let out = Command::new(BIN)
        .args([
            "bench",
            "--events",
            "2000",
            "--partitions",
            "4",
            "--runs",
            "1",
            "--only",
            "baseline-tcp,product-tcp-rfc5424,product-tls-rfc5425,product-fanout-4,product-tcp-2-replicas",
            "--latency-secs",
            "1",
            "--latency-load",
            "0.01",
            "--memory-secs",
            "2",
            "--memory-backlogs",
            "2",
        ])
        .output()
        .expect("bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let received = |scenario: &str| -> usize {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(scenario))
            .unwrap_or_else(|| panic!("no row for {scenario}:\n{stdout}"));
        row.split_whitespace()
            .last()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count in {row}"))
    };
    assert_eq!(received("baseline-tcp"), 2000, "{stdout}");
    assert_eq!(received("product-tcp-rfc5424"), 2000, "{stdout}");
    assert_eq!(received("product-tls-rfc5425"), 2000, "{stdout}");
    assert!(
        stdout.contains("TLS RFC 5425 / minimal TCP forwarder"),
        "{stdout}"
    );
    // Two replicas split the partitions only when both join within the mock broker's initial
    // rebalance delay (3 s); a replica that starts later under CI load waits out incremental
    // rebalances longer than the harness waits, so only its running is checked here.
    assert!(received("product-tcp-2-replicas") > 0, "{stdout}");
    assert!(
        stdout.contains("TCP RFC 5424 / minimal forwarder"),
        "{stdout}"
    );
    assert!(stdout.contains("scale-out: 2 replicas / 1"), "{stdout}");
    assert!(stdout.contains("% busy with 2 replicas"), "{stdout}");
    assert_eq!(received("product-fanout-4"), 4 * 2000, "{stdout}");
    assert!(stdout.contains("fan-out cost: 1 dest rate"), "{stdout}");
    assert!(stdout.contains("fan-out CPU: 4-dest / 1 dest"), "{stdout}");
    let (got, want) = got_of(&stdout, "latency at", "received ");
    assert_eq!(got, want, "every live event delivered:\n{stdout}");
    assert!(stdout.contains("after the first 1 s: p50"), "{stdout}");
    let ack = stdout
        .lines()
        .find(|l| l.contains("send to broker ack"))
        .unwrap_or_else(|| panic!("no producer-side latency:\n{stdout}"));
    assert!(
        !ack.contains("NaN"),
        "acknowledgement times measured: {ack}"
    );
    assert!(stdout.contains("memory, input"), "{stdout}");
    // Recovery: once the receiver reads at full speed, every event produced arrives (this load
    // fits the mock's retention, so parked events all come back).
    let (got, want) = got_of(&stdout, "memory after recovery", " had ");
    assert!(
        got >= want,
        "every event of both backlogs delivered after recovery:\n{stdout}"
    );
    let after = stdout
        .lines()
        .find(|l| l.starts_with("memory after recovery"))
        .and_then(|l| l.split("idle): ").nth(1)?.split(" MiB").next())
        .unwrap_or_else(|| panic!("no memory after recovery:\n{stdout}"));
    let each: Vec<f64> = after.split(", ").filter_map(|mb| mb.parse().ok()).collect();
    assert_eq!(each.len(), 2, "one figure per backlog: {after}");
    assert!(start.elapsed() < Duration::from_secs(240));
}

/// The `X of Y` after `marker` on the line of `stdout` that starts with `line`.
fn got_of(stdout: &str, line: &str, marker: &str) -> (u64, u64) {
    let l = stdout
        .lines()
        .find(|l| l.starts_with(line))
        .unwrap_or_else(|| panic!("no line {line:?}:\n{stdout}"));
    let (_, tail) = l.split_once(marker).expect("marker");
    let (got, rest) = tail.split_once(" of ").expect("of");
    let want: String = rest.chars().take_while(char::is_ascii_digit).collect();
    (
        got.parse().unwrap_or_else(|_| panic!("count in {l}")),
        want.parse().unwrap_or_else(|_| panic!("count in {l}")),
    )
}
