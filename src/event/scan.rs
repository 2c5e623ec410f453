//! One pass over a JSON object's top-level members, strict like a JSON parser, handing back
//! each key and value as a slice of the payload.
//!
//! Why not serde_json: with `RawValue` it scans every value once, and the event then needs a
//! second scan to learn whether a string has escapes; this scanner learns it on the way (SSE2,
//! 16 bytes per step), which halved the decode time of a typical event. Nested objects and
//! arrays are only validated (iteratively: deep nesting cannot overflow the stack) and kept raw.
//!
//! The small steps are `#[inline(always)]`: inlined into the caller's member loop, the
//! position stays in a register and the `Result`s cost no stores; as calls they cost a quarter
//! of decoding (criterion `decode/harness_mix_1000`: 523 → 392 µs).

/// Where and why the payload is not JSON. The caller asks serde_json for its wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScanError {
    /// Byte offset of the problem.
    pub at: usize,
    /// What was wrong there.
    pub what: &'static str,
}

/// What kind of JSON value a member has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A string; `escaped` when it holds at least one `\` escape.
    Str { escaped: bool },
    /// A number (its text is the value).
    Num,
    /// `true` or `false`.
    Bool(bool),
    /// `null`.
    Null,
    /// An object or array, validated and kept as its text.
    Nested,
}

/// One member: the key's token (quotes included), whether the key has escapes, the value's
/// text (a string's quotes included) and its kind.
pub(crate) struct Member<'a> {
    pub key: &'a str,
    pub key_escaped: bool,
    pub value: &'a str,
    pub kind: Kind,
}

/// Reads the members of the object that is the whole of `s`.
pub(crate) struct Members<'a> {
    s: &'a str,
    i: usize,
    first: bool,
    done: bool,
}

type Result<T> = std::result::Result<T, ScanError>;

impl<'a> Members<'a> {
    /// Starts at the object's `{` (leading whitespace allowed).
    pub fn new(s: &'a str) -> Result<Self> {
        let mut m = Members {
            s,
            i: 0,
            first: true,
            done: false,
        };
        m.ws();
        m.expect(b'{', "expected `{`")?;
        Ok(m)
    }

