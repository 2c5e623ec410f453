//! The whole pipeline against librdkafka's mock cluster and real sockets on 127.0.0.1:
//! every event of all 24 (log type, category) pairs reaches exactly the destinations that
//! want it, once, byte-equal to what the renderer (and so `render`) produces; a restart
//! resumes at the committed offset; broken events are dead-lettered and the pipeline goes on.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::BytesMut;
use chrono::{Datelike, NaiveDateTime, Utc};
use common::*;
use plura_forwarder::event::{decode, DecodeOptions};
use plura_forwarder::receiver::{Receiver, Split};
use plura_forwarder::render::settings::Format;
use plura_forwarder::render::{RenderContext, Rendered, Renderer};
use plura_forwarder::sample::group_of;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message};
use serde_json::Value;

/// The send time written in a frame's header, in µs (tz = "Z" in every test destination).
fn header_time_us(frame: &[u8], format: Format) -> i64 {
    let text = String::from_utf8_lossy(frame);
    let at = text.find('<').expect("PRI");
    let after_pri = &text[at + text[at..].find('>').expect("PRI end") + 1..];
    match format {
        Format::Rfc5424 | Format::Rfc5425 => {
            let stamp = after_pri
                .strip_prefix("1 ")
                .expect("VERSION")
                .split(' ')
                .next()
                .unwrap();
            chrono::DateTime::parse_from_rfc3339(stamp)
                .expect("RFC 3339 stamp")
                .timestamp_micros()
        }
        Format::Rfc3164 | Format::Cef => {
            let stamp = &after_pri[..15];
            let year = Utc::now().year();
            NaiveDateTime::parse_from_str(&format!("{year} {stamp}"), "%Y %b %e %H:%M:%S")
                .expect("RFC 3164 stamp")
                .and_utc()
                .timestamp_micros()
        }
    }
}

/// The frame the renderer makes for `event` with the send time the frame carries.
fn expected_frame(renderer: &Renderer, event: &Value, frame: &[u8]) -> Vec<u8> {
    let payload = serde_json::to_vec(event).unwrap();
    let group = event["groupId"].as_str().unwrap();
    let ev = decode(&payload, Some(group.as_bytes()), &DecodeOptions::default()).unwrap();
    let now_us = header_time_us(frame, renderer.settings().format);
    let mut buf = BytesMut::new();
    let outcome = renderer.render(&ev, &RenderContext { now_us }, &mut buf);
    assert_ne!(outcome, Rendered::Oversize);
    buf.to_vec()
}

const DESTINATIONS: &str = r#"
[[syslog]]
name = "rep-tcp-5424"
kind = "representative"
protocol = "tcp"
format = "rfc5424"
tz = "Z"
include_raw_log = true
address = "{rep}"

[[syslog]]
name = "acme-udp-cef"
kind = "group"
group = "acme"
protocol = "udp"
format = "cef"
tz = "Z"
include_raw_log = true
max_message_bytes = 8192
address = "{acme}"

[[syslog]]
name = "globex-tcp-3164-lf"
kind = "group"
group = "globex"
protocol = "tcp"
format = "rfc3164"
framing = "lf"
tz = "Z"
include_raw_log = true
detect = ["web", "host"]
address = "{globex}"

[[syslog]]
name = "rep-udp-3164-servers"
kind = "representative"
protocol = "udp"
format = "rfc3164"
tz = "Z"
include_raw_log = true
max_message_bytes = 8192
address = "{servers}"
[syslog.filter]
server_ips = ["172.16.12.40/31"]

# The same rendering settings as rep-tcp-5424: one render, the same frame for both; fewer
# events.
[[syslog]]
name = "rep-tcp-5424-servers"
kind = "representative"
protocol = "tcp"
format = "rfc5424"
tz = "Z"
include_raw_log = true
address = "{copy}"
[syslog.filter]
server_ips = ["172.16.12.40/31"]
"#;

