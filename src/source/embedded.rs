//! An in-process Kafka for `demo`, `brokers = "embedded"` and tests: librdkafka's mock
//! cluster, which speaks the real Kafka protocol on loopback.
//!
//! Limits (performance.md): it keeps only 5 MiB (or 100,000 record batches) per partition and
//! silently drops older data; re-joining a group waits for the departed member's
//! `session.timeout.ms`. Size loads to fit and check counts.

use rdkafka::error::KafkaResult;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

/// A running mock cluster. Not `Send`: keep it on the thread that created it, alive for as
/// long as clients use it.
pub struct EmbeddedKafka {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl EmbeddedKafka {
    /// Starts a one-broker cluster with `topics` (name, partitions) created.
    ///
    /// # Errors
    /// When librdkafka cannot create the cluster or a topic.
    pub fn start(topics: &[(&str, i32)]) -> KafkaResult<Self> {
        let cluster = MockCluster::new(1)?;
        for (name, partitions) in topics {
            cluster.create_topic(name, *partitions, 1)?;
        }
        Ok(EmbeddedKafka { cluster })
    }

    /// Creates another topic.
    ///
    /// # Errors
    /// When the mock refuses it.
    pub fn create_topic(&self, name: &str, partitions: i32) -> KafkaResult<()> {
        self.cluster.create_topic(name, partitions, 1)
    }

    /// The `bootstrap.servers` string (loopback).
    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }
}
