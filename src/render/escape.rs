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
#[inline(always)]
fn has_byte(x: u64, b: u8) -> u64 {
    let y = x ^ (LO * u64::from(b));
    y.wrapping_sub(LO) & !y & HI
}

/// Non-zero when some byte of `x` could be special in mode `M`: eight bytes per test, since
/// most of a value is plain text.
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

/// Index of the first special byte of `b` at or after `i`, or `b.len()`.
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

/// Appends `s` escaped for mode `M`.
pub(crate) fn put<const M: u8>(dst: &mut BytesMut, s: &str) {
    let b = s.as_bytes();
    let mut start = 0;
    loop {
        let mut i = next_special::<M>(b, start);
        dst.put_slice(&b[start..i]);
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
        for pad in 0..20 {
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