    /// The next member, `None` after the closing `}` (and nothing but whitespace after it).
    #[inline(always)]
    pub fn next_member(&mut self) -> Result<Option<Member<'a>>> {
        if self.done {
            return Ok(None);
        }
        self.ws();
        let close = if self.first {
            self.first = false;
            self.peek() == Some(b'}')
        } else {
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    self.ws();
                    false
                }
                Some(b'}') => true,
                _ => return self.err("expected `,` or `}`"),
            }
        };
        if close {
            self.i += 1;
            self.done = true;
            self.ws();
            if self.i != self.s.len() {
                return self.err("trailing characters");
            }
            return Ok(None);
        }
        let (key, key_escaped) = self.key_colon()?;
        self.ws();
        let start = self.i;
        let kind = match self.peek() {
            Some(b'{' | b'[') => {
                self.nested()?;
                Kind::Nested
            }
            _ => self.scalar()?,
        };
        Ok(Some(Member {
            key,
            key_escaped,
            value: self.slice(start)?,
            kind,
        }))
    }

    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    #[inline(always)]
    fn err<T>(&self, what: &'static str) -> Result<T> {
        Err(ScanError { at: self.i, what })
    }

    #[inline(always)]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    #[inline(always)]
    fn expect(&mut self, c: u8, what: &'static str) -> Result<()> {
        if self.peek() != Some(c) {
            return self.err(what);
        }
        self.i += 1;
        Ok(())
    }

    /// `s[start..i]`; both ends sit next to ASCII syntax, so they are char boundaries.
    #[inline(always)]
    fn slice(&self, start: usize) -> Result<&'a str> {
        self.s.get(start..self.i).ok_or(ScanError {
            at: start,
            what: "not at a character boundary",
        })
    }

    /// A string token at `"`: returns it with its quotes, and whether it has escapes.
    #[inline(always)]
    fn string(&mut self) -> Result<(&'a str, bool)> {
        let start = self.i;
        let b = self.s.as_bytes();
        self.i += 1;
        let mut escaped = false;
        loop {
            let j = next_special(b, self.i);
            self.i = j;
            match b.get(j) {
                None => return self.err("end of input inside a string"),
                Some(b'"') => {
                    self.i += 1;
                    return Ok((self.slice(start)?, escaped));
                }
                Some(b'\\') => {
                    escaped = true;
                    self.i += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 1,
                        Some(b'u') => {
                            let hex = b.get(self.i + 1..self.i + 5);
                            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                                return self.err("invalid \\u escape");
                            }
                            self.i += 5;
                        }
                        _ => return self.err("invalid escape"),
                    }
                }
                Some(_) => return self.err("control character inside a string"),
            }
        }
    }

    /// A string, number or literal.
    #[inline(always)]
    fn scalar(&mut self) -> Result<Kind> {
        match self.peek() {
            Some(b'"') => self.string().map(|(_, escaped)| Kind::Str { escaped }),
            Some(b'-' | b'0'..=b'9') => self.number().map(|()| Kind::Num),
            Some(b't') => self.word("true").map(|()| Kind::Bool(true)),
            Some(b'f') => self.word("false").map(|()| Kind::Bool(false)),
            Some(b'n') => self.word("null").map(|()| Kind::Null),
            _ => self.err("expected a value"),
        }
    }

    #[inline(always)]
    fn word(&mut self, w: &'static str) -> Result<()> {
        if !self.s.as_bytes()[self.i..].starts_with(w.as_bytes()) {
            return self.err("invalid literal");
        }
        self.i += w.len();
        Ok(())
    }

    #[inline(always)]
    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    #[inline(always)]
    fn number(&mut self) -> Result<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return self.err("invalid number"),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return self.err("invalid number");
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return self.err("invalid number");
            }
        }
        Ok(())
    }

    /// An object or array at `{` / `[`, validated without recursion.
    #[inline(never)]
    fn nested(&mut self) -> Result<()> {
        // The closing bracket each open container expects.
        let mut open: Vec<u8> = Vec::new();
        loop {
            // At a value.
            self.ws();
            match self.peek() {
                Some(opener @ (b'{' | b'[')) => {
                    let close = if opener == b'{' { b'}' } else { b']' };
                    self.i += 1;
                    self.ws();
                    if self.peek() == Some(close) {
                        self.i += 1;
                    } else {
                        open.push(close);
                        if close == b'}' {
                            self.key_colon()?;
                        }
                        continue;
                    }
                }
                _ => {
                    self.scalar()?;
                }
            }
            // After a value: `,` leads to the next one, closers pop.
            loop {
                let Some(&close) = open.last() else {
                    return Ok(());
                };
                self.ws();
                match self.peek() {
                    Some(b',') => {
                        self.i += 1;
                        if close == b'}' {
                            self.ws();
                            self.key_colon()?;
                        }
                        break;
                    }
                    Some(c) if c == close => {
                        self.i += 1;
                        open.pop();
                    }
                    _ => return self.err("expected `,` or a closing bracket"),
                }
            }
        }
    }

    /// A member's key and the `:` after it; returns the key as [`Members::string`] does.
    #[inline(always)]
    fn key_colon(&mut self) -> Result<(&'a str, bool)> {
        if self.peek() != Some(b'"') {
            return self.err("expected a string key");
        }
        let key = self.string()?;
        self.ws();
        self.expect(b':', "expected `:`")?;
        Ok(key)
    }
}

