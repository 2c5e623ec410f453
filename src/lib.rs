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
//!
//! # Example
//! One event, decoded and rendered for one destination's settings (what `render` does per line):
//! ```
//! use bytes::BytesMut;
//! use plura_forwarder::event::{decode, DecodeOptions};
//! use plura_forwarder::render::settings::{Protocol, SettingsInput};
//! use plura_forwarder::render::{RenderContext, Renderer};
//!
//! let input: SettingsInput = toml::from_str("format = \"rfc3164\"\ntz = \"+09:00\"").unwrap();
//! let settings = input.build(Some("www.plura.io".into()), "Plura".into(), Protocol::Udp).unwrap();
//! let payload = br#"{"logType":"detect","category":"web","filterName":"XSS"}"#;
//! let event = decode(payload, None, &DecodeOptions::default()).unwrap();
//! let mut frame = BytesMut::new();
//! // 2022-06-16T12:44:15+09:00, the send time.
//! let ctx = RenderContext { now_us: 1_655_351_055_000_000 };
//! Renderer::new(settings).render(&event, &ctx, &mut frame);
//! assert!(frame.starts_with("<133>Jun 16 12:44:15 www.plura.io Plura 웹 탐지".as_bytes()));
//! ```

pub mod ack;
pub mod admin;
pub mod app;
pub mod bench;
pub mod cli;
pub mod compliance;
pub mod config;
pub mod event;
pub mod logging;
pub mod malloc;
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
