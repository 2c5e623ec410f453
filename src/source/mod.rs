//! Source stage: the Kafka consumer group.
//!
//! Offsets are stored (`enable.auto.offset.store=false`) only from [`crate::ack`] watermarks,
//! i.e. once every destination has finished with every earlier event of the partition, and
//! committed by librdkafka every `commit_interval_ms`, on revoke and at shutdown.
//!
//! The forwarder's own writes to Kafka (dead letters, parked events, ticket history) go
//! through [`Producer`].

mod consumer;
pub mod embedded;
pub mod pause;
mod producer;

pub use consumer::{
    build_consumer, consumer_config, is_no_offset_error, is_shared_property, KafkaConsumer,
    KafkaSource, SourceContext, SourceError, Trackers,
};
pub use producer::{build_producer, Producer, Record};
