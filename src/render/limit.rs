//! Size rules (formats.md §1.9): where a message over `max_message_bytes` is cut.

/// The largest length `<= max` that ends on a UTF-8 character boundary of `b`.
pub(crate) fn utf8_floor(b: &[u8], max: usize) -> usize {
    if b.len() <= max {
        return b.len();
    }
    let mut i = max;
    // Step back over continuation bytes (10xxxxxx) to the start of the cut character.
    while i > 0 && b[i] & 0xC0 == 0x80 {
        i -= 1;
    }
    i
}

/// CEF: after a byte cut, an odd run of trailing backslashes in `b[from..]` loses one, so no
/// half escape is left at the end (V53). Returns the new length of `b`.
pub(crate) fn drop_dangling_escape(b: &[u8], from: usize) -> usize {
    let run = b[from.min(b.len())..]
        .iter()
        .rev()
        .take_while(|&&c| c == b'\\')
        .count();
    b.len() - run % 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_never_splits_a_character() {
        let s = "ab가나".as_bytes(); // a b [3] [3]
        assert_eq!(utf8_floor(s, 8), 8);
        assert_eq!(utf8_floor(s, 7), 5);
        assert_eq!(utf8_floor(s, 5), 5);
        assert_eq!(utf8_floor(s, 4), 2);
        assert_eq!(utf8_floor(s, 100), 8);
    }

    #[test]
    fn dangling_escapes() {
        assert_eq!(drop_dangling_escape(br"a\", 0), 1);
        assert_eq!(drop_dangling_escape(br"a\\", 0), 3);
        assert_eq!(drop_dangling_escape(br"a\\\", 0), 3);
        assert_eq!(drop_dangling_escape(br"\\\", 2), 2);
        assert_eq!(drop_dangling_escape(b"abc", 0), 3);
    }
}
