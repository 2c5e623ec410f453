//! Metric names (interfaces.md), described once at start, and the Prometheus recorder.
//!
//! Every name is a constant here so that code, alerts and dashboards agree.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

macro_rules! names {
    ($($konst:ident = $name:literal;)*) => {
        $(#[allow(missing_docs)] pub const $konst: &str = concat!("plura_forwarder_", $name);)*
        /// Every metric name this build exports.
        pub const ALL: &[&str] = &[$($konst,)*];
    };
}

names! {
    EVENTS_CONSUMED_TOTAL = "events_consumed_total";
    EVENTS_INVALID_TOTAL = "events_invalid_total";
    EVENTS_ROUTED_TOTAL = "events_routed_total";
    EVENTS_FILTERED_TOTAL = "events_filtered_total";
    EVENTS_SENT_TOTAL = "events_sent_total";
    EVENTS_PARKED_TOTAL = "events_parked_total";
    EVENTS_UNPARKED_TOTAL = "events_unparked_total";
    EVENTS_DROPPED_TOTAL = "events_dropped_total";
    EVENTS_TRUNCATED_TOTAL = "events_truncated_total";
    BYTES_SENT_TOTAL = "bytes_sent_total";
    DESTINATION_UP = "destination_up";
    DESTINATION_RECONNECTS_TOTAL = "destination_reconnects_total";
    DESTINATION_QUEUE_EVENTS = "destination_queue_events";
    SEND_BATCH_SECONDS = "send_batch_seconds";
    END_TO_END_SECONDS = "end_to_end_seconds";
    CONSUMER_LAG = "consumer_lag";
    OFFSETS_COMMITTED_TOTAL = "offsets_committed_total";
    DEAD_LETTER_TOTAL = "dead_letter_total";
    TICKETS_TOTAL = "tickets_total";
    COMPLIANCE_HITS_TOTAL = "compliance_hits_total";
    CONFIG_RELOADS_TOTAL = "config_reloads_total";
}

/// Histogram buckets in seconds: 100 µs to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Describes every metric (help text and unit).
pub fn describe() {
    describe_counter!(
        EVENTS_CONSUMED_TOTAL,
        Unit::Count,
        "Kafka messages read, by topic."
    );
    describe_counter!(
        EVENTS_INVALID_TOTAL,
        Unit::Count,
        "Messages that are not valid events, by reason."
    );
    describe_counter!(
        EVENTS_ROUTED_TOTAL,
        Unit::Count,
        "Events routed to a destination."
    );
    describe_counter!(
        EVENTS_FILTERED_TOTAL,
        Unit::Count,
        "Events in a destination's scope that its selection or filter did not want."
    );
    describe_counter!(
        EVENTS_SENT_TOTAL,
        Unit::Count,
        "Events written to a destination's socket."
    );
    describe_counter!(
        EVENTS_PARKED_TOTAL,
        Unit::Count,
        "Events parked to a destination's retry topic."
    );
    describe_counter!(
        EVENTS_UNPARKED_TOTAL,
        Unit::Count,
        "Parked events fed back to their destination."
    );
    describe_counter!(
        EVENTS_DROPPED_TOTAL,
        Unit::Count,
        "Events a destination did not send, by reason."
    );
    describe_counter!(
        EVENTS_TRUNCATED_TOTAL,
        Unit::Count,
        "Messages cut to max_message_bytes."
    );
    describe_counter!(
        BYTES_SENT_TOTAL,
        Unit::Bytes,
        "Bytes written to a destination's socket."
    );
    describe_gauge!(
        DESTINATION_UP,
        "1 while the destination is connected (UDP: socket open)."
    );
    describe_counter!(
        DESTINATION_RECONNECTS_TOTAL,
        Unit::Count,
        "Connection attempts after a failure."
    );
    describe_gauge!(
        DESTINATION_QUEUE_EVENTS,
        Unit::Count,
        "Events queued for a destination."
    );
    describe_histogram!(
        SEND_BATCH_SECONDS,
        Unit::Seconds,
        "Time to write one batch."
    );
    describe_histogram!(
        END_TO_END_SECONDS,
        Unit::Seconds,
        "Kafka message timestamp to socket write."
    );
    describe_gauge!(
        CONSUMER_LAG,
        Unit::Count,
        "High watermark minus position, per partition."
    );
    describe_counter!(
        OFFSETS_COMMITTED_TOTAL,
        Unit::Count,
        "Successful offset commits."
    );
    describe_counter!(
        DEAD_LETTER_TOTAL,
        Unit::Count,
        "Events written to the dead-letter topic, by reason."
    );
    describe_counter!(TICKETS_TOTAL, Unit::Count, "Ticket outcomes.");
    describe_counter!(
        COMPLIANCE_HITS_TOTAL,
        Unit::Count,
        "Events mapped to a compliance control."
    );
    describe_counter!(
        CONFIG_RELOADS_TOTAL,
        Unit::Count,
        "Configuration reloads, by outcome."
    );
}

/// Installs the global Prometheus recorder (once per process) and returns its handle.
///
/// # Errors
/// When a recorder is already installed.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)?
        .install_recorder()?;
    describe();
    Ok(handle)
}
