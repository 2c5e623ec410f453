//! Acknowledged-byte tracking for stream destinations (delivery.md §1).
//!
//! A frame written to a TCP socket is finished only when the peer's TCP stack has acknowledged
//! its last byte. Linux tells how many written bytes are still unacknowledged with
//! `ioctl(SIOCOUTQ)`; everything before `written − outq` is acknowledged. Frames not yet
//! acknowledged stay here, in order, and are written again after a reconnect.

use std::collections::VecDeque;
use std::io;

use crate::ack::{complete_all, Ack};

use super::Frame;

/// End offset of a frame not written on the current connection yet.
const UNWRITTEN: u64 = u64::MAX;

/// Frames written (or about to be) and not yet acknowledged, oldest first.
#[derive(Default)]
pub(crate) struct InFlight {
    /// (wire offset just past the frame on the current connection, frame). Entries not yet
    /// written on the current connection are a suffix with offset `UNWRITTEN`.
    frames: VecDeque<(u64, Frame)>,
    unwritten: usize,
    /// Reused for completing acks in one lock per partition.
    done: Vec<Ack>,
}

/// What [`InFlight::ack_upto`] finished.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Acked {
    pub frames: usize,
}

impl InFlight {
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Frames that must be written on the current connection (new ones, or all after a reconnect).
    pub fn unwritten(&self) -> usize {
        self.unwritten
    }

    /// Adds frames to be written.
    pub fn push_unwritten(&mut self, frames: impl IntoIterator<Item = Frame>) {
        for f in frames {
            self.frames.push_back((UNWRITTEN, f));
            self.unwritten += 1;
        }
    }

    /// After a reconnect: every frame not acknowledged must be written again.
    pub fn mark_all_unwritten(&mut self) -> usize {
        let resent = self.frames.len() - self.unwritten;
        for (end, _) in &mut self.frames {
            *end = UNWRITTEN;
        }
        self.unwritten = self.frames.len();
        resent
    }

    /// The frames to write now, in order.
    pub fn unwritten_frames(&self) -> impl Iterator<Item = &Frame> {
        let skip = self.frames.len() - self.unwritten;
        self.frames.iter().skip(skip).map(|(_, f)| f)
    }

    /// Records that the unwritten frames were written and now occupy wire bytes
    /// `start..end` of the connection. When the wire carries exactly the frame bytes (plain TCP)
    /// each frame gets its own end offset; otherwise (TLS adds record overhead) every frame
    /// of the write ends at `end`.
    pub fn mark_written(&mut self, start: u64, end: u64) {
        let skip = self.frames.len() - self.unwritten;
        let app: u64 = self.unwritten_frames().map(|f| f.bytes.len() as u64).sum();
        let exact = end.checked_sub(start) == Some(app);
        let mut pos = start;
        for (off, f) in self.frames.iter_mut().skip(skip) {
            pos += f.bytes.len() as u64;
            *off = if exact { pos } else { end };
        }
        self.unwritten = 0;
    }

    /// Completes every written frame that ends at or before wire offset `acked`.
    pub fn ack_upto(&mut self, acked: u64) -> Acked {
        let mut n = 0;
        while let Some(&(end, _)) = self.frames.front() {
            if end == UNWRITTEN || end > acked {
                break;
            }
            if let Some((_, f)) = self.frames.pop_front() {
                self.done.push(f.ack);
                n += 1;
            }
        }
        if n > 0 {
            complete_all(self.done.drain(..));
            crate::malloc::release_drained(&mut self.frames);
        }
        Acked { frames: n }
    }
}

/// Bytes written to `fd` that the peer has not acknowledged yet (`SIOCOUTQ`).
#[cfg(target_os = "linux")]
pub(crate) fn unacked_bytes(fd: std::os::fd::RawFd) -> io::Result<u64> {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (= SIOCOUTQ) writes one c_int through the pointer, which is valid for
    // the duration of the call; a bad fd only yields an error.
    let r = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n as *mut libc::c_int) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Elsewhere there is no portable way to ask; a write counts as acknowledged.
