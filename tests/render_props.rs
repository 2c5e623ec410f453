//! Property tests of the renderer: arbitrary Unicode and control characters in every field,
//! under arbitrary valid settings, must give well-formed frames (formats.md §1.8, §1.9).

use bytes::BytesMut;
use plura_forwarder::event::{decode, DecodeOptions, ALL_PAIRS};
use plura_forwarder::render::settings::{Framing, Protocol, SettingsInput};
use plura_forwarder::render::{RenderContext, Rendered, Renderer};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

const FIELDS: &[&str] = &[
    "serviceName",
    "eventName",
    "serverIp",
    "serverName",
    "filterName",
    "filterCategoryName",
    "filterRiskLevel",
    "detectIp",
    "detectDescription",
    "detectRatio",
    "detectPath",
    "logConfigPath",
    "logOrigin",
    "logUri",
    "logQuery",
    "logReferer",
    "logRequestBody",
    "logHost",
    "logMethod",
    "logCookie",
    "logUserAgent",
    "logStatus",
    "logRequestContentType",
    "logXForwardedFor",
    "logBlocked",
    "logRequestContentLength",
    "logResponseContentLength",
    "mitreTechniqueId",
    "mitreTechniqueSubId",
    "mitrePlatformName",
    "mitreTacticsName",
    "mitreTechniqueName",
    "eventType",
    "userActionCategoryGroupName",
    "userActionCategoryName",
    "userName",
    "registerDate",
];

fn nasty_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => any::<char>(),
        2 => prop::sample::select(vec![
            '\r', '\n', '\\', '=', '|', '"', ']', '[', '\0', '\x07', '\t', '\x7f', ' ', '%', '-',
        ]),
        1 => prop::sample::select(vec!['한', '글', '\u{FEFF}', '\u{85}', '😀']),
        1 => prop::sample::select(vec!['1', '0', '.', ':']),
    ]
}

/// A field value: a JSON string, or a number / boolean (rendered in its JSON text).
fn json_value() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        8 => value().prop_map(|v| v.map(Value::String)),
        1 => any::<i64>().prop_map(|n| Some(json!(n))),
        1 => any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| Some(json!(f))),
        1 => any::<bool>().prop_map(|b| Some(json!(b))),
    ]
}

fn value() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        1 => Just(None),
        6 => prop::collection::vec(nasty_char(), 0..24).prop_map(|v| Some(v.into_iter().collect())),
        1 => prop::collection::vec(nasty_char(), 300..1200).prop_map(|v| Some(v.into_iter().collect())),
        1 => prop::sample::select(vec!["1.2.3.4", "::1", "0", "1", "10", "90%", "NONE", "-", "true"])
            .prop_map(|s| Some(s.to_owned())),
    ]
}

fn event() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(ALL_PAIRS.to_vec()),
        prop::collection::vec(json_value(), FIELDS.len()),
    )
        .prop_map(|((t, c), vals)| {
            let mut m = Map::new();
            m.insert("logType".into(), json!(t.name()));
            m.insert("category".into(), json!(c.name()));
            for (name, v) in FIELDS.iter().zip(vals) {
                if let Some(v) = v {
                    m.insert((*name).into(), v);
                }
            }
            serde_json::to_vec(&Value::Object(m)).unwrap()
        })
}

fn settings() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec!["rfc3164", "rfc5424", "rfc5425", "cef"]),
        prop::sample::select(vec!["rfc3164", "rfc5424", "none"]),
        prop::sample::select(vec!["lf", "ascii", "space"]),
        prop::sample::select(vec![
            ("udp", None),
            ("tcp", Some("octet-counting")),
            ("tcp", Some("lf")),
            ("tcp", Some("crlf")),
            ("tcp", Some("nul")),
            ("tls", Some("octet-counting")),
        ]),
        prop::sample::select(vec!["auto", "always", "never"]),
        prop::sample::select(vec![480i64, 700, 1024, 65_536]),
        any::<(bool, bool, bool, bool)>(),
        prop::sample::select(vec!["local", "Z", "+09:00", "-03:30"]),
    )
        .prop_map(
            |(format, cef_header, newline, (proto, framing), bom, max, flags, tz)| {
                let (raw, labels, drop, sd) = flags;
                let mut s = json!({
                    "format": format, "cef_header": cef_header, "newline": newline,
                    "protocol": proto, "bom": bom, "max_message_bytes": max,
                    "include_raw_log": raw, "cef_labels": labels, "tz": tz,
                    "on_oversize": if drop { "drop" } else { "truncate" },
                    "msgid": "category",
                });
                if let Some(f) = framing {
                    s["framing"] = json!(f);
                }
                if sd {
                    s["sd_id"] = json!("plura@32473");
                }
                s
            },
        )
}

