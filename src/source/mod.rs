//! Source stage: the Kafka consumer group.
//!
//! The service reads through [`BatchConsumer`] (librdkafka's consumer through its C API, ready
//! messages taken in batches, rebalances served by a callback); the retry consumer and the
//! ticket history reader use rdkafka's consumer ([`build_consumer`]). Both keep the same
//! [`Trackers`].
//!
//! Offsets are stored (`enable.auto.offset.store=false`) only from [`crate::ack`] watermarks,
//! i.e. once every destination has finished with every earlier event of the partition, and
//! committed by librdkafka every `commit_interval_ms`, on revoke and at shutdown.
//!
//! The forwarder's own writes to Kafka (dead letters, parked events, ticket history) go
//! through [`Producer`].

pub mod batch_consumer;
mod consumer;
pub mod embedded;
mod heap_collect;
pub mod pause;
mod producer;

pub use batch_consumer::{BatchConsumer, Msg};
pub use consumer::{
    build_consumer, consumer_config, is_no_offset_error, is_shared_property, KafkaConsumer,
    KafkaSource, SourceContext, SourceError, Trackers,
};
pub use producer::{build_producer, Producer, Record};
