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