/// Splits a frame into its SYSLOG-MSG, checking the framing.
fn unframe(frame: &[u8], framing: Option<Framing>) -> Result<&[u8], TestCaseError> {
    Ok(match framing {
        None => frame,
        Some(Framing::OctetCounting) => {
            let sp = frame.iter().position(|&b| b == b' ').expect("MSG-LEN SP");
            let len: usize = std::str::from_utf8(&frame[..sp]).unwrap().parse().unwrap();
            prop_assert!(frame[0] != b'0', "MSG-LEN has no leading zero");
            prop_assert_eq!(len, frame.len() - sp - 1, "MSG-LEN counts octets");
            &frame[sp + 1..]
        }
        Some(f) => {
            let t: &[u8] = match f {
                Framing::Lf => b"\n",
                Framing::Crlf => b"\r\n",
                _ => b"\0",
            };
            prop_assert!(frame.ends_with(t), "trailer");
            &frame[..frame.len() - t.len()]
        }
    })
}

/// An independent CEF reader: header fields split on unescaped `|` (escapes `\|`, `\\`),
/// extension split at `key=` (every `=` in a value is escaped), values unescaped with exactly
/// `\\`, `\=`, `\n`, `\r`. Returns (header fields, extension pairs).
type Params = Vec<(String, String)>;
type Cef = (Vec<String>, Params);

fn parse_cef(s: &str) -> Result<Cef, String> {
    let s = s.strip_prefix("CEF:").ok_or("no CEF:")?;
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut it = s.char_indices();
    let mut ext_start = s.len();
    while let Some((i, c)) = it.next() {
        match c {
            '\\' => match it.next() {
                Some((_, e @ ('|' | '\\'))) => cur.push(e),
                other => return Err(format!("bad header escape {other:?}")),
            },
            '|' => {
                fields.push(std::mem::take(&mut cur));
                if fields.len() == 7 {
                    ext_start = i + 1;
                    break;
                }
            }
            '\r' | '\n' => return Err("line break in header".into()),
            c => cur.push(c),
        }
    }
    if fields.len() != 7 {
        return Err(format!("{} header fields", fields.len()));
    }
    let ext = &s[ext_start..];
    // Key starts: an ASCII alnum run preceded by start-of-extension or SP, followed by a raw '='.
    let b = ext.as_bytes();
    let mut keys = Vec::new(); // (key_start, eq)
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'=' => {
                let mut k = i;
                while k > 0 && b[k - 1].is_ascii_alphanumeric() {
                    k -= 1;
                }
                if k == i || !(k == 0 || b[k - 1] == b' ') {
                    return Err(format!("raw '=' in a value at {i}"));
                }
                keys.push((k, i));
                i += 1;
            }
            _ => i += 1,
        }
    }
    let mut pairs = Vec::new();
    for (n, &(k, eq)) in keys.iter().enumerate() {
        let end = keys.get(n + 1).map_or(ext.len(), |&(next, _)| next - 1);
        let raw = &ext[eq + 1..end];
        let mut v = String::new();
        let mut cs = raw.chars();
        while let Some(c) = cs.next() {
            match c {
                '\\' => match cs.next() {
                    Some('\\') => v.push('\\'),
                    Some('=') => v.push('='),
                    Some('n') => v.push('\n'),
                    Some('r') => v.push('\r'),
                    other => return Err(format!("bad value escape {other:?}")),
                },
                '\r' | '\n' => return Err("raw line break in a value".into()),
                c => v.push(c),
            }
        }
        pairs.push((ext[k..eq].to_owned(), v));
    }
    Ok((fields, pairs))
}

