//! Source stage: the Kafka consumer group.
//!
//! Offsets are stored (`enable.auto.offset.store=false`) only from [`crate::ack`] watermarks,
//! i.e. once every destination has finished with every earlier event of the partition, and
//! committed by librdkafka every `commit_interval_ms`, on revoke and at shutdown.

mod consumer;
pub mod embedded;
pub mod pause;

pub use consumer::{
    build_consumer, build_producer, consumer_config, is_no_offset_error, is_shared_property,
    KafkaConsumer, KafkaSource, SourceContext, SourceError, Trackers,
};