#[cfg(all(unix, not(target_os = "linux")))]
pub(crate) fn unacked_bytes(_fd: std::os::fd::RawFd) -> io::Result<u64> {
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::{NoStore, PartitionTracker};
    use bytes::Bytes;
    use std::sync::Arc;

    #[test]
    fn acks_in_order_up_to_the_acknowledged_offset() {
        let t = PartitionTracker::new("t", 0, Arc::new(NoStore));
        let mut inf = InFlight::default();
        inf.push_unwritten((0..4).map(|i| Frame {
            bytes: Bytes::from(vec![b'a'; 10]),
            ack: t.dispatch(i, 1).pop().unwrap(),
            event_time_ms: None,
        }));
        assert_eq!(
            inf.ack_upto(1000).frames,
            0,
            "unwritten frames are never acked"
        );
        inf.mark_written(100, 140);
        assert_eq!(inf.ack_upto(119).frames, 1);
        assert_eq!(t.done_upto(), Some(0));
        assert_eq!(inf.ack_upto(130).frames, 2);
        assert_eq!(t.done_upto(), Some(2));
        assert_eq!(inf.mark_all_unwritten(), 1);
        assert_eq!(inf.ack_upto(1000).frames, 0);
        // TLS-like: more wire bytes than frame bytes; the whole write ends together.
        inf.mark_written(0, 37);
        assert_eq!(inf.ack_upto(36).frames, 0);
        assert_eq!(inf.ack_upto(37).frames, 1);
        assert_eq!(t.done_upto(), Some(3));
        assert!(inf.is_empty());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(Vec<usize>),
        Write,
        /// Acknowledge this share (0..=100 %) of the bytes written on the connection.
        Ack(u8),
        Reconnect,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            proptest::collection::vec(1usize..50, 1..5).prop_map(Op::Push),
            Just(Op::Write),
            (0u8..=100).prop_map(Op::Ack),
            Just(Op::Reconnect),
        ]
    }

    proptest::proptest! {
        /// Against a model: acks complete a prefix, only of frames wholly written and
        /// acknowledged on the current connection; after a reconnect nothing is acked until
        /// it is written again; every frame is acked exactly once in the end.
        #[test]
        fn acks_never_pass_unacknowledged_bytes(ops in proptest::collection::vec(op(), 1..60)) {
            let t = PartitionTracker::new("t", 0, Arc::new(NoStore));
            let mut inf = InFlight::default();
            // Model: (offset, size, end on the current connection if written).
            let mut model: std::collections::VecDeque<(i64, usize, Option<u64>)> = Default::default();
            let (mut next, mut wire, mut acked_total) = (0i64, 0u64, 0usize);
            for op in ops {
                match op {
                    Op::Push(sizes) => {
                        for size in sizes {
                            inf.push_unwritten(std::iter::once(Frame {
                                bytes: Bytes::from(vec![b'x'; size]),
                                ack: t.dispatch(next, 1).pop().unwrap(),
                                event_time_ms: None,
                            }));
                            model.push_back((next, size, None));
                            next += 1;
                        }
                    }
                    Op::Write => {
                        let start = wire;
                        for m in model.iter_mut().filter(|m| m.2.is_none()) {
                            wire += m.1 as u64;
                            m.2 = Some(wire);
                        }
                        inf.mark_written(start, wire);
                    }
                    Op::Ack(pct) => {
                        let upto = wire * u64::from(pct) / 100;
                        let mut expect = 0;
                        while let Some(&(_, _, Some(end))) = model.front() {
                            if end > upto { break; }
                            model.pop_front();
                            expect += 1;
                        }
                        proptest::prop_assert_eq!(inf.ack_upto(upto).frames, expect);
                        acked_total += expect;
                    }
                    Op::Reconnect => {
                        wire = 0;
                        model.iter_mut().for_each(|m| m.2 = None);
                        inf.mark_all_unwritten();
                    }
                }
                proptest::prop_assert_eq!(inf.len(), model.len());
                proptest::prop_assert_eq!(inf.unwritten(), model.iter().filter(|m| m.2.is_none()).count());
                let first_pending = model.front().map_or(next, |m| m.0);
                proptest::prop_assert_eq!(t.done_upto(), (first_pending > 0).then_some(first_pending - 1));
            }
            let start = wire;
            for m in model.iter().filter(|m| m.2.is_none()) {
                wire += m.1 as u64;
            }
            inf.mark_written(start, wire);
            acked_total += inf.ack_upto(wire).frames;
            proptest::prop_assert_eq!(acked_total as i64, next);
            proptest::prop_assert!(inf.is_empty());
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn outq_of_an_idle_socket_is_zero() {
        use std::os::fd::AsRawFd;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        assert_eq!(unacked_bytes(s.as_raw_fd()).unwrap(), 0);
        assert!(unacked_bytes(-1).is_err());
    }
}

#[cfg(all(test, target_os = "linux"))]
mod kernel_tests {
    use super::unacked_bytes;
    use socket2::{Domain, SockRef, Socket, Type};
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    /// The tracking relies on this: after the peer resets the connection, SIOCOUTQ still
    /// reports the bytes it never acknowledged (the kernel keeps `write_seq − snd_una`), so a
    /// poll that races with a reset cannot acknowledge lost frames.
    #[test]
    fn outq_still_counts_unacknowledged_bytes_after_a_reset() {
        let l = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        l.set_recv_buffer_size(4096).unwrap();
        l.bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
        l.listen(1).unwrap();
        let addr = l.local_addr().unwrap().as_socket().unwrap();
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        let (peer, _) = l.accept().unwrap();
        c.set_nonblocking(true).unwrap();
        let chunk = vec![7u8; 64 * 1024];
        let mut written = 0usize;
        while let Ok(n) = c.write(&chunk) {
            written += n;
        }
        std::thread::sleep(Duration::from_millis(50));
        let before = unacked_bytes(c.as_raw_fd()).unwrap();
        assert!(
            before > 0 && before <= written as u64,
            "{before} of {written}"
        );
        SockRef::from(&peer)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(peer);
        std::thread::sleep(Duration::from_millis(50));
        let after = unacked_bytes(c.as_raw_fd()).unwrap();
        assert_eq!(
            after, before,
            "the reset does not make lost bytes look acknowledged"
        );
        assert!(c.write(&chunk).is_err(), "the connection is gone");
    }
}
