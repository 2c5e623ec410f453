//! Escaping while writing (formats.md §1.8): one scan per value, runs of plain bytes copied
//! with one `put_slice`. Every mode turns C0 controls (except TAB) and DEL into `#ooo` and
//! never lets a raw CR or LF through; the modes differ in what else they escape.

use bytes::{BufMut, BytesMut};

/// PLURA TEXT: line breaks become SP; nothing else is escaped (TEXT has no escape syntax).
pub(crate) const TEXT: u8 = 0;
/// RFC 5424 PARAM-VALUE: TEXT rules plus `"`, `\` and `]` escaped with `\`.
pub(crate) const SD: u8 = 1;
/// CEF header field: TEXT rules plus `\` and `|` escaped.
pub(crate) const CEF_HEAD: u8 = 2;
/// CEF extension value: `\` and `=` escaped, CR/LF written as `\r` / `\n`.
pub(crate) const CEF_EXT: u8 = 3;
/// CEF extension value with `newline = space`: as [`CEF_EXT`] but line breaks become SP.
pub(crate) const CEF_EXT_SPACE: u8 = 4;

#[inline(always)]
fn special<const M: u8>(b: u8) -> bool {
    (b < 0x20 && b != b'\t')
        || b == 0x7f
        || match M {
            SD => matches!(b, b'"' | b'\\' | b']'),
            CEF_HEAD => matches!(b, b'\\' | b'|'),
            CEF_EXT | CEF_EXT_SPACE => matches!(b, b'\\' | b'='),
            _ => false,
        }
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Non-zero when some byte of `x` equals `b` (exact as an "any" test).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline(always)]
fn has_byte(x: u64, b: u8) -> u64 {
    let y = x ^ (LO * u64::from(b));
    y.wrapping_sub(LO) & !y & HI
}

/// Non-zero when some byte of `x` could be special in mode `M`: eight bytes per test, since
/// most of a value is plain text. The portable path; x86_64 uses SSE2 ([`mask16`]).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline(always)]
fn maybe_special<const M: u8>(x: u64) -> u64 {
    let ctl = x.wrapping_sub(LO * 0x20) & !x & HI; // a byte < 0x20 (TAB too: checked per byte)
    let base = ctl | has_byte(x, 0x7f);
    match M {
        SD => base | has_byte(x, b'"') | has_byte(x, b'\\') | has_byte(x, b']'),
        CEF_HEAD => base | has_byte(x, b'\\') | has_byte(x, b'|'),
        CEF_EXT | CEF_EXT_SPACE => base | has_byte(x, b'\\') | has_byte(x, b'='),
        _ => base,
    }
}

/// Bit `k` set when byte `k` of the 16 at `chunk` could be special in mode `M` (SSE2 is part
/// of the x86_64 baseline, so no run-time detection is needed).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(unused_unsafe)] // the intrinsics are safe to call on newer compilers, unsafe on 1.80
fn mask16<const M: u8>(chunk: &[u8; 16]) -> u32 {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128};
    // SAFETY: SSE2 is always available on x86_64; the unaligned load reads exactly the 16
    // bytes of `chunk`.
    mask_reg::<M>(unsafe { _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>()) })
}

/// [`mask16`] of 16 bytes already in a register.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(unused_unsafe)]
fn mask_reg<const M: u8>(x: std::arch::x86_64::__m128i) -> u32 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    // SAFETY: SSE2 is always available on x86_64; these only compute on registers.
    unsafe {
        let eq = |b: u8| unsafe { _mm_cmpeq_epi8(x, _mm_set1_epi8(b as i8)) };
        let low = _mm_set1_epi8(0x1f);
        // max(x, 0x1f) == 0x1f exactly for the bytes <= 0x1f (TAB too: checked per byte).
        let mut m = _mm_or_si128(_mm_cmpeq_epi8(_mm_max_epu8(x, low), low), eq(0x7f));
        m = match M {
            SD => _mm_or_si128(m, _mm_or_si128(eq(b'"'), _mm_or_si128(eq(b'\\'), eq(b']')))),
            CEF_HEAD => _mm_or_si128(m, _mm_or_si128(eq(b'\\'), eq(b'|'))),
            CEF_EXT | CEF_EXT_SPACE => _mm_or_si128(m, _mm_or_si128(eq(b'\\'), eq(b'='))),
            _ => m,
        };
        _mm_movemask_epi8(m) as u32
    }
}