/// An independent reader of the one SD-ELEMENT after the six RFC 5424 header fields:
/// `[id name="value" ...]` with exactly `\"`, `\\`, `\]` escaped. Returns the params and
/// the rest of the message after the SP that follows SD.
fn parse_sd(msg: &str) -> Result<(Params, &str), String> {
    let mut rest = msg;
    for _ in 0..6 {
        let sp = rest.find(' ').ok_or("short header")?;
        rest = &rest[sp + 1..];
    }
    let body = rest.strip_prefix('[').ok_or("no SD element")?;
    let mut params = Vec::new();
    let mut cs = body.char_indices().peekable();
    // SD-ID up to the first SP or ']'.
    while let Some(&(_, c)) = cs.peek() {
        if c == ' ' || c == ']' {
            break;
        }
        cs.next();
    }
    loop {
        match cs.next() {
            Some((i, ']')) => {
                let after = &body[i + 1..];
                return Ok((params, after.strip_prefix(' ').ok_or("no SP after SD")?));
            }
            Some((_, ' ')) => {}
            other => return Err(format!("expected SP or ] got {other:?}")),
        }
        let mut name = String::new();
        loop {
            match cs.next() {
                Some((_, '=')) => break,
                Some((_, c @ ('"' | ']' | ' '))) => return Err(format!("bad name char {c:?}")),
                Some((_, c)) => name.push(c),
                None => return Err("eof in name".into()),
            }
        }
        if cs.next().map(|(_, c)| c) != Some('"') {
            return Err("no opening quote".into());
        }
        let mut value = String::new();
        loop {
            match cs.next() {
                Some((_, '\\')) => match cs.next() {
                    Some((_, c @ ('"' | '\\' | ']'))) => value.push(c),
                    other => return Err(format!("bad SD escape {other:?}")),
                },
                Some((_, '"')) => break,
                Some((_, ']')) => return Err("unescaped ]".into()),
                Some((_, c)) => value.push(c),
                None => return Err("eof in value".into()),
            }
        }
        params.push((name, value));
    }
}

