//! plura-forwarder: Kafka → classify → route → render → syslog/CEF over UDP, TCP or TLS.
//!
//! # Layout
//! Data flows one way through one module per stage:
//! - [`source`]: the Kafka consumer group; offsets stored from [`ack`] watermarks.
//! - [`event`]: payload → classified [`event::Event`] (borrowing), or an invalid reason.
//! - [`route`]: which destinations want an event (kind, group, selections, filters).
//! - [`render`]: an event → the exact wire bytes for one destination's settings.
//! - [`sink`]: batched UDP/TCP writers with reconnect and acknowledged-byte tracking.
//! - [`pipeline`]: wires the stages, the dead-letter producer and shutdown.
//! - [`ticket`]: the ticket side sink (Jira, MantisBT, Redmine) and its history.
//! - [`compliance`]: the mapping file → per-event controls and their counts.
//! - [`config`], [`metrics`], [`admin`]: configuration, Prometheus names, the HTTP listener.
//! - [`cli`]: the commands (`run`, `demo`, `check`, `render`); [`receiver`]: a loopback syslog
//!   peer for the demo, tests and the load harness.

pub mod ack;
pub mod admin;
pub mod app;
pub mod bench;
pub mod cli;
pub mod compliance;
pub mod config;
pub mod event;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod receiver;
pub mod render;
pub mod route;
pub mod sample;
pub mod shutdown;
pub mod sink;
pub mod source;
pub mod throttle;
pub mod ticket;
