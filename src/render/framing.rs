//! Stream framing (formats.md §1.5, §1.6): octet counting or a trailer; nothing for UDP.
//!
//! Octet counting needs the length before the message. The message is rendered after a
//! three-digit placeholder (most messages are 100..999 bytes) and moved only when the
//! real count has another width, so the common case costs no copy.

use bytes::{BufMut, BytesMut};

use super::num::digits;
use super::settings::Framing;

const GUESS: usize = 3;

/// Writes whatever precedes the message; returns where the message starts.
pub(crate) fn begin(dst: &mut BytesMut, framing: Option<Framing>) -> usize {
    if framing == Some(Framing::OctetCounting) {
        dst.put_slice(b"000 ");
    }
    dst.len()
}

/// Completes the frame of the message `dst[msg_start..]` that began at `frame_start`.
pub(crate) fn end(
    dst: &mut BytesMut,
    framing: Option<Framing>,
    frame_start: usize,
    msg_start: usize,
) {
    match framing {
        None => {}
        Some(Framing::Lf) => dst.put_u8(b'\n'),
        Some(Framing::Crlf) => dst.put_slice(b"\r\n"),
        Some(Framing::Nul) => dst.put_u8(0),
        Some(Framing::OctetCounting) => {
            let len = dst.len() - msg_start;
            let d = digits(len);
            let end = dst.len();
            if d > GUESS {
                let grow = d - GUESS;
                dst.resize(end + grow, 0);
                dst.copy_within(msg_start..end, msg_start + grow);
            } else if d < GUESS {
                let shrink = GUESS - d;
                dst.copy_within(msg_start..end, msg_start - shrink);
                dst.truncate(end - shrink);
            }
            // Write the count into the (now exactly sized) prefix.
            write_digits(&mut dst[frame_start..frame_start + d], len);
            dst[frame_start + d] = b' ';
        }
    }
}

fn write_digits(out: &mut [u8], mut n: usize) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::num::put_u64;

    fn frame(msg: &[u8], prefix: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_slice(prefix);
        let start = b.len();
        let m = begin(&mut b, Some(Framing::OctetCounting));
        b.put_slice(msg);
        end(&mut b, Some(Framing::OctetCounting), start, m);
        b.to_vec()
    }

    #[test]
    fn octet_count_of_any_width() {
        for n in [0usize, 1, 9, 10, 99, 100, 999, 1000, 12_345, 100_000] {
            let msg = vec![b'x'; n];
            let out = frame(&msg, b"prev");
            let mut want = b"prev".to_vec();
            let mut num = BytesMut::new();
            put_u64(&mut num, n as u64);
            want.extend_from_slice(&num);
            want.push(b' ');
            want.extend_from_slice(&msg);
            assert_eq!(out, want, "{n}");
        }
    }

    #[test]
    fn trailers() {
        for (f, t) in [
            (Framing::Lf, &b"\n"[..]),
            (Framing::Crlf, b"\r\n"),
            (Framing::Nul, b"\0"),
        ] {
            let mut b = BytesMut::new();
            let m = begin(&mut b, Some(f));
            b.put_slice(b"m");
            end(&mut b, Some(f), 0, m);
            assert_eq!(&b[..], [&b"m"[..], t].concat());
        }
    }
}
