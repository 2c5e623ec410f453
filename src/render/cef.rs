//! CEF body (formats.md §1.7, §2.3): `CEF:0|QubitSecurity|Plura|5|class|name|severity|ext`,
//! header fields escaped for `\` and `|`, extension values for `\` and `=`, typed keys
//! (IP, integer, time) left out when their value is missing or invalid.

use std::net::IpAddr;

use bytes::{BufMut, BytesMut};

use super::escape::{put, put_bytes, CEF_EXT, CEF_EXT_SPACE, CEF_HEAD};
use super::layout::Layout;
use super::num::{put_i64, put_u64};
use super::settings::CefTime;
use super::text::{put_pieces, technique, usage_pair};
use super::time::{parse_epoch_ms, parse_rfc3339_us, put_cef_plura, put_epoch_ms, Zone};
use crate::event::{Event, Field, Value};

/// The per-destination CEF switches.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CefOpts {
    /// `newline = space`: line breaks in values become SP instead of `\r` / `\n`.
    pub space: bool,
    pub labels: bool,
    pub raw_log: bool,
    pub time: CefTime,
}

/// The event time: `registerDate` (RFC 3339 or epoch ms), else the Kafka timestamp; `None`
/// when `registerDate` is present but unreadable.
pub(crate) fn event_time_us(ev: &Event<'_>) -> Option<i64> {
    let ms_to_us = |ms: i64| ms.checked_mul(1000);
    match ev.get(Field::RegisterDate) {
        Some(Value::Str(s)) => parse_rfc3339_us(s).or_else(|| parse_epoch_ms(s).and_then(ms_to_us)),
        Some(Value::Num(n)) => parse_epoch_ms(n).and_then(ms_to_us),
        Some(_) => None,
        None => ev.kafka_timestamp_ms.and_then(ms_to_us),
    }
}

/// CEF header severity (D9): an integer 0..10 or a severity word, else `Unknown`.
fn severity(v: Option<&str>) -> Severity<'static> {
    const WORDS: [&str; 5] = ["Unknown", "Low", "Medium", "High", "Very-High"];
    let Some(s) = v else {
        return Severity::Word("Unknown");
    };
    if !s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = s.bytes().fold(0, |a, b| a * 10 + u64::from(b - b'0'));
        if n <= 10 {
            return Severity::Num(n);
        }
    }
    Severity::Word(
        WORDS
            .iter()
            .find(|w| w.eq_ignore_ascii_case(s))
            .copied()
            .unwrap_or("Unknown"),
    )
}

enum Severity<'a> {
    Num(u64),
    Word(&'a str),
}

/// The CEF extension writer: `key=value` pairs separated by one SP.
struct Ext<'d> {
    dst: &'d mut BytesMut,
    first: bool,
    opts: CefOpts,
}

