//! Dead letters: invalid events, and events a destination gave up on, go to the dead-letter
//! topic with headers `reason`, `source_topic`, `source_partition`, `source_offset` (and
//! `destination` when one destination gave up). The event's ack completes only once Kafka has
//! acknowledged the produce, so a dead letter is never lost either.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ack::Ack;
use crate::metrics as m;
use crate::source::{Producer, Record};
use crate::throttle::Throttle;

/// Where a dead letter came from.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// Source topic.
    pub topic: &'a str,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
}

/// The dead-letter producer. Cheap to clone.
#[derive(Clone)]
pub struct DeadLetter {
    producer: Producer,
    topic: Arc<str>,
    tasks: TaskTracker,
    stop: CancellationToken,
    throttle: Arc<Throttle>,
}

impl DeadLetter {
    /// A dead-letter writer producing to `topic`.
    pub fn new(producer: Producer, topic: &str) -> Self {
        DeadLetter {
            producer,
            topic: topic.into(),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
            throttle: Arc::new(Throttle::new(Duration::from_secs(60))),
        }
    }

    /// The topic name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Produces one dead letter in the background; `ack` completes when Kafka acknowledged it.
    /// Retries with backoff until it succeeds or [`DeadLetter::close`] gives up.
    pub fn send(
        &self,
        payload: &[u8],
        key: Option<&[u8]>,
        reason: &'static str,
        origin: Origin<'_>,
        destination: Option<&str>,
        ack: Ack,
    ) {
        let payload = payload.to_vec();
        let key = key.map(<[u8]>::to_vec);
        let mut headers = OwnedHeaders::new_with_capacity(5)
            .insert(Header {
                key: "reason",
                value: Some(reason),
            })
            .insert(Header {
                key: "source_topic",
                value: Some(origin.topic),
            })
            .insert(Header {
                key: "source_partition",
                value: Some(&origin.partition.to_string()),
            })
            .insert(Header {
                key: "source_offset",
                value: Some(&origin.offset.to_string()),
            });
        if let Some(d) = destination {
            headers = headers.insert(Header {
                key: "destination",
                value: Some(d),
            });
        }
        let this = self.clone();
        self.tasks.spawn(async move {
            let record = Record {
                topic: &this.topic,
                key: key.as_deref(),
                payload: &payload,
                headers: Some(&headers),
            };
            let sent = this
                .producer
                .send_retrying(record, &this.stop, |e| {
                    if this.throttle.allow("produce").is_some() {
                        tracing::warn!(topic = %this.topic, error = %e, "Dead-letter produce failed; retrying.");
                    }
                })
                .await;
            if sent {
                metrics::counter!(m::DEAD_LETTER_TOTAL, "reason" => reason).increment(1);
                ack.done();
            } else {
                // Not acked: the source offset stays uncommitted and is redelivered.
                tracing::error!(topic = %this.topic, reason, "Gave up writing a dead letter at shutdown; the event will be redelivered.");
            }
        });
    }

    /// Waits for every dead letter in flight, up to `grace`, then abandons the rest (their
    /// events stay uncommitted).
    pub async fn close(&self, grace: Duration) {
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            self.stop.cancel();
            self.tasks.wait().await;
        }
    }
}