/// Independent of the router: who should get sample event `ev`, by the rules of config.md.
fn wanted(dest: &str, ev: &Value) -> bool {
    let log_type = ev["logType"].as_str().unwrap();
    let category = ev["category"].as_str().unwrap();
    let group = ev["groupId"].as_str().unwrap();
    match dest {
        "rep-tcp-5424" => true,
        "acme-udp-cef" => group == "acme" && log_type != "usage",
        "globex-tcp-3164-lf" => {
            group == "globex"
                && match log_type {
                    "detect" => category == "web" || category == "host",
                    "defense" => true,
                    _ => false,
                }
        }
        "rep-udp-3164-servers" | "rep-tcp-5424-servers" => {
            matches!(
                ev["serverIp"].as_str(),
                Some("172.16.12.40" | "172.16.12.41")
            )
        }
        other => panic!("unknown destination {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_exactly_the_destinations_that_want_it_byte_equal() {
    let kafka = start_kafka();
    let brokers = kafka.bootstrap_servers();
    let receivers = [
        (
            "rep-tcp-5424",
            Receiver::tcp(Split::OctetCounting).await.unwrap(),
        ),
        ("acme-udp-cef", Receiver::udp().await.unwrap()),
        (
            "globex-tcp-3164-lf",
            Receiver::tcp(Split::Byte(b'\n')).await.unwrap(),
        ),
        ("rep-udp-3164-servers", Receiver::udp().await.unwrap()),
        (
            "rep-tcp-5424-servers",
            Receiver::tcp(Split::OctetCounting).await.unwrap(),
        ),
    ];
    let toml = base_toml(&brokers, "e2e")
        + &DESTINATIONS
            .replace("{rep}", &receivers[0].1.addr().to_string())
            .replace("{acme}", &receivers[1].1.addr().to_string())
            .replace("{globex}", &receivers[2].1.addr().to_string())
            .replace("{servers}", &receivers[3].1.addr().to_string())
            .replace("{copy}", &receivers[4].1.addr().to_string());
    let cfg = config(&toml);
    assert_eq!(
        cfg.syslog[0].render, cfg.syslog[4].render,
        "shared settings"
    );

    // 10 events of each of the 24 pairs, spread over 3 groups and 4 servers.
    let events = samples(0..240);
    assert!(events.iter().all(|(s, e)| e["groupId"] == group_of(*s)));
    produce(&brokers, &events).await;
    let by_seq: BTreeMap<u64, &Value> = events.iter().map(|(s, e)| (*s, e)).collect();
    let want: Vec<BTreeSet<u64>> = receivers
        .iter()
        .map(|(name, _)| {
            by_seq
                .iter()
                .filter(|(_, e)| wanted(name, e))
                .map(|(s, _)| *s)
                .collect()
        })
        .collect();
    for ((name, _), w) in receivers.iter().zip(&want) {
        assert!(
            !w.is_empty(),
            "{name} must get something for the test to mean anything"
        );
    }

    run_until(cfg.clone(), async {
        for ((_, r), w) in receivers.iter().zip(&want) {
            r.wait_for(w.len(), Duration::from_secs(60)).await;
        }
        // Room for a stray or duplicate frame to arrive before counting.
        tokio::time::sleep(Duration::from_millis(300)).await;
    })
    .await;
    assert_nothing_deleted(&brokers);

    for (((name, r), w), dest) in receivers.iter().zip(&want).zip(&cfg.syslog) {
        assert_eq!(*name, dest.name);
        let renderer = Renderer::new(dest.render.clone());
        let frames = r.frames();
        let mut got = BTreeMap::new();
        for f in &frames {
            let seq =
                seq_of(f).unwrap_or_else(|| panic!("{name}: frame without a sample id: {f:?}"));
            *got.entry(seq).or_insert(0) += 1;
            let expected = expected_frame(&renderer, by_seq[&seq], f);
            assert_eq!(
                String::from_utf8_lossy(f),
                String::from_utf8_lossy(&expected),
                "{name}: frame of event {seq} differs from the renderer's"
            );
        }
        let dups: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            dups.is_empty(),
            "{name}: events delivered more than once: {dups:?}"
        );
        let got: BTreeSet<u64> = got.into_keys().collect();
        let missing: Vec<_> = w.difference(&got).collect();
        let extra: Vec<_> = got.difference(w).collect();
        assert!(
            missing.is_empty(),
            "{name}: missing {} events: {missing:?}",
            missing.len()
        );
        assert!(
            extra.is_empty(),
            "{name}: got events it should not: {extra:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_at_the_committed_offset_and_loses_nothing() {
    let kafka = start_kafka();
    let brokers = kafka.bootstrap_servers();
    let total = 600u64;
    let events = samples(0..total);
    produce(&brokers, &events).await;
    let dest = |addr: std::net::SocketAddr| {
        format!(
            "[[syslog]]\nname = \"siem\"\nprotocol = \"tcp\"\nformat = \"rfc5424\"\ninclude_raw_log = true\naddress = \"{addr}\"\n"
        )
    };

    // First run: a slow SIEM (about 80 KB/s), stopped part-way through the topic with a
    // short grace, so that some events are still queued or unacknowledged at the stop.
    let first = Receiver::tcp_paced(Split::OctetCounting, 4096, Duration::from_millis(50))
        .await
        .unwrap();
    let base = base_toml(&brokers, "restart");
    let cfg = config(
        &(base.replace("shutdown_grace_s = 5", "shutdown_grace_s = 1") + &dest(first.addr())),
    );
    run_until(cfg, async {
        first.wait_for(100, Duration::from_secs(60)).await;
    })
    .await;
    // What the peer's kernel acknowledged counts as delivered: let the receiver read it all.
    let mut last = usize::MAX;
    while first.count() != last {
        last = first.count();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let highs = assert_nothing_deleted(&brokers);
    assert_eq!(highs.values().sum::<i64>() as u64, total);
    let committed = committed(&brokers, "restart");
    let done: i64 = committed.values().map(|o| o.unwrap_or(0)).sum();
    let got_first: BTreeSet<u64> = first.frames().iter().filter_map(|f| seq_of(f)).collect();
    assert!(done > 0, "the first run committed nothing");
    assert!(
        (done as u64) < total,
        "the first run was meant to stop part-way"
    );
    assert!(
        got_first.len() as i64 >= done,
        "committed {done} events but the receiver got only {}",
        got_first.len()
    );

    // Second run, same group: starts exactly at the committed offsets.
    let second = Receiver::tcp(Split::OctetCounting).await.unwrap();
    let cfg = config(&(base_toml(&brokers, "restart") + &dest(second.addr())));
    let rest = total - done as u64;
    run_until(cfg, async {
        second
            .wait_for(rest as usize, Duration::from_secs(60))
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    })
    .await;
    let frames = second.frames();
    assert_eq!(
        frames.len() as u64,
        rest,
        "the second run must deliver exactly the events after the committed offsets"
    );
    let got_second: BTreeSet<u64> = frames.iter().filter_map(|f| seq_of(f)).collect();
    let all: BTreeSet<u64> = got_first.union(&got_second).copied().collect();
    assert_eq!(all.len() as u64, total, "events lost across the restart");
    let redelivered = got_first.intersection(&got_second).count();
    eprintln!(
        "restart: first run delivered {}, committed {done}; second run delivered {} ({redelivered} redelivered)",
        got_first.len(),
        got_second.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_events_are_dead_lettered_and_the_pipeline_goes_on() {
    let kafka = start_kafka();
    let brokers = kafka.bootstrap_servers();
    let recv = Receiver::tcp(Split::OctetCounting).await.unwrap();
    let toml = base_toml(&brokers, "dlq").replace("[forwarder]", "[forwarder]\n")
        + &format!(
            "[[syslog]]\nname = \"siem\"\nprotocol = \"tcp\"\ninclude_raw_log = true\naddress = \"{}\"\n",
            recv.addr()
        );
    let toml = toml.replace(
        "[kafka.properties]",
        "max_event_bytes = 4096\n[kafka.properties]",
    );
    let cfg = config(&toml);
    let valid = samples(0..2);
    let v0 = serde_json::to_vec(&valid[0].1).unwrap();
    let v1 = serde_json::to_vec(&valid[1].1).unwrap();
    let too_large = format!(
        r#"{{"logType":"detect","category":"web","logOrigin":"{}"}}"#,
        "x".repeat(5000)
    );
    let broken: Vec<(&[u8], &str)> = vec![
        (b"{not json", "not_json"),
        (
            br#"{"logType":"detect","category":"web","filterRiskLevel":{"a":1}}"#,
            "wrong_type",
        ),
        (
            br#"{"logType":"detect","category":"teleport"}"#,
            "unknown_category",
        ),
        (b"[1,2]", "not_object"),
        (br#"{"category":"web"}"#, "missing_log_type"),
        (too_large.as_bytes(), "too_large"),
    ];
    // One partition's order: valid, the broken ones, valid.
    let mut payloads: Vec<&[u8]> = vec![&v0];
    payloads.extend(broken.iter().map(|(p, _)| *p));
    payloads.push(&v1);
    produce_raw(&brokers, "plura.detect", &payloads).await;

    run_until(cfg, async {
        recv.wait_for(2, Duration::from_secs(60)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    })
    .await;
    let seqs: BTreeSet<u64> = recv.frames().iter().filter_map(|f| seq_of(f)).collect();
    assert_eq!(
        seqs,
        BTreeSet::from([0, 1]),
        "valid events around the broken ones arrive"
    );

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "dlq-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["plura.forwarder.dlq"]).unwrap();
    let mut letters = BTreeMap::new();
    while letters.len() < broken.len() {
        let msg = tokio::time::timeout(Duration::from_secs(20), consumer.recv())
            .await
            .expect("dead letter within 20 s")
            .expect("consume");
        let headers = msg.headers().expect("headers");
        let mut h = BTreeMap::new();
        for hd in headers.iter() {
            h.insert(
                hd.key.to_owned(),
                String::from_utf8_lossy(hd.value.unwrap_or_default()).into_owned(),
            );
        }
        assert_eq!(h["source_topic"], "plura.detect");
        let offset: i64 = h["source_offset"].parse().unwrap();
        assert!(h["source_partition"].parse::<i32>().is_ok());
        letters.insert(
            offset,
            (
                h["reason"].clone(),
                msg.payload().unwrap_or_default().to_vec(),
            ),
        );
    }
    for (offset, (reason, payload)) in &letters {
        let (want_payload, want_reason) = broken[(*offset - 1) as usize];
        assert_eq!(reason, want_reason, "offset {offset}");
        assert_eq!(
            payload.as_slice(),
            want_payload,
            "the dead letter keeps the original bytes"
        );
    }
}

/// A destination lingers for more frames only while the pipeline has more: once the consumer
/// has nothing ready, what was sent goes out at once. With a 60 s linger, events arrive in
/// seconds only because the pipeline says it went idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_in_the_input_ends_the_linger() {
    let kafka = start_kafka();
    let brokers = kafka.bootstrap_servers();
    let recv = Receiver::tcp(Split::OctetCounting).await.unwrap();
    let toml = base_toml(&brokers, "idle-flush")
        .replace("[forwarder]\n", "[forwarder]\nbatch_linger_ms = 60000\n")
        + &dest("siem", recv.addr());
    let cfg = config(&toml);
    let events = samples(0..12);
    produce(&brokers, &events).await;
    let mut arrived = 0;
    run_until(cfg, async {
        arrived = recv.wait_for(events.len(), Duration::from_secs(20)).await;
    })
    .await;
    assert_eq!(
        arrived,
        events.len(),
        "every event written while the pipeline waits for input, long before the linger ends"
    );
}

/// A stop during a long backlog ends consuming at once: the run does not drain the topic
/// first (messages ready in the consumer's queue are taken without a select, and the stop is
/// looked at every few hundred of them; `next_or_stop`'s unit tests pin that interval down).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_a_backlog_ends_consuming_at_once() {
    let kafka = start_kafka();
    let brokers = kafka.bootstrap_servers();
    let recv = Receiver::tcp(Split::OctetCounting).await.unwrap();
    let total = 20_000u64;
    let toml = backlog_config(&brokers, "stop-in-backlog", total, recv.addr()).await;
    let at_stop = std::sync::atomic::AtomicUsize::new(0);
    run_until(config(&toml), async {
        recv.wait_for(1000, Duration::from_secs(60)).await;
        at_stop.store(recv.count(), std::sync::atomic::Ordering::Relaxed);
    })
    .await;
    let at_stop = at_stop.into_inner();
    let after = recv.count();
    let committed: i64 = committed(&brokers, "stop-in-backlog")
        .values()
        .map(|o| o.unwrap_or(0))
        .sum();
    eprintln!("stop in a backlog: {at_stop} frames at the stop, {after} in all, {committed} committed of {total}");
    assert!(at_stop >= 1000, "the run was stopped before it got going");
    // After the stop: at most the messages before the next look at the token, the
    // destination's queue and what was being written; far from the rest of the topic.
    assert!(
        (after as u64) < total / 2,
        "{after} of {total} events were forwarded after a stop at {at_stop}: the stop waited for the backlog"
    );
    assert!(
        committed as usize <= after,
        "committed more than was delivered"
    );
}

/// A filter on `logOrigin` sees the raw log even when no destination renders it (decoding
/// skips the raw log only when nothing reads it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_on_the_raw_log_works_without_include_raw_log() {
    let kafka = start_kafka();
    let brokers = kafka.bootstrap_servers();
    let recv = Receiver::tcp(Split::OctetCounting).await.unwrap();
    let pattern = r"\?id=[0-9]*[13579] ";
    let toml = base_toml(&brokers, "raw-filter")
        + &format!(
            "[[syslog]]\nname = \"odd\"\nprotocol = \"tcp\"\naddress = \"{}\"\n\
             [syslog.filter.fields]\nlogOrigin = '{pattern}'\n",
            recv.addr()
        );
    let cfg = config(&toml);
    let events = samples(0..40);
    let re = regex::Regex::new(pattern).unwrap();
    let want = events
        .iter()
        .filter(|(_, ev)| ev["logOrigin"].as_str().is_some_and(|o| re.is_match(o)))
        .count();
    assert!(
        want > 0 && want < events.len(),
        "the filter must split the sample"
    );
    produce(&brokers, &events).await;
    run_until(cfg, async {
        recv.wait_for(want, Duration::from_secs(20)).await;
        // Anything the filter should have kept out has had time to arrive too.
        tokio::time::sleep(Duration::from_millis(500)).await;
    })
    .await;
    assert_eq!(
        recv.count(),
        want,
        "exactly the events whose raw log matches"
    );
}
