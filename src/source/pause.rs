//! Backpressure on the consumer (delivery.md §2): when the event in hand cannot be handed to
//! a destination (its queue is full and parking is not possible), the consumer pauses its
//! partitions and keeps being polled, so that it stays in its group (`max.poll.interval.ms`),
//! serves rebalances, and librdkafka drops what it had prefetched instead of fetching more.
//! Resuming restarts fetching at the application's position: nothing is skipped.

use rdkafka::TopicPartitionList;

use super::BatchConsumer;

/// Partitions paused by [`pause_assigned`]; resume them with [`Paused::resume`].
#[must_use = "paused partitions stay paused until resumed"]
pub struct Paused(TopicPartitionList);

impl Paused {
    /// How many partitions are paused.
    pub fn count(&self) -> usize {
        self.0.count()
    }

    /// Resumes fetching. A partition revoked meanwhile is skipped by librdkafka.
    pub fn resume(self, consumer: &BatchConsumer) {
        if let Err(e) = consumer.resume(&self.0) {
            tracing::warn!(error = %e, "Resuming partitions failed.");
        }
    }
}

/// Pauses every assigned partition (the single consumer loop is blocked on one event, so no
/// partition could progress anyway). `None` when nothing is assigned.
pub fn pause_assigned(consumer: &BatchConsumer) -> Option<Paused> {
    let assigned = consumer.assignment().ok()?;
    if assigned.count() == 0 {
        return None;
    }
    if let Err(e) = consumer.pause(&assigned) {
        tracing::warn!(error = %e, "Pausing partitions failed.");
        return None;
    }
    tracing::info!(
        partitions = assigned.count(),
        "An event has waited 1 s for a destination with no room and no parking: consumer paused."
    );
    Some(Paused(assigned))
}
