//! Payload → [`Event`]: one pass of [`super::scan`] over the object, values kept as slices of
//! the payload and unescaped only when they contain escapes.

use std::borrow::Cow;

use serde::de;

use super::scan::{Kind, Members, ScanError};
use super::{json_str, Category, Event, Field, LogType, Value};

/// What decoding needs besides the payload.
#[derive(Debug, Clone, Copy)]
pub struct DecodeOptions {
    /// Payloads larger than this are invalid (`too_large`).
    pub max_event_bytes: usize,
    /// The log type bound to the source topic (`[kafka.topic_log_types]`), used when the
    /// event has no `logType`.
    pub topic_log_type: Option<LogType>,
    /// Keep `logOrigin`. Unescaping the raw log (often JSON inside JSON, with Korean text) is
    /// the dearest part of decoding, and only a destination with `include_raw_log`, a filter
    /// on it or a ticket reads it. Skipped, it is still checked like every other member.
    pub raw_log: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            max_event_bytes: 1 << 20,
            topic_log_type: None,
            raw_log: true,
        }
    }
}

/// Why a payload is not a valid event. `reason()` is the bounded metric / header label.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Invalid {
    /// Larger than `kafka.max_event_bytes`.
    #[error("event is {len} bytes; the limit is {max}")]
    TooLarge { len: usize, max: usize },
    /// Not UTF-8 JSON.
    #[error("not valid JSON: {0}")]
    NotJson(String),
    /// Valid JSON, but not an object.
    #[error("the JSON value is not an object")]
    NotObject,
    /// A known field has a type event.md does not allow.
    #[error("field `{0}` has the wrong type")]
    WrongType(&'static str),
    /// No `logType` and the topic binds none.
    #[error("`logType` is missing")]
    MissingLogType,
    /// `logType` is not detect, defense or usage.
    #[error("unknown `logType` {0:?}")]
    UnknownLogType(String),
    /// No `category`.
    #[error("`category` is missing")]
    MissingCategory,
    /// `category` is not one of the log type's categories.
    #[error("unknown `category` {category:?} for logType {log_type}")]
    UnknownCategory {
        log_type: &'static str,
        category: String,
    },
}

impl Invalid {
    /// The bounded label used in `events_invalid_total{reason}` and the dead-letter `reason` header.
    pub const fn reason(&self) -> &'static str {
        match self {
            Invalid::TooLarge { .. } => "too_large",
            Invalid::NotJson(_) => "not_json",
            Invalid::NotObject => "not_object",
            Invalid::WrongType(_) => "wrong_type",
            Invalid::MissingLogType => "missing_log_type",
            Invalid::UnknownLogType(_) => "unknown_log_type",
            Invalid::MissingCategory => "missing_category",
            Invalid::UnknownCategory { .. } => "unknown_category",
        }
    }
}

/// Decodes and classifies one Kafka message value. `key` is the message key, taken as the
/// group id when the event has no `groupId`.
pub fn decode<'a>(
    payload: &'a [u8],
    key: Option<&'a [u8]>,
    opts: &DecodeOptions,
) -> Result<Event<'a>, Invalid> {
    let mut ev = Event::new(LogType::Detect, Category::Host);
    decode_into(payload, key, opts, &mut ev)?;
    Ok(ev)
}

/// As [`decode`], into `ev`, an event as [`Event::new`] makes it (its classification is
/// overwritten). An event is about 1 KB: filled where it is kept, it is not copied on the
/// way there (returned by value it was copied twice, 5 % of the consume thread).
pub fn decode_into<'a>(
    payload: &'a [u8],
    key: Option<&'a [u8]>,
    opts: &DecodeOptions,
    ev: &mut Event<'a>,
) -> Result<(), Invalid> {
    if payload.len() > opts.max_event_bytes {
        return Err(Invalid::TooLarge {
            len: payload.len(),
            max: opts.max_event_bytes,
        });
    }
    let first = payload.iter().copied().find(|b| !b.is_ascii_whitespace());
    if first != Some(b'{') {
        return Err(match serde_json::from_slice::<de::IgnoredAny>(payload) {
            Ok(_) => Invalid::NotObject,
            Err(e) => Invalid::NotJson(e.to_string()),
        });
    }
    // One UTF-8 check of the whole payload (SIMD); the scanner then works on a `str`.
    let text = match simdutf8::basic::from_utf8(payload) {
        Ok(t) => t,
        Err(_) => {
            let e = std::str::from_utf8(payload).err();
            return Err(Invalid::NotJson(match e {
                Some(e) => format!("not UTF-8: {e}"),
                None => "not UTF-8".to_owned(),
            }));
        }
    };
    members(ev, text, opts.raw_log).map_err(|e| match e {
        Failure::WrongType(f) => Invalid::WrongType(f.name()),
        Failure::Syntax(e) => not_json(text, e),
    })?;
    classify(ev, key, opts)
}

