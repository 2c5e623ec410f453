//! Unescaping of one raw JSON string token, lenient where JSON parsers are strict:
//! a lone UTF-16 surrogate becomes U+FFFD (formats.md §1.8) instead of failing the event.

use std::borrow::Cow;

/// Unescapes `raw`, a complete JSON string token including its quotes (already validated by
/// serde_json's RawValue scan). Borrows when the string has no escapes.
pub(crate) fn unescape(raw: &str) -> Option<Cow<'_, str>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.as_bytes().contains(&b'\\') {
        return Some(Cow::Borrowed(inner));
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.char_indices();
    let bytes = inner.as_bytes();
    while let Some((_, c)) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let (i, e) = chars.next()?;
        match e {
            '"' => out.push('"'),
            '\\' => out.push('\\'),
            '/' => out.push('/'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'u' => {
                let hi = hex4(bytes.get(i + 1..i + 5)?)?;
                for _ in 0..4 {
                    chars.next();
                }
                if (0xD800..0xDC00).contains(&hi) {
                    // A high surrogate: valid only when a low surrogate escape follows.
                    let next = bytes.get(i + 5..i + 11);
                    let lo = next
                        .filter(|n| n[0] == b'\\' && n[1] == b'u')
                        .and_then(|n| hex4(&n[2..6]))
                        .filter(|lo| (0xDC00..0xE000).contains(lo));
                    match lo {
                        Some(lo) => {
                            for _ in 0..6 {
                                chars.next();
                            }
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
    Some(Cow::Owned(out))
}

fn hex4(b: &[u8]) -> Option<u32> {
    if b.len() != 4 {
        return None;
    }
    let s = std::str::from_utf8(b).ok()?;
    u32::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::unescape;

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
