//! Sink stage (TEMPORARY STUB on main; replaced by the sink branch at merge).
#![allow(missing_docs, dead_code)]
use std::time::Duration;
use bytes::Bytes;
use crate::ack::Ack;
use crate::render::settings::Protocol;
pub struct SinkSpec { pub name: String, pub protocol: Protocol, pub address: String, pub queue_events: usize, pub batch_max_events: usize, pub batch_max_bytes: usize, pub batch_linger: Duration, pub connect_timeout: Duration }
pub struct Frame { pub bytes: Bytes, pub ack: Ack, pub event_time_ms: Option<i64> }
pub struct SinkHandle { name: String, tx: tokio::sync::mpsc::Sender<Frame> }
#[derive(Debug, Clone)]
pub struct SinkStatus { pub queued: usize }
#[derive(Debug, Default)]
pub struct CloseReport { pub unacked: usize }
pub fn spawn(spec: SinkSpec) -> SinkHandle {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Frame>(spec.queue_events);
    tokio::spawn(async move { while let Some(f) = rx.recv().await { f.ack.done(); } });
    SinkHandle { name: spec.name, tx }
}
impl SinkHandle {
    pub fn name(&self) -> &str { &self.name }
    pub async fn send(&self, f: Frame) -> Result<(), Frame> { self.tx.send(f).await.map_err(|e| e.0) }
    pub fn try_send(&self, f: Frame) -> Result<(), Frame> { self.tx.try_send(f).map_err(|e| match e { tokio::sync::mpsc::error::TrySendError::Full(f) | tokio::sync::mpsc::error::TrySendError::Closed(f) => f }) }
    pub fn status(&self) -> SinkStatus { SinkStatus { queued: self.tx.max_capacity() - self.tx.capacity() } }
    pub async fn close(self, _grace: Duration) -> CloseReport { CloseReport::default() }
}