fn classify<'a>(
    ev: &mut Event<'a>,
    key: Option<&'a [u8]>,
    opts: &DecodeOptions,
) -> Result<(), Invalid> {
    let log_type = match ev.get(Field::LogType) {
        Some(Value::Str(s)) => {
            LogType::from_name(s).ok_or_else(|| Invalid::UnknownLogType(s.to_string()))?
        }
        Some(_) => return Err(Invalid::WrongType("logType")),
        None => opts.topic_log_type.ok_or(Invalid::MissingLogType)?,
    };
    let category = match ev.get(Field::Category) {
        Some(Value::Str(s)) => {
            Category::for_log_type(log_type, s).ok_or_else(|| Invalid::UnknownCategory {
                log_type: log_type.name(),
                category: s.to_string(),
            })?
        }
        Some(_) => return Err(Invalid::WrongType("category")),
        None => return Err(Invalid::MissingCategory),
    };
    match ev.get(Field::RegisterDate) {
        None | Some(Value::Str(_)) | Some(Value::Num(_)) => {}
        Some(_) => return Err(Invalid::WrongType("registerDate")),
    }
    ev.log_type = log_type;
    ev.category = category;
    if ev.get(Field::GroupId).is_none() {
        if let Some(k) = key
            .and_then(|k| std::str::from_utf8(k).ok())
            .filter(|k| !k.is_empty())
        {
            ev.set(Field::GroupId, Some(Value::Str(Cow::Borrowed(k))));
        }
    }
    Ok(())
}

enum Failure {
    Syntax(ScanError),
    WrongType(Field),
}

/// Reads every member into `ev` (classification is filled in by `classify`); `logOrigin`
/// only with `raw_log`.
fn members<'a>(ev: &mut Event<'a>, text: &'a str, raw_log: bool) -> Result<(), Failure> {
    let mut scan = Members::new(text).map_err(Failure::Syntax)?;
    while let Some(m) = scan.next_member().map_err(Failure::Syntax)? {
        let name = string(m.key, m.key_escaped).map_err(Failure::Syntax)?;
        let field = Field::from_name(&name);
        let value = match m.kind {
            Kind::Null => continue,
            Kind::Nested => match field {
                Some(f) => return Err(Failure::WrongType(f)),
                None => Value::Raw(m.value),
            },
            _ if !raw_log && field == Some(Field::LogOrigin) => continue,
            Kind::Bool(b) => Value::Bool(b),
            Kind::Num => Value::Num(m.value),
            Kind::Str { escaped } => Value::Str(string(m.value, escaped).map_err(Failure::Syntax)?),
        };
        match field {
            Some(f) => ev.set(f, Some(value)),
            None => ev.push_extra(name, value),
        }
    }
    Ok(())
}

/// A string token's text: borrowed without escapes, unescaped otherwise. Inlined with the
/// scanner into the member loop (see [`super::scan`]).
#[inline(always)]
fn string(token: &str, escaped: bool) -> Result<Cow<'_, str>, ScanError> {
    if escaped {
        return unescaped(token);
    }
    token
        .get(1..token.len().saturating_sub(1))
        .map(Cow::Borrowed)
        .ok_or(BAD_STRING)
}

#[inline(never)]
fn unescaped(token: &str) -> Result<Cow<'_, str>, ScanError> {
    json_str::unescape(token).ok_or(BAD_STRING)
}

const BAD_STRING: ScanError = ScanError {
    at: 0,
    what: "invalid string",
};

