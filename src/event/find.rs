//! The first byte of a small set in a slice, 16 bytes per step (SSE2 is part of the x86_64
//! baseline, so no run-time detection), the tail byte by byte. JSON strings are mostly plain
//! text: the scanner looks for their end and the unescaper for their escapes this way.

/// Index of the first byte of `b` at or after `i` that is one of `needles` or, with
/// `CONTROLS`, below 0x20; `b.len()` when there is none.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(unused_unsafe)] // the intrinsics are safe to call on newer compilers, unsafe on older
pub(super) fn first<const CONTROLS: bool>(b: &[u8], mut i: usize, needles: &[u8]) -> usize {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8, _mm_setzero_si128,
    };
    while let Some(chunk) = b.get(i..i + 16) {
        // SAFETY: SSE2 is part of the x86_64 baseline; the load reads exactly `chunk`'s 16 bytes.
        let m = unsafe {
            let x = _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>());
            let mut hits = if CONTROLS {
                // max(x, 0x1f) == 0x1f exactly for the bytes <= 0x1f.
                let low = _mm_set1_epi8(0x1f);
                _mm_cmpeq_epi8(_mm_max_epu8(x, low), low)
            } else {
                _mm_setzero_si128()
            };
            for &n in needles {
                hits = _mm_or_si128(hits, _mm_cmpeq_epi8(x, _mm_set1_epi8(n as i8)));
            }
            _mm_movemask_epi8(hits)
        };
        if m != 0 {
            return i + m.trailing_zeros() as usize;
        }
        i += 16;
    }
    bytewise::<CONTROLS>(b, i, needles)
}

/// Index of the first byte of `b` at or after `i` that is one of `needles` or, with
/// `CONTROLS`, below 0x20; `b.len()` when there is none.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub(super) fn first<const CONTROLS: bool>(b: &[u8], i: usize, needles: &[u8]) -> usize {
    bytewise::<CONTROLS>(b, i, needles)
}

#[inline(always)]
fn bytewise<const CONTROLS: bool>(b: &[u8], i: usize, needles: &[u8]) -> usize {
    b.get(i..)
        .and_then(|rest| {
            rest.iter()
                .position(|&c| (CONTROLS && c < 0x20) || needles.contains(&c))
        })
        .map_or(b.len(), |j| i + j)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The 16-byte steps find what a plain byte loop finds, at every start.
        #[test]
        fn agrees_with_a_byte_loop(
            b in proptest::collection::vec(proptest::sample::select(vec![b'"', b'\\', b'a', b'\n', 0x1f, 0x20, 0xea]), 0..70)
        ) {
            for i in 0..=b.len() + 1 {
                proptest::prop_assert_eq!(first::<true>(&b, i, b"\"\\"), bytewise::<true>(&b, i, b"\"\\"));
                proptest::prop_assert_eq!(first::<false>(&b, i, b"\\"), bytewise::<false>(&b, i, b"\\"));
            }
        }
    }
}