impl Ext<'_> {
    /// `key` is written ` name=`; the first pair drops the SP.
    #[inline(always)]
    fn key(&mut self, key: &'static str) {
        let k = key.as_bytes();
        put_bytes(self.dst, if self.first { &k[1..] } else { k });
        self.first = false;
    }

    /// `csNLabel=text` right before its field when `cef_labels` is on (D12).
    #[inline(always)]
    fn label(&mut self, label_key: &'static str, text: &str) {
        if self.opts.labels {
            self.key(label_key);
            put_bytes(self.dst, text.as_bytes());
        }
    }

    fn value(&mut self, pieces: &[&str], max: usize) {
        if self.opts.space {
            put_pieces::<CEF_EXT_SPACE>(self.dst, pieces, max);
        } else {
            put_pieces::<CEF_EXT>(self.dst, pieces, max);
        }
    }

    /// A String key: the escaped value cut to `max` characters, or `-`.
    #[inline(always)]
    fn string(&mut self, key: &'static str, v: Option<&str>, max: usize) {
        self.key(key);
        self.value(&[v.unwrap_or("-")], max);
    }

    #[inline(always)]
    fn cs(&mut self, n: usize, label: &str, v: Option<&str>) {
        self.label(CS_LABEL[n], label);
        self.string(CS[n], v, 4000);
    }

    fn cs_pieces(&mut self, n: usize, label: &str, pieces: &[&str]) {
        self.label(CS_LABEL[n], label);
        self.key(CS[n]);
        self.value(pieces, 4000);
    }

    /// An IP address key: exactly one IPv4 or IPv6 address, else left out.
    #[inline(always)]
    fn ip(&mut self, key: &'static str, v: Option<&str>) {
        if let Some(s) = v.filter(|s| is_ip(s)) {
            self.key(key);
            put_bytes(self.dst, s.as_bytes());
        }
    }

    /// An Integer key (`in`, `out`): digits only, else left out. Digits already in canonical
    /// form (no leading zero, fewer than 20, so within `u64`) are copied as they are.
    fn int(&mut self, key: &'static str, v: Option<&str>) {
        let Some(s) = v.filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())) else {
            return;
        };
        if s.len() < 20 && (s.len() == 1 || !s.starts_with('0')) {
            self.key(key);
            put_bytes(self.dst, s.as_bytes());
        } else if let Ok(n) = s.parse::<u64>() {
            self.key(key);
            put_u64(self.dst, n);
        }
    }

    /// `cn1` (Long): optional `-`, digits, an optional trailing `%` dropped (D21).
    fn cn1(&mut self, v: Option<&str>) {
        let n = v
            .map(|s| s.strip_suffix('%').unwrap_or(s))
            .filter(|s| {
                let d = s.strip_prefix('-').unwrap_or(s);
                !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())
            })
            .and_then(|s| s.parse::<i64>().ok());
        if let Some(n) = n {
            self.label(" cn1Label=", "detectRatio");
            self.key(" cn1=");
            put_i64(self.dst, n);
        }
    }

    /// `flexString1Label=compliance flexString1=…` (compliance.md), always labelled.
    fn compliance(&mut self, v: Option<&str>) {
        if let Some(v) = v {
            self.key(" flexString1Label=");
            self.dst.put_slice(b"compliance");
            self.key(" flexString1=");
            self.value(&[v], 1023);
        }
    }

    fn end(&mut self, ev: &Event<'_>, zone: &Zone) {
        let Some(us) = event_time_us(ev) else { return };
        match self.opts.time {
            CefTime::EpochMs => {
                self.key(" end=");
                put_epoch_ms(self.dst, us);
            }
            CefTime::Plura => {
                let c = zone.civil(us);
                if (0..=9999).contains(&c.year) {
                    self.key(" end=");
                    put_cef_plura(self.dst, &c);
                }
            }
        }
    }
}

/// Exactly one IPv4 or IPv6 address, as `IpAddr`'s parser reads it; dotted quads (the
/// common case) are checked without it.
fn is_ip(s: &str) -> bool {
    is_dotted_quad(s.as_bytes()) || (s.contains(':') && s.parse::<IpAddr>().is_ok())
}

/// One pass over a dotted quad: 1..3 digits per part, <= 255, no leading zero.
fn is_dotted_quad(b: &[u8]) -> bool {
    let (mut dots, mut val, mut len) = (0, 0u32, 0);
    for &c in b {
        match c {
            b'0'..=b'9' => {
                if len == 1 && val == 0 {
                    return false;
                }
                val = val * 10 + u32::from(c - b'0');
                len += 1;
                if len > 3 || val > 255 {
                    return false;
                }
            }
            b'.' if len > 0 && dots < 3 => (dots, val, len) = (dots + 1, 0, 0),
            _ => return false,
        }
    }
    dots == 3 && len > 0
}

const CS: [&str; 7] = ["", " cs1=", " cs2=", " cs3=", " cs4=", " cs5=", " cs6="];
const CS_LABEL: [&str; 7] = [
    "",
    " cs1Label=",
    " cs2Label=",
    " cs3Label=",
    " cs4Label=",
    " cs5Label=",
    " cs6Label=",
];