/// The error for a payload that is not JSON: serde_json's wording (line and column) when it
/// agrees, the scanner's otherwise.
fn not_json(text: &str, e: ScanError) -> Invalid {
    match serde_json::from_str::<de::IgnoredAny>(text) {
        Err(se) => Invalid::NotJson(se.to_string()),
        Ok(_) => Invalid::NotJson(format!("{} at byte {}", e.what, e.at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Result<Event<'_>, Invalid> {
        decode(s.as_bytes(), None, &DecodeOptions::default())
    }

    #[test]
    fn decodes_the_event_md_example() {
        let ev = dec(r#"{"logType":"detect","category":"web","groupId":"acme","eventId":"e-0001",
            "registerDate":"2022-06-16T12:28:29+09:00","serverIp":"172.16.12.40","filterRiskLevel":4,
            "logBlocked":"0","custom":{"a":1}}"#)
        .unwrap();
        assert_eq!((ev.log_type, ev.category), (LogType::Detect, Category::Web));
        assert_eq!(ev.text(Field::ServerIp), Some("172.16.12.40"));
        assert_eq!(ev.get(Field::FilterRiskLevel), Some(&Value::Num("4")));
        assert_eq!(ev.get_by_name("custom"), Some(&Value::Raw(r#"{"a":1}"#)));
        assert_eq!(ev.group(), Some("acme"));
    }

    #[test]
    fn missing_means_absent_null_or_empty() {
        let ev = dec(r#"{"logType":"detect","category":"web","serverIp":"","serverName":null}"#)
            .unwrap();
        assert_eq!(ev.get(Field::ServerIp), None);
        assert_eq!(ev.get(Field::ServerName), None);
        assert_eq!(ev.service_name(), "웹");
        assert_eq!(ev.event_name(), "탐지");
    }

    #[test]
    fn reasons() {
        let r = |s: &str| dec(s).unwrap_err().reason();
        assert_eq!(r("{not json"), "not_json");
        assert_eq!(r("[1,2]"), "not_object");
        assert_eq!(r(r#""text""#), "not_object");
        assert_eq!(r(""), "not_json");
        assert_eq!(r(r#"{"category":"web"}"#), "missing_log_type");
        assert_eq!(
            r(r#"{"logType":"alert","category":"web"}"#),
            "unknown_log_type"
        );
        assert_eq!(
            r(r#"{"logType":"usage","category":"web"}"#),
            "unknown_category"
        );
        assert_eq!(r(r#"{"logType":"detect"}"#), "missing_category");
        assert_eq!(r(r#"{"logType":7,"category":"web"}"#), "wrong_type");
        assert_eq!(
            r(r#"{"logType":"detect","category":"web","serverIp":{"x":1}}"#),
            "wrong_type"
        );
        assert_eq!(
            r(r#"{"logType":"detect","category":"web","registerDate":true}"#),
            "wrong_type"
        );
        assert_eq!(
            r(r#"{"logType":"detect","category":"web"} trailing"#),
            "not_json"
        );
        let big = format!(
            r#"{{"logType":"detect","category":"web","logOrigin":"{}"}}"#,
            "x".repeat(100)
        );
        let opts = DecodeOptions {
            max_event_bytes: 64,
            ..Default::default()
        };
        assert_eq!(
            decode(big.as_bytes(), None, &opts).unwrap_err().reason(),
            "too_large"
        );
    }

    #[test]
    fn the_raw_log_is_skipped_only_when_asked() {
        let json =
            br#"{"logType":"detect","category":"web","logOrigin":"GET /a \"b\"","logUri":"/a"}"#;
        let skip = DecodeOptions {
            raw_log: false,
            ..DecodeOptions::default()
        };
        let kept = decode(json, None, &DecodeOptions::default()).unwrap();
        assert_eq!(kept.text(Field::LogOrigin), Some(r#"GET /a "b""#));
        let skipped = decode(json, None, &skip).unwrap();
        assert_eq!(skipped.text(Field::LogOrigin), None);
        assert_eq!(
            skipped.text(Field::LogUri),
            Some("/a"),
            "the other fields stay"
        );
        // Skipped or not, a raw log of the wrong type or broken JSON makes the event invalid.
        let nested = br#"{"logType":"detect","category":"web","logOrigin":{"a":1}}"#;
        assert_eq!(
            decode(nested, None, &skip).unwrap_err(),
            Invalid::WrongType("logOrigin")
        );
        let broken = br#"{"logType":"detect","category":"web","logOrigin":"a\x"}"#;
        assert_eq!(
            decode(broken, None, &skip).unwrap_err().reason(),
            "not_json"
        );
    }

    #[test]
    fn wrong_type_names_the_field() {
        let e = dec(r#"{"logType":"detect","category":"web","serverIp":[1]}"#).unwrap_err();
        assert_eq!(e, Invalid::WrongType("serverIp"));
    }

    #[test]
    fn topic_binding_and_key_fallback() {
        let opts = DecodeOptions {
            topic_log_type: Some(LogType::Defense),
            ..Default::default()
        };
        let ev = decode(br#"{"category":"waf"}"#, Some(b"acme"), &opts).unwrap();
        assert_eq!(
            (ev.log_type, ev.category),
            (LogType::Defense, Category::Waf)
        );
        assert_eq!(ev.group(), Some("acme"));
    }

    #[test]
    fn lone_surrogate_is_replaced_not_rejected() {
        let ev = dec(r#"{"logType":"detect","category":"web","filterName":"a\ud800b"}"#).unwrap();
        assert_eq!(ev.text(Field::FilterName), Some("a\u{FFFD}b"));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!(
            r#"{{"logType":"detect","category":"web","x":{}1{}}}"#,
            "[".repeat(5000),
            "]".repeat(5000)
        );
        // serde_json skips RawValues iteratively: no stack overflow, the value is kept raw.
        let ev = dec(&deep).expect("deep unknown field is kept");
        assert!(matches!(ev.get_by_name("x"), Some(Value::Raw(r)) if r.len() == 10_001));
    }
}