/// The 1..=15 bytes of `s` in a register, zero above, put together from overlapping loads in
/// general registers: a 16-byte load of a stack copy written piecewise stalls on store
/// forwarding, which had been a third of the escape time of short values.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn load_short(s: &[u8]) -> std::arch::x86_64::__m128i {
    use std::ptr::read_unaligned as rd;
    let n = s.len();
    debug_assert!((1..16).contains(&n));
    let p = s.as_ptr();
    // SAFETY: every read lies within `s` (`n` bytes): a pair's second read ends at `n`.
    let (lo, hi) = unsafe {
        if n >= 8 {
            let hi = rd(p.add(n - 8).cast::<u64>()).checked_shr(8 * (16 - n) as u32);
            (rd(p.cast::<u64>()), hi.unwrap_or(0))
        } else if n >= 4 {
            let a = u64::from(rd(p.cast::<u32>()));
            let z = u64::from(rd(p.add(n - 4).cast::<u32>())) >> (8 * (8 - n));
            (a | z << 32, 0)
        } else {
            let mut v = 0u64;
            for (k, &c) in s.iter().enumerate() {
                v |= u64::from(c) << (8 * k);
            }
            (v, 0)
        }
    };
    // SAFETY: SSE2 is always available on x86_64.
    #[allow(unused_unsafe)]
    unsafe {
        std::arch::x86_64::_mm_set_epi64x(hi as i64, lo as i64)
    }
}

/// Index of the first special byte of `b` at or after `i`, or `b.len()`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn next_special<const M: u8>(b: &[u8], mut i: usize) -> usize {
    // First special among the candidates `m` of the 16 bytes at `base` in `b`.
    let first = |mut m: u32, base: usize| {
        while m != 0 {
            let j = m.trailing_zeros() as usize;
            if special::<M>(b[base + j]) {
                return Some(base + j);
            }
            m &= m - 1;
        }
        None
    };
    while let Some(chunk) = b.get(i..i + 16) {
        let chunk: &[u8; 16] = chunk.try_into().expect("16 bytes");
        if let Some(j) = first(mask16::<M>(chunk), i) {
            return j;
        }
        i += 16;
    }
    let n = b.len() - i;
    if n == 0 {
        return b.len();
    }
    // The tail: the last 16 bytes again when there are that many (only the unseen ones
    // count), else the tail's bytes in a register, zero above (the zeros are masked off).
    let found = if b.len() >= 16 {
        let base = b.len() - 16;
        let chunk: &[u8; 16] = b[base..].try_into().expect("16 bytes");
        first(mask16::<M>(chunk) & (!0u32 << (16 - n)), base)
    } else {
        first(mask_reg::<M>(load_short(&b[i..])) & ((1u32 << n) - 1), i)
    };
    found.unwrap_or(b.len())
}

/// Index of the first special byte of `b` at or after `i`, or `b.len()`.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn next_special<const M: u8>(b: &[u8], mut i: usize) -> usize {
    while let Some(chunk) = b.get(i..i + 8) {
        let x = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        if maybe_special::<M>(x) != 0 {
            if let Some(j) = chunk.iter().position(|&c| special::<M>(c)) {
                return i + j;
            }
        }
        i += 8;
    }
    b[i..]
        .iter()
        .position(|&c| special::<M>(c))
        .map_or(b.len(), |j| i + j)
}