/// What a value becomes after the character rules of §1.8 for a CEF extension value.
fn expect_cef_value(s: &str, space: bool, max_chars: usize) -> String {
    let cut: String = s.chars().take(max_chars).collect();
    let mut out = String::new();
    let mut cs = cut.chars().peekable();
    while let Some(c) = cs.next() {
        match c {
            '\r' | '\n' if space => {
                if c == '\r' && cs.peek() == Some(&'\n') {
                    cs.next();
                }
                out.push(' ');
            }
            '\r' | '\n' | '\t' => out.push(c),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("#{:03o}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn frames_are_well_formed(payload in event(), s in settings(), now in 0i64..4_000_000_000_000_000) {
        let input: SettingsInput = serde_json::from_value(s.clone()).unwrap();
        let Ok(settings) = input.build(Some("host".into()), "Plura".into(), Protocol::Udp) else {
            return Ok(()); // a refused combination (E1, E4): nothing to render
        };
        let Ok(ev) = decode(&payload, None, &DecodeOptions::default()) else {
            return Ok(()); // e.g. a boolean registerDate: invalid by event.md, never rendered
        };
        let (max, framing) = (settings.max_message_bytes, settings.framing);
        let ascii_nl = s["newline"] == "ascii" && s["format"] != "cef";
        let r = Renderer::new(settings);
        let mut dst = BytesMut::from(&b"keep"[..]);
        let outcome = r.render(&ev, &RenderContext { now_us: now }, &mut dst);
        prop_assert_eq!(&dst[..4], b"keep");
        if outcome == Rendered::Oversize {
            prop_assert_eq!(s["on_oversize"].as_str(), Some("drop"));
            prop_assert_eq!(dst.len(), 4, "nothing appended on Oversize");
            return Ok(());
        }
        let msg = unframe(&dst[4..], framing)?;
        let text = std::str::from_utf8(msg);
        prop_assert!(text.is_ok(), "valid UTF-8: {:?}", msg.escape_ascii().to_string());
        prop_assert!(msg.len() <= max, "{} > {}", msg.len(), max);
        let lfs = msg.iter().filter(|&&b| b == b'\n').count();
        prop_assert!(lfs <= usize::from(ascii_nl), "raw LF only as the ascii newline");
        for &b in msg {
            prop_assert!(b >= 0x20 || b == b'\t' || b == b'\n', "raw control {b:#04x}");
            prop_assert!(b != 0x7f, "raw DEL");
        }
        let text = text.unwrap();
        // SD values round-trip through an independent reader (RFC 5424 header, SD on).
        let rfc5424 = s["format"] == "rfc5424" || s["format"] == "rfc5425"
            || (s["format"] == "cef" && s["cef_header"] == "rfc5424");
        if rfc5424 && s.get("sd_id").is_some() && outcome == Rendered::Ok {
            let parsed = parse_sd(text);
            prop_assert!(parsed.is_ok(), "{:?} in {:?}", parsed.err(), text);
            let (params, _) = parsed.unwrap();
            prop_assert_eq!(&params[0], &("logType".to_owned(), ev.log_type.name().to_owned()));
            for (name, got) in &params[2..] {
                let want = match name.as_str() {
                    "eventName" => ev.event_name(),
                    "serviceName" => ev.service_name(),
                    n => ev.text(plura_forwarder::event::Field::from_name(n).unwrap()).unwrap(),
                };
                prop_assert_eq!(got, &expect_cef_value(want, true, usize::MAX), "{}", name);
            }
        }
        // Check the CEF escapes round-trip whenever the message was not cut.
        if s["format"] == "cef" && outcome == Rendered::Ok {
            let at = text.find("CEF:0|").expect("CEF:0|");
            let body = text[at..].trim_start_matches('\u{FEFF}');
            let parsed = parse_cef(body);
            prop_assert!(parsed.is_ok(), "{:?} in {:?}", parsed.err(), body);
            let (header, pairs) = parsed.unwrap();
            let space = s["newline"] == "space";
            let get = |k: &str| pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
            if ev.log_type.name() != "usage" {
                let fname = ev.text(plura_forwarder::event::Field::FilterName).unwrap_or("-");
                let want = expect_cef_value(fname, true, 512);
                prop_assert_eq!(&header[5], &want);
                if s["include_raw_log"] == true {
                    let origin = ev.text(plura_forwarder::event::Field::LogOrigin).unwrap_or("-");
                    prop_assert_eq!(get("cs6"), Some(expect_cef_value(origin, space, 4000)));
                }
            }
        }
    }
}

#[test]
fn the_sd_reader_rejects_what_it_should() {
    let ok = parse_sd(r#"<1>1 - h a - - [x@1 a="1\"\\\]" b="="] msg"#).unwrap();
    assert_eq!(
        ok.0,
        vec![("a".into(), "1\"\\]".into()), ("b".into(), "=".into())]
    );
    assert_eq!(ok.1, "msg");
    assert!(parse_sd(r#"<1>1 - h a - - [x@1 a="1"b"] m"#).is_err());
    assert!(parse_sd(r#"<1>1 - h a - - [x@1 a="1]"] m"#).is_err());
    assert!(parse_sd(r#"<1>1 - h a - - [x@1 a="\n"] m"#).is_err());
}

#[test]
fn the_reader_rejects_what_it_should() {
    assert!(parse_cef("CEF:0|a|b|c|d|e|f|k=v x").is_ok());
    assert!(parse_cef("CEF:0|a|b|c|d|e|f|k=v=x").is_err());
    assert!(parse_cef("CEF:0|a|b|c|d|e|f|k=v\\x").is_err());
    assert!(parse_cef("CEF:0|a|b|c|d|e|f|k=v\ny").is_err());
    assert!(parse_cef("CEF:0|a\\b|b|c|d|e|f|").is_err());
    let (h, p) = parse_cef("CEF:0|a\\|b|b|c|d|e|f|k=a\\=b\\\\ c\\n l=2").unwrap();
    assert_eq!(h[1], "a|b");
    assert_eq!(
        p,
        vec![("k".into(), "a=b\\ c\n".into()), ("l".into(), "2".into())]
    );
}
