//! `send-test DESTINATION` and `POST /api/syslog/{name}/test`: one rendered test event through
//! a one-off connection built from the destination's config, with the same sink code as the
//! service (resolve, dial, TLS, framing), so success means the real path works.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::ack::{NoStore, PartitionTracker};
use crate::config::SyslogConfig;
use crate::event::{decode, Category, DecodeOptions, LogType};
use crate::render::{RenderContext, Rendered, Renderer};
use crate::sink::{self, Frame, SinkSpec, SinkState};

/// What a successful test send did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestSent {
    /// Bytes of the frame (framing included).
    pub bytes: usize,
    /// From the start of the attempt to the destination's acknowledgement (UDP: the kernel
    /// took the datagram; TCP/TLS: the peer acknowledged the bytes).
    pub elapsed: Duration,
}

/// Why a test send failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendTestError {
    /// The test event does not fit `max_message_bytes` with `on_oversize = drop`.
    #[error("the test message is larger than max_message_bytes ({0}) and on_oversize = drop")]
    Oversize(usize),
    /// The destination could not be reached or written; the sink's last error.
    #[error("{0}")]
    Failed(String),
    /// Nothing was acknowledged in time and no error was reported.
    #[error("no acknowledgement within {0:?}")]
    TimedOut(Duration),
}

/// The frame `send-test` writes for `dest`: a sample detect/web event marked as a test,
/// rendered with the destination's settings at `now_us`.
pub fn test_frame(dest: &SyslogConfig, now_us: i64) -> (Rendered, BytesMut) {
    let mut v = crate::sample::event(LogType::Detect, Category::Web, 0, 0);
    v["eventName"] = "테스트".into();
    v["filterName"] = "plura-forwarder send-test".into();
    v["detectDescription"] = format!("test message to {}", dest.name).into();
    let payload = serde_json::to_vec(&v).expect("sample event serialises");
    let ev = decode(&payload, None, &DecodeOptions::default()).expect("sample event decodes");
    let mut buf = BytesMut::with_capacity(4096);
    let out = Renderer::new(dest.render.clone()).render(&ev, &RenderContext { now_us }, &mut buf);
    (out, buf)
}

/// Sends one test message to `dest` and waits up to `timeout` for it to be acknowledged.
///
/// # Errors
/// The destination's connection or write error ([`SendTestError::Failed`], as soon as the
/// first attempt fails), an oversize test message, or no acknowledgement within `timeout`.
pub async fn send_test(dest: &SyslogConfig, timeout: Duration) -> Result<TestSent, SendTestError> {
    let start = Instant::now();
    let (outcome, buf) = test_frame(dest, crate::pipeline::now_us());
    if outcome == Rendered::Oversize {
        return Err(SendTestError::Oversize(dest.render.max_message_bytes));
    }
    let bytes = buf.len();
    let handle = sink::spawn(SinkSpec {
        name: dest.name.clone(),
        protocol: dest.render.protocol,
        address: dest.address.clone(),
        queue_events: 1,
        batch_max_events: 1,
        batch_max_bytes: bytes.max(1),
        batch_linger: Duration::ZERO,
        connect_timeout: timeout,
        tls: dest.tls.clone().map(sink::TlsSpec::new),
    });
    let tracker = PartitionTracker::new("send-test", 0, Arc::new(NoStore));
    let Some(ack) = tracker.dispatch(0, 1).pop() else {
        return Err(SendTestError::Failed("no acknowledgement slot".into()));
    };
    let frame = Frame {
        bytes: buf.freeze(),
        ack,
        event_time_ms: None,
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let result = if handle.send(frame).await.is_err() {
        Err(SendTestError::Failed("the test connection stopped".into()))
    } else {
        loop {
            let st = handle.status();
            if st.acked >= 1 {
                break Ok(TestSent {
                    bytes,
                    elapsed: start.elapsed(),
                });
            }
            // A fresh sink: its first error is the answer (no waiting through backoff).
            if let Some(e) = st.last_error {
                break Err(SendTestError::Failed(e));
            }
            if st.state == SinkState::Closed {
                break Err(SendTestError::Failed("the test connection stopped".into()));
            }
            if tokio::time::Instant::now() >= deadline {
                break Err(SendTestError::TimedOut(timeout));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    // Acknowledged or failed: nothing is worth waiting for.
    handle.close(Duration::from_millis(200)).await;
    result
}
