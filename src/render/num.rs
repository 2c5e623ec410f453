//! Decimal integers written straight into the output buffer (no `format!`, no allocation).

use bytes::{BufMut, BytesMut};

/// Appends `n` in decimal.
pub(crate) fn put_u64(dst: &mut BytesMut, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    dst.put_slice(&buf[i..]);
}

/// Appends `n` in decimal with a leading `-` when negative.
pub(crate) fn put_i64(dst: &mut BytesMut, n: i64) {
    if n < 0 {
        dst.put_u8(b'-');
    }
    put_u64(dst, n.unsigned_abs());
}

/// Number of decimal digits of `n`.
pub(crate) fn digits(mut n: usize) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_decimal() {
        let mut b = BytesMut::new();
        put_u64(&mut b, 0);
        b.put_u8(b' ');
        put_u64(&mut b, u64::MAX);
        b.put_u8(b' ');
        put_i64(&mut b, i64::MIN);
        assert_eq!(&b[..], b"0 18446744073709551615 -9223372036854775808");
        assert_eq!(
            (digits(0), digits(9), digits(10), digits(65536)),
            (1, 1, 2, 5)
        );
    }
}
