//! The minimal forwarder of performance.md, the baseline every figure is a ratio to: a group
//! consumer → a fixed 65-byte header + the event bytes → one TCP connection (written in large
//! chunks) or one UDP datagram per event. No decoding, routing, rendering or delivery tracking.

use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message};

/// The fixed header (65 bytes, like an RFC 5424 header with a host and app name).
pub const HEADER: &[u8; 65] = b"<133>1 2022-06-16T12:44:15.123456+09:00 host.example Plura - - - ";

/// Forwards until the process is stopped (the harness reads its CPU time and memory while it
/// is still alive, then sends SIGTERM).
///
/// # Errors
/// When the consumer or the socket cannot be created.
pub fn run(
    brokers: &str,
    group: &str,
    topic: &str,
    target: SocketAddr,
    udp: bool,
) -> anyhow::Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("fetch.queue.backoff.ms", "10")
        .set(
            "fetch.wait.max.ms",
            super::measure::FETCH_WAIT_MS.to_string(),
        )
        .set("enable.partition.eof", "false")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut out = if udp {
        let s = UdpSocket::bind("127.0.0.1:0")?;
        s.connect(target)?;
        Out::Udp(s)
    } else {
        Out::Tcp(TcpStream::connect(target)?)
    };
    let mut buf = Vec::with_capacity(256 * 1024);
    loop {
        let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
            out.flush(&mut buf)?;
            continue;
        };
        let msg = msg?;
        let payload = msg.payload().unwrap_or_default();
        match &out {
            Out::Tcp(_) => {
                write!(buf, "{} ", HEADER.len() + payload.len())?;
                buf.extend_from_slice(HEADER);
                buf.extend_from_slice(payload);
                if buf.len() >= 256 * 1024 {
                    out.flush(&mut buf)?;
                }
            }
            Out::Udp(s) => {
                buf.extend_from_slice(HEADER);
                buf.extend_from_slice(payload);
                // Loss is what UDP does; the harness counts what arrived.
                let _ = s.send(&buf);
                buf.clear();
            }
        }
    }
}

enum Out {
    Tcp(TcpStream),
    Udp(UdpSocket),
}

impl Out {
    fn flush(&mut self, buf: &mut Vec<u8>) -> std::io::Result<()> {
        if let Out::Tcp(t) = self {
            if !buf.is_empty() {
                t.write_all(buf)?;
                buf.clear();
            }
        }
        Ok(())
    }
}