/// Copies `n <= 32` bytes with a few fixed-size (overlapping) moves instead of a call into
/// `memcpy`: keys and most values are that short, and a libc call for each piece was the
/// largest single cost of a CEF render (about 25 pieces an event).
///
/// # Safety
/// `src` must be readable and `dst` writable for `n` bytes, and `n <= 32`.
#[inline(always)]
unsafe fn copy_short(src: *const u8, dst: *mut u8, n: usize) {
    use std::ptr::{read_unaligned as rd, write_unaligned as wr};
    debug_assert!(n <= 32);
    // SAFETY (each arm): every read lies in `src[..n]` and every write in `dst[..n]`, since the
    // second move of a pair ends exactly at `n` and starts at or after 0.
    unsafe {
        if n >= 16 {
            let (a, z) = (
                rd(src.cast::<[u8; 16]>()),
                rd(src.add(n - 16).cast::<[u8; 16]>()),
            );
            wr(dst.cast::<[u8; 16]>(), a);
            wr(dst.add(n - 16).cast::<[u8; 16]>(), z);
        } else if n >= 8 {
            let (a, z) = (rd(src.cast::<u64>()), rd(src.add(n - 8).cast::<u64>()));
            wr(dst.cast::<u64>(), a);
            wr(dst.add(n - 8).cast::<u64>(), z);
        } else if n >= 4 {
            let (a, z) = (rd(src.cast::<u32>()), rd(src.add(n - 4).cast::<u32>()));
            wr(dst.cast::<u32>(), a);
            wr(dst.add(n - 4).cast::<u32>(), z);
        } else if n >= 2 {
            let (a, z) = (rd(src.cast::<u16>()), rd(src.add(n - 2).cast::<u16>()));
            wr(dst.cast::<u16>(), a);
            wr(dst.add(n - 2).cast::<u16>(), z);
        } else if n == 1 {
            *dst = *src;
        }
    }
}

/// Appends `b`: short slices through [`copy_short`], longer ones with `put_slice`.
#[inline(always)]
pub(crate) fn put_bytes(dst: &mut BytesMut, b: &[u8]) {
    let n = b.len();
    if n > 32 {
        dst.put_slice(b);
        return;
    }
    dst.reserve(n);
    let spare = dst.spare_capacity_mut();
    debug_assert!(spare.len() >= n);
    // SAFETY: `reserve(n)` left at least `n` spare bytes; `b` has `n`; after the copy those
    // `n` bytes are initialised, so the length may grow by `n`.
    unsafe {
        copy_short(b.as_ptr(), spare.as_mut_ptr().cast::<u8>(), n);
        dst.set_len(dst.len() + n);
    }
}

/// Appends `s` escaped for mode `M`. Most values are short plain text (an address, a method,
/// a name): those are checked and copied right here at the call site; anything else goes
/// through [`put_general`], out of line.
#[inline(always)]
pub(crate) fn put<const M: u8>(dst: &mut BytesMut, s: &str) {
    let b = s.as_bytes();
    if short_and_plain::<M>(b) {
        put_bytes(dst, b);
    } else {
        put_general::<M>(dst, s);
    }
}

/// True when `b` has 1..=32 bytes and none of them may need escaping in mode `M` (a TAB
/// counts as one: the general path decides). One or two 16-byte tests, no loop.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn short_and_plain<const M: u8>(b: &[u8]) -> bool {
    let n = b.len();
    match n {
        1..=15 => mask_reg::<M>(load_short(b)) & ((1u32 << n) - 1) == 0,
        16..=32 => {
            let head: &[u8; 16] = b[..16].try_into().expect("16 bytes");
            let tail: &[u8; 16] = b[n - 16..].try_into().expect("16 bytes");
            mask16::<M>(head) | mask16::<M>(tail) == 0
        }
        _ => false,
    }
}

/// Elsewhere every value takes the general path.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn short_and_plain<const M: u8>(_b: &[u8]) -> bool {
    false
}

/// [`put`] for any value: runs of plain bytes copied whole, each special byte escaped.
#[inline(never)]
fn put_general<const M: u8>(dst: &mut BytesMut, s: &str) {
    let b = s.as_bytes();
    let mut start = 0;
    loop {
        let mut i = next_special::<M>(b, start);
        put_bytes(dst, &b[start..i]);
        let Some(&c) = b.get(i) else { return };
        i += 1;
        match c {
            b'\r' if M == CEF_EXT => dst.put_slice(b"\\r"),
            b'\n' if M == CEF_EXT => dst.put_slice(b"\\n"),
            b'\r' | b'\n' => {
                // CRLF, CR and LF each count as one line break.
                if c == b'\r' && b.get(i) == Some(&b'\n') {
                    i += 1;
                }
                dst.put_u8(b' ');
            }
            c if c < 0x20 || c == 0x7f => {
                dst.put_slice(&[b'#', b'0' + (c >> 6), b'0' + ((c >> 3) & 7), b'0' + (c & 7)])
            }
            c => dst.put_slice(&[b'\\', c]),
        }
        start = i;
    }
}