/// Appends the CEF message (header and extension) for `ev` in `layout`; `compliance` (the
/// `std:id,id;std:id` form) goes to `flexString1`, labelled `compliance`, before `cs6`.
pub(crate) fn put_cef(
    dst: &mut BytesMut,
    ev: &Event<'_>,
    layout: Layout,
    opts: CefOpts,
    zone: &Zone,
    compliance: Option<&str>,
) {
    use Field as F;
    dst.put_slice(b"CEF:0|QubitSecurity|Plura|5|");
    if layout == Layout::Usage {
        put_pieces::<CEF_HEAD>(dst, &[ev.text(F::EventType).unwrap_or("-")], 1023);
        dst.put_u8(b'|');
        put_pieces::<CEF_HEAD>(dst, &[ev.event_name()], 512);
        dst.put_slice(b"|0|");
    } else {
        put_pieces::<CEF_HEAD>(dst, &["(", ev.event_name(), ")", ev.service_name()], 1023);
        dst.put_u8(b'|');
        put_pieces::<CEF_HEAD>(dst, &[ev.text(F::FilterName).unwrap_or("-")], 512);
        dst.put_u8(b'|');
        match severity(ev.text(F::FilterRiskLevel)) {
            Severity::Num(n @ 0..=9) => dst.put_u8(b'0' + n as u8),
            Severity::Num(n) => put_u64(dst, n),
            Severity::Word(w) => put::<CEF_HEAD>(dst, w),
        }
        dst.put_u8(b'|');
    }

    let mut x = Ext {
        dst,
        first: true,
        opts,
    };
    x.end(ev, zone);
    let t = |f| ev.text(f);
    match layout {
        Layout::Usage => {
            x.cs(
                1,
                "userActionCategoryGroupName",
                t(F::UserActionCategoryGroupName),
            );
            x.cs_pieces(2, "userActionCategory", &usage_pair(ev));
            x.cs(5, "userName", t(F::UserName));
            x.compliance(compliance);
            return;
        }
        Layout::Web | Layout::Waf | Layout::DataLeak => {
            x.cs(1, "logQuery", t(F::LogQuery));
            x.cs(2, "logUri", t(F::LogUri));
            x.cs(3, "logReferer", t(F::LogReferer));
            x.cs(4, "logRequestBody", t(F::LogRequestBody));
            x.cs(5, "filterCategoryName", t(F::FilterCategoryName));
            x.string(" Name=", t(F::FilterName), usize::MAX);
            x.string(" request=", t(F::LogUri), 1023);
            x.ip(" src=", t(F::DetectIp));
            x.ip(" dvc=", t(F::ServerIp));
            x.string(" dvchost=", t(F::ServerName), 100);
            x.string(" dhost=", t(F::LogHost), 1023);
            x.string(" requestMethod=", t(F::LogMethod), 1023);
            x.string(" requestCookies=", t(F::LogCookie), 1023);
            x.string(" requestClientApplication=", t(F::LogUserAgent), 1023);
            x.string(" categoryOutcome=", t(F::LogStatus), usize::MAX);
            x.string(" requestContext=", t(F::LogRequestContentType), 2048);
            x.ip(" sourceTranslatedAddress=", t(F::LogXForwardedFor));
            match t(F::LogBlocked) {
                Some("1" | "true") => {
                    x.key(" act=");
                    x.dst.put_slice(b"BLOCK");
                }
                Some("0" | "false") => {
                    x.key(" act=");
                    x.dst.put_slice(b"DETECT");
                }
                _ => {}
            }
            x.int(" in=", t(F::LogRequestContentLength));
            x.int(" out=", t(F::LogResponseContentLength));
        }
        _ => {
            if layout == Layout::Mitre {
                let [id, dot, sub] = technique(ev);
                let name = t(F::FilterName).unwrap_or("-");
                x.cs_pieces(
                    1,
                    "filterName(mitreTechnique)",
                    &[name, "(", id, dot, sub, ")"],
                );
            } else {
                x.cs(1, "filterName", t(F::FilterName));
            }
            x.cs(2, "filterCategoryName", t(F::FilterCategoryName));
            match layout {
                Layout::Correlation => x.cn1(t(F::DetectRatio)),
                Layout::AccountTakeover => x.cs(3, "detectPath", t(F::DetectPath)),
                Layout::Application => x.cs(3, "logConfigPath", t(F::LogConfigPath)),
                Layout::Mitre => x.cs(3, "mitrePlatformName", t(F::MitrePlatformName)),
                _ => {}
            }
            x.ip(" src=", t(F::DetectIp));
            x.ip(" dvc=", t(F::ServerIp));
            x.string(" dvchost=", t(F::ServerName), 100);
        }
    }
    x.compliance(compliance);
    if opts.raw_log {
        x.cs(6, "logOrigin", t(F::LogOrigin));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{decode, DecodeOptions};
    use crate::render::settings::Tz;

    fn cef(json: &str, opts: CefOpts) -> String {
        let ev = decode(json.as_bytes(), None, &DecodeOptions::default()).unwrap();
        let mut b = BytesMut::new();
        let zone = Zone::new(Tz::Fixed(9 * 3600));
        put_cef(
            &mut b,
            &ev,
            Layout::of(ev.log_type, ev.category),
            opts,
            &zone,
            None,
        );
        String::from_utf8(b.to_vec()).unwrap()
    }

    const PLAIN: CefOpts = CefOpts {
        space: false,
        labels: false,
        raw_log: false,
        time: CefTime::Plura,
    };

    #[test]
    fn ip_check_agrees_with_std() {
        for s in [
            "1.2.3.4",
            "255.255.255.255",
            "256.1.1.1",
            "01.2.3.4",
            "0.0.0.0",
            "1.2.3",
            "1.2.3.4.5",
            "1..3.4",
            "",
            "::1",
            "fe80::1%eth0",
            "1.2.3.4 ",
            "a.b.c.d",
            "203.0.113.7, 10.0.0.1",
            "2001:db8::1",
            "::ffff:1.2.3.4",
            "1.2.3.04",
            "0000::1",
            "00.1.2.3",
            "1.2.3.4:80",
            "127.0.0.1",
        ] {
            assert_eq!(is_ip(s), s.parse::<IpAddr>().is_ok(), "{s:?}");
        }
    }

    #[test]
    fn severity_rules() {
        let s = |v| match severity(v) {
            Severity::Num(n) => n.to_string(),
            Severity::Word(w) => w.to_string(),
        };
        assert_eq!(s(Some("0")), "0");
        assert_eq!(s(Some("10")), "10");
        assert_eq!(s(Some("11")), "Unknown");
        assert_eq!(s(Some("-")), "Unknown");
        assert_eq!(s(Some("very-high")), "Very-High");
        assert_eq!(s(Some("4.5")), "Unknown");
        assert_eq!(s(None), "Unknown");
    }

    #[test]
    fn correlation_cn1_and_labels() {
        let j = r#"{"logType":"detect","category":"correlation","detectRatio":"90%","filterName":"f","serverIp":"::1"}"#;
        let opts = CefOpts {
            labels: true,
            ..PLAIN
        };
        assert_eq!(
            cef(j, opts),
            "CEF:0|QubitSecurity|Plura|5|(탐지)상관분석|f|Unknown|cs1Label=filterName cs1=f \
             cs2Label=filterCategoryName cs2=- cn1Label=detectRatio cn1=90 dvc=::1 dvchost=-"
        );
        let frac = r#"{"logType":"detect","category":"correlation","detectRatio":87.5}"#;
        assert!(!cef(frac, PLAIN).contains("cn1"));
    }

    #[test]
    fn typed_keys_left_out_when_invalid() {
        let j = r#"{"logType":"defense","category":"waf","logXForwardedFor":"1.2.3.4, 5.6.7.8",
            "logBlocked":"yes","logRequestContentLength":"-","logResponseContentLength":"1,0",
            "registerDate":"yesterday","serverIp":"host"}"#;
        let out = cef(j, PLAIN);
        for k in [
            "sourceTranslatedAddress",
            "act=",
            " in=",
            "out=",
            "end=",
            "dvc=",
        ] {
            assert!(!out.contains(k), "{k} in {out}");
        }
        let w = r#"{"logType":"detect","category":"waf","logBlocked":true,"registerDate":1655349521000}"#;
        let out = cef(w, PLAIN);
        assert!(out.contains("act=BLOCK"), "{out}");
        assert!(out.contains("end=Jun 16 2022 12:18:41"), "{out}");
    }

    #[test]
    fn integer_keys_are_canonical() {
        let with = |len: &str| {
            let j = format!(
                r#"{{"logType":"detect","category":"web","logRequestContentLength":"{len}"}}"#
            );
            let out = cef(&j, PLAIN);
            out.split(' ')
                .find_map(|kv| kv.strip_prefix("in="))
                .map(str::to_owned)
        };
        assert_eq!(with("0").as_deref(), Some("0"));
        assert_eq!(with("1234").as_deref(), Some("1234"));
        assert_eq!(with("007").as_deref(), Some("7"), "leading zeros dropped");
        assert_eq!(
            with("18446744073709551615").as_deref(),
            Some("18446744073709551615"),
            "u64::MAX, 20 digits"
        );
        assert_eq!(with("18446744073709551616"), None, "over u64: left out");
        assert_eq!(with("12a"), None);
    }

    #[test]
    fn newline_space_and_limits() {
        let j = format!(
            r#"{{"logType":"detect","category":"host","filterName":"a\r\nb=c","serverName":"{}"}}"#,
            "가".repeat(150)
        );
        let out = cef(
            &j,
            CefOpts {
                space: true,
                ..PLAIN
            },
        );
        assert!(out.contains("|a b=c|"), "{out}");
        assert!(out.contains(r"cs1=a b\=c "), "{out}");
        assert!(
            out.ends_with(&format!("dvchost={}", "가".repeat(100))),
            "{out}"
        );
        let out = cef(&j, PLAIN);
        assert!(out.contains(r"cs1=a\r\nb\=c "), "{out}");
    }
}