/// Index of the first `"`, `\` or control byte of `b` at or after `i`, or `b.len()`.
#[inline(always)]
fn next_special(b: &[u8], i: usize) -> usize {
    super::find::first::<true>(b, i, b"\"\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(s: &str) -> Result<Vec<(&str, &str, Kind)>> {
        let mut m = Members::new(s)?;
        let mut out = Vec::new();
        while let Some(x) = m.next_member()? {
            out.push((x.key, x.value, x.kind));
        }
        Ok(out)
    }

    #[test]
    fn reads_members_and_kinds() {
        let got = members(
            r#" { "a" : "x\"y" , "b":-1.5e+3,"c":true,"d":null,"e":{"f":[1,{"g":[]},"}"]},"h":[] } "#,
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                (r#""a""#, r#""x\"y""#, Kind::Str { escaped: true }),
                (r#""b""#, "-1.5e+3", Kind::Num),
                (r#""c""#, "true", Kind::Bool(true)),
                (r#""d""#, "null", Kind::Null),
                (r#""e""#, r#"{"f":[1,{"g":[]},"}"]}"#, Kind::Nested),
                (r#""h""#, "[]", Kind::Nested),
            ]
        );
        assert_eq!(members("{}").unwrap(), vec![]);
        assert_eq!(
            members(r#"{"한글":"값 0123456789abcdef0123456789"}"#).unwrap()[0].2,
            Kind::Str { escaped: false }
        );
    }

    /// Whatever serde_json rejects, the scanner rejects (and the reverse), on the edge cases.
    #[test]
    fn agrees_with_serde_json_on_validity() {
        let cases = [
            r#"{"a":1,}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":-}"#,
            r#"{"a":1e}"#,
            r#"{"a":tru}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12G4"}"#,
            "{\"a\":\"tab\there\"}",
            r#"{"a":[1,2,]}"#,
            r#"{"a":{"b"}}"#,
            r#"{"a":{"b":1,}}"#,
            r#"{"a":[}"#,
            r#"{"a":"x"} x"#,
            r#"{"a" "x"}"#,
            r#"{a:1}"#,
            r#"{"a":1"#,
            r#"{"a":"x"#,
            r#"{"a":[1 2]}"#,
            r#"{"a":0.5e-7,"b":[true,false,null,{"c":"\u00e9\n"}]}"#,
            "{\"a\":\"한글 \\\"인용\\\"\"}\n",
        ];
        for c in cases {
            let ours = members(c).is_ok();
            let serde = serde_json::from_str::<serde::de::IgnoredAny>(c).is_ok();
            assert_eq!(ours, serde, "{c}");
        }
    }

    proptest::proptest! {
        /// Any object serde_json writes is read back member by member, values byte-exact,
        /// strings with the right `escaped`: short printable ones, and long ones with escapes
        /// and multi-byte characters anywhere (across the 16-byte steps of the search).
        #[test]
        fn reads_what_serde_json_writes(
            entries in proptest::collection::vec((
                "\\PC{0,8}",
                proptest::prop_oneof!["\\PC{0,40}", "[a\"\\\\\n\u{1}é한 ]{0,150}"],
                0u8..4,
            ), 0..8)
        ) {
            let mut obj = serde_json::Map::new();
            for (k, v, t) in &entries {
                let v = match t {
                    0 => serde_json::json!(v),
                    1 => serde_json::json!(v.len() as f64 / 3.0),
                    2 => serde_json::json!([v, {"n": null}]),
                    _ => serde_json::json!(v.is_empty()),
                };
                obj.insert(k.clone(), v);
            }
            let text = serde_json::to_string(&obj).unwrap();
            let got = members(&text).unwrap();
            proptest::prop_assert_eq!(got.len(), obj.len());
            for ((k, v, kind), (ek, ev)) in got.iter().zip(&obj) {
                proptest::prop_assert_eq!(serde_json::from_str::<String>(k).unwrap(), ek.clone());
                proptest::prop_assert_eq!(*v, serde_json::to_string(ev).unwrap());
                if ev.is_string() {
                    let escaped = v.contains('\\');
                    proptest::prop_assert_eq!(*kind, Kind::Str { escaped });
                }
            }
        }
    }
}
