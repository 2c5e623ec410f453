//! Unescaping of one raw JSON string token, lenient where JSON parsers are strict:
//! a lone UTF-16 surrogate becomes U+FFFD (formats.md §1.8) instead of failing the event.

use std::borrow::Cow;

/// Unescapes `raw`, a complete JSON string token including its quotes (already validated by
/// [`super::scan`]). Borrows when the string has no escapes.
pub(crate) fn unescape(raw: &str) -> Option<Cow<'_, str>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    let bytes = inner.as_bytes();
    let Some(first) = next_backslash(bytes, 0) else {
        return Some(Cow::Borrowed(inner));
    };
    let mut out = String::with_capacity(inner.len());
    // Copy the runs between escapes whole; only the escapes are looked at one by one. Most runs
    // are a few bytes long: an inline search finds their end sooner than a `memchr` call.
    let (mut i, mut at) = (0, first);
    loop {
        out.push_str(inner.get(i..at)?);
        let esc = *bytes.get(at + 1)?;
        i = at + 2;
        match esc {
            b'u' => i = unicode(bytes, i, &mut out)?,
            _ => out.push(simple_escape(esc)?),
        }
        match next_backslash(bytes, i) {
            Some(next) => at = next,
            None => break,
        }
    }
    out.push_str(inner.get(i..)?);
    Some(Cow::Owned(out))
}

/// The character a one-letter escape stands for.
fn simple_escape(c: u8) -> Option<char> {
    Some(match c {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        _ => return None,
    })
}

/// Writes the character of the `\u` escape whose hex digits start at `i` (a surrogate pair
/// takes the next escape too); returns the index after it.
fn unicode(bytes: &[u8], mut i: usize, out: &mut String) -> Option<usize> {
    let hi = hex4(bytes.get(i..i + 4)?)?;
    i += 4;
    let c = if (0xD800..0xDC00).contains(&hi) {
        // A high surrogate: valid only when a low surrogate escape follows.
        let lo = bytes
            .get(i..i + 6)
            .filter(|n| n[0] == b'\\' && n[1] == b'u')
            .and_then(|n| hex4(&n[2..6]))
            .filter(|lo| (0xDC00..0xE000).contains(lo));
        match lo {
            Some(lo) => {
                i += 6;
                char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
            }
            None => None,
        }
    } else {
        char::from_u32(hi)
    };
    out.push(c.unwrap_or('\u{FFFD}'));
    Some(i)
}

/// Index of the first `\` in `b` at or after `from`: 16 bytes per step, since the run after
/// the last escape is often the long rest of a raw log.
#[inline(always)]
fn next_backslash(b: &[u8], from: usize) -> Option<usize> {
    Some(super::find::first::<false>(b, from, b"\\")).filter(|&j| j < b.len())
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

    /// Escapes before, inside and after 16-byte steps, with Korean runs between them.
    #[test]
    fn long_runs_between_escapes() {
        for run in [0, 1, 15, 16, 17, 31, 33, 100] {
            let text = "한".repeat(run / 3) + &"a".repeat(run % 3);
            let s = format!("{text}\"{text}\\{text}\n{text}");
            let raw = serde_json::to_string(&s).unwrap();
            assert_eq!(unescape(&raw).unwrap(), s, "run {run}");
        }
    }

    #[test]
    fn lone_surrogates_become_replacement() {
        assert_eq!(unescape(r#""x\uD800y""#).unwrap(), "x\u{FFFD}y");
        assert_eq!(unescape(r#""x\uDC00y""#).unwrap(), "x\u{FFFD}y");
        assert_eq!(unescape(r#""\uD800\u0041""#).unwrap(), "\u{FFFD}A");
    }
}
