//! Unescaping of one raw JSON string token, lenient where JSON parsers are strict:
//! a lone UTF-16 surrogate becomes U+FFFD (formats.md §1.8) instead of failing the event.

use std::borrow::Cow;

/// Unescapes `raw`, a complete JSON string token including its quotes (already validated by
/// [`super::scan`]). Borrows when the string has no escapes.
pub(crate) fn unescape(raw: &str) -> Option<Cow<'_, str>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if memchr::memchr(b'\\', inner.as_bytes()).is_none() {
        return Some(Cow::Borrowed(inner));
    }
    let mut out = String::with_capacity(inner.len());
    let bytes = inner.as_bytes();
    // Copy the runs between escapes whole; only the escapes are looked at one by one.
    let mut i = 0;
    while let Some(pos) = memchr::memchr(b'\\', &bytes[i..]) {
        let at = i + pos;
        out.push_str(&inner[i..at]);
        let esc = *bytes.get(at + 1)?;
        i = at + 2;
        match esc {
            b'"' => out.push('"'),
            b'\\' => out.push('\\'),
            b'/' => out.push('/'),
            b'b' => out.push('\u{8}'),
            b'f' => out.push('\u{c}'),
            b'n' => out.push('\n'),
            b'r' => out.push('\r'),
            b't' => out.push('\t'),
            b'u' => {
                let hi = hex4(bytes.get(i..i + 4)?)?;
                i += 4;
                if (0xD800..0xDC00).contains(&hi) {
                    // A high surrogate: valid only when a low surrogate escape follows.
                    let lo = bytes
                        .get(i..i + 6)
                        .filter(|n| n[0] == b'\\' && n[1] == b'u')
                        .and_then(|n| hex4(&n[2..6]))
                        .filter(|lo| (0xDC00..0xE000).contains(lo));
                    match lo {
                        Some(lo) => {
                            i += 6;
                            let cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                            out.push(char::from_u32(cp).unwrap_or('\u{FFFD}'));
                        }
                        None => out.push('\u{FFFD}'),
                    }
                } else {
                    out.push(char::from_u32(hi).unwrap_or('\u{FFFD}'));
                }
            }
            _ => return None,
        }
    }
    out.push_str(&inner[i..]);
    Some(Cow::Owned(out))
}

fn hex4(b: &[u8]) -> Option<u32> {
    if b.len() != 4 {
        return None;
    }
    b.iter()
        .try_fold(0u32, |acc, &c| Some(acc * 16 + char::from(c).to_digit(16)?))
}

#[cfg(test)]
mod tests {
    use super::unescape;

    proptest::proptest! {
        /// Whatever serde_json escapes, we read back exactly (Korean, controls, quotes, emoji).
        #[test]
        fn reads_back_what_serde_json_writes(s in "\\PC*|[\"\\\\\u{0}-\u{1f}한글😀]*") {
            let raw = serde_json::to_string(&s).unwrap();
            proptest::prop_assert_eq!(unescape(&raw).unwrap(), s);
        }
    }

    #[test]
    fn borrows_without_escapes() {
        assert!(matches!(
            unescape(r#""abc 한글""#),
            Some(std::borrow::Cow::Borrowed("abc 한글"))
        ));
    }

    #[test]
    fn standard_escapes_and_pairs() {
        assert_eq!(
            unescape(r#""a\"b\\c\/d\n\r\t\u0041\uD83D\uDE00""#).unwrap(),
            "a\"b\\c/d\n\r\tA😀"
        );
    }

    #[test]
    fn lone_surrogates_become_replacement() {
        assert_eq!(unescape(r#""x\uD800y""#).unwrap(), "x\u{FFFD}y");
        assert_eq!(unescape(r#""x\uDC00y""#).unwrap(), "x\u{FFFD}y");
        assert_eq!(unescape(r#""\uD800\u0041""#).unwrap(), "\u{FFFD}A");
    }
}