/// The first `max` characters of `s` (CEF dictionary lengths count characters).
pub(crate) fn cut_chars(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// RFC 5424 header field: every character outside PRINTUSASCII becomes `_`, cut to `max`,
/// empty becomes the NILVALUE `-` (formats.md §1.3 "Sanitising"). Built once per renderer.
pub(crate) fn printusascii(s: &str, max: usize) -> String {
    let out: String = s
        .chars()
        .map(|c| if ('!'..='~').contains(&c) { c } else { '_' })
        .take(max)
        .collect();
    if out.is_empty() {
        "-".into()
    } else {
        out
    }
}

/// RFC 3164 TAG: app_name without its non-alphanumeric characters, at most 32 (formats.md
/// §1.2, V08). Letters of other scripts (Hangul) are alphanumeric and stay.
pub(crate) fn tag3164(app_name: &str) -> String {
    let tag: String = app_name
        .chars()
        .filter(|c| c.is_alphanumeric())
        .take(32)
        .collect();
    // An empty TAG would let the text's first word be read as the TAG.
    if tag.is_empty() {
        "Plura".into()
    } else {
        tag
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc<const M: u8>(s: &str) -> String {
        let mut b = BytesMut::new();
        put::<M>(&mut b, s);
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn text_line_breaks_and_controls() {
        assert_eq!(esc::<TEXT>("a\r\nb\nc\rd"), "a b c d");
        assert_eq!(esc::<TEXT>("a\r\r\nb"), "a  b");
        assert_eq!(esc::<TEXT>("\0x\x07\x7f\t|\"&<"), "#000x#007#177\t|\"&<");
        assert_eq!(esc::<TEXT>("\x1b한"), "#033한");
    }

    #[test]
    fn sd_escapes_exactly_three() {
        assert_eq!(esc::<SD>(r#"a"b\c]d[e=f"#), r#"a\"b\\c\]d[e=f"#);
        assert_eq!(esc::<SD>("x\ny"), "x y");
    }

    #[test]
    fn cef_modes() {
        assert_eq!(
            esc::<CEF_HEAD>(r"SQLi|UNION\SELECT = x"),
            r"SQLi\|UNION\\SELECT = x"
        );
        assert_eq!(esc::<CEF_HEAD>("a\nb"), "a b");
        assert_eq!(esc::<CEF_EXT>("a=b\\c|d\r\ne\n"), r"a\=b\\c|d\r\ne\n");
        assert_eq!(esc::<CEF_EXT_SPACE>("a=b\r\nc\rd"), r"a\=b c d");
        assert_eq!(esc::<CEF_EXT>("\x01"), "#001");
    }

    #[test]
    fn chunked_scan_matches_bytewise_scan() {
        // Specials at every position of 8-byte chunks, behind ASCII and Hangul.
        for pad in 0..40 {
            for sp in ["=", "\\", "|", "\"", "]", "\n", "\r\n", "\0", "\x7f", "\t"] {
                let s = format!("{}{sp}{}", "a".repeat(pad), "한".repeat(pad % 5));
                let slow: String = s
                    .chars()
                    .flat_map(|c| match c {
                        '=' => vec!['\\', '='],
                        '\\' => vec!['\\', '\\'],
                        '\n' => vec!['\\', 'n'],
                        '\r' => vec!['\\', 'r'],
                        '\0' => "#000".chars().collect(),
                        '\x7f' => "#177".chars().collect(),
                        c => vec![c],
                    })
                    .collect();
                assert_eq!(esc::<CEF_EXT>(&s), slow, "{s:?}");
            }
        }
    }

    fn scan_agrees<const M: u8>(b: &[u8]) {
        for i in 0..=b.len() {
            let slow = b[i..]
                .iter()
                .position(|&c| special::<M>(c))
                .map_or(b.len(), |j| i + j);
            assert_eq!(next_special::<M>(b, i), slow, "mode {M} from {i} in {b:?}");
        }
    }

    #[test]
    fn short_copies_write_exactly_the_bytes() {
        let src: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
        for n in 0..=src.len() {
            let mut dst = BytesMut::from(&b"prefix"[..]);
            put_bytes(&mut dst, &src[..n]);
            assert_eq!(&dst[..6], b"prefix");
            assert_eq!(&dst[6..], &src[..n], "length {n}");
        }
    }

    #[test]
    fn fast_scan_agrees_with_bytewise_in_every_mode() {
        let palette: &[u8] = b"ab=|\\\"]\t\r\n\x00\x1f\x20\x7f\x80\xea\xb0\x80\xff#";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..70 {
            for _ in 0..20 {
                let b: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        // Mostly plain bytes, so chunks are skipped as well as searched.
                        if seed % 8 == 0 {
                            palette[(seed >> 8) as usize % palette.len()]
                        } else {
                            b'x'
                        }
                    })
                    .collect();
                scan_agrees::<TEXT>(&b);
                scan_agrees::<SD>(&b);
                scan_agrees::<CEF_HEAD>(&b);
                scan_agrees::<CEF_EXT>(&b);
                scan_agrees::<CEF_EXT_SPACE>(&b);
            }
        }
    }

    fn paths_agree<const M: u8>(s: &str) {
        let (mut fast, mut general) = (BytesMut::new(), BytesMut::new());
        put::<M>(&mut fast, s);
        put_general::<M>(&mut general, s);
        assert_eq!(fast, general, "mode {M}: {s:?}");
    }

    /// The inline path for short plain values writes what the general path writes, at every
    /// length around its 15-, 16- and 32-byte edges, with a special byte anywhere or none.
    #[test]
    fn short_path_agrees_with_the_general_path() {
        let palette = [
            "=", "|", "\\", "\"", "]", "\t", "\r", "\n", "\x00", "\x7f", "한", "#",
        ];
        for len in 0..40 {
            for at in 0..=len {
                for sp in palette.iter().chain([&"x"]) {
                    let s = format!("{}{sp}{}", "x".repeat(at), "y".repeat(len - at));
                    paths_agree::<TEXT>(&s);
                    paths_agree::<SD>(&s);
                    paths_agree::<CEF_HEAD>(&s);
                    paths_agree::<CEF_EXT>(&s);
                    paths_agree::<CEF_EXT_SPACE>(&s);
                }
            }
        }
        assert!(short_and_plain::<CEF_EXT>(b"172.16.12.40") || cfg!(not(target_arch = "x86_64")));
        assert!(!short_and_plain::<CEF_EXT>(b"a=b"));
        assert!(
            !short_and_plain::<TEXT>(&[b'x'; 33]),
            "longer than 32: general path"
        );
    }

    #[test]
    fn portable_swar_agrees_with_bytewise() {
        for x in [
            0u64,
            u64::MAX,
            0x2020_2020_2020_2020,
            0x4141_4141_4141_413d,
            0x0941_4141_4141_4141,
        ] {
            let any = x
                .to_le_bytes()
                .iter()
                .any(|&c| c < 0x20 || c == 0x7f || c == b'=' || c == b'\\');
            assert_eq!(maybe_special::<CEF_EXT>(x) != 0, any, "{x:#x}");
        }
    }

    #[test]
    fn cuts_and_sanitises() {
        assert_eq!(cut_chars("가나다", 2), "가나");
        assert_eq!(cut_chars("abc", 5), "abc");
        assert_eq!(cut_chars("가나다", 3), "가나다");
        assert_eq!(printusascii("Plura 보안", 48), "Plura___");
        assert_eq!(printusascii("", 48), "-");
        assert_eq!(printusascii("abcdef", 3), "abc");
        assert_eq!(tag3164("plura-agent_01"), "pluraagent01");
        assert_eq!(tag3164(&"a".repeat(40)).len(), 32);
        assert_eq!(tag3164("Plura 보안"), "Plura보안");
        assert_eq!(tag3164("-_ .:"), "Plura");
    }
}
