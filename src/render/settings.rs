//! Rendering settings of one destination: the format keys of a `[[syslog]]` table (config.md),
//! which are also the flags of `plura-forwarder render`. Checked once here; the renderer
//! only ever sees a valid [`RenderSettings`].

use serde::Deserialize;

/// Message format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// BSD syslog header + PLURA text.
    Rfc3164,
    /// RFC 5424 header + PLURA text.
    Rfc5424,
    /// RFC 5424 over TLS, octet-counted (RFC 5425).
    Rfc5425,
    /// ArcSight CEF behind a configurable syslog prefix.
    Cef,
}

/// Transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// RFC 5426: one message per datagram.
    Udp,
    /// RFC 6587.
    Tcp,
    /// RFC 5425.
    Tls,
}

/// Stream framing (TCP/TLS only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Framing {
    /// `MSG-LEN SP SYSLOG-MSG`.
    OctetCounting,
    /// `SYSLOG-MSG LF`.
    Lf,
    /// `SYSLOG-MSG CR LF`.
    Crlf,
    /// `SYSLOG-MSG NUL`.
    Nul,
}

/// Separator between TITLE and RECORD (formats.md §3.2); the names are the vendor's labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Newline {
    /// The two characters `\n` (vendor "LF(\n)").
    Lf,
    /// One LF byte (vendor "ASCII(#012)").
    Ascii,
    /// One SP.
    Space,
}

/// UTF-8 BOM before an RFC 5424 MSG.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bom {
    /// When MSG has a byte ≥ 0x80.
    Auto,
    /// Always.
    Always,
    /// Never (breaks RFC 5424 §6.4; interop escape hatch).
    Never,
}

/// The syslog prefix of a CEF message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CefHeader {
    /// `<PRI>Mmm dd hh:mm:ss HOST [TAG ]CEF:0|…`.
    Rfc3164,
    /// A full RFC 5424 header before `CEF:0|…`.
    Rfc5424,
    /// Bare `CEF:0|…`.
    None,
}

/// How CEF `end=` is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CefTime {
    /// `MMM dd yyyy HH:mm:ss` in `tz` (the vendor's form).
    Plura,
    /// Milliseconds since the epoch.
    EpochMs,
}

/// What to do with a message over `max_message_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnOversize {
    /// Cut at a UTF-8 boundary (counted).
    Truncate,
    /// Send nothing; the pipeline counts and dead-letters the event.
    Drop,
}

/// Time zone of header stamps and CEF `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tz {
    /// The process's local zone (`TZ`), looked up per timestamp.
    Local,
    /// UTC, written `Z` in RFC 5424.
    Utc,
    /// A fixed offset east of UTC, in seconds.
    Fixed(i32),
}

/// RFC 5424 MSGID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MsgId {
    /// `-`.
    Nil,
    /// `logType.category`.
    Category,
    /// A fixed value.
    Fixed(String),
}

/// A facility or severity as a name or a number.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum NameOrNumber {
    /// A number (range checked).
    Number(i64),
    /// A name such as `local0` or `notice`.
    Name(String),
}

/// The format keys as written by a user (TOML table or `render` flags), before checking.
/// Unknown keys are refused by serde with the key's name.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct SettingsInput {
    pub protocol: Option<Protocol>,
    pub format: Option<Format>,
    pub newline: Option<Newline>,
    pub framing: Option<Framing>,
    pub facility: Option<NameOrNumber>,
    pub severity: Option<NameOrNumber>,
    pub tz: Option<String>,
    pub frac_digits: Option<i64>,
    pub bom: Option<Bom>,
    pub procid: Option<String>,
    pub msgid: Option<String>,
    pub sd_id: Option<String>,
    pub tag_colon: Option<bool>,
    pub cef_header: Option<CefHeader>,
    pub cef_tag: Option<bool>,
    pub cef_labels: Option<bool>,
    pub cef_time: Option<CefTime>,
    pub include_raw_log: Option<bool>,
    pub include_compliance: Option<bool>,
    pub max_message_bytes: Option<i64>,
    pub on_oversize: Option<OnOversize>,
}

/// Checked, complete rendering settings. Equal settings render equal bytes, so the pipeline
/// renders once per distinct value and shares the frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub struct RenderSettings {
    pub format: Format,
    pub protocol: Protocol,
    /// `None` for UDP (one message per datagram, nothing added).
    pub framing: Option<Framing>,
    pub newline: Newline,
    pub facility: u8,
    pub severity: u8,
    pub tz: Tz,
    pub frac_digits: u8,
    pub bom: Bom,
    /// `None` renders `-`.
    pub procid: Option<String>,
    pub msgid: MsgId,
    pub sd_id: Option<String>,
    pub tag_colon: bool,
    pub cef_header: CefHeader,
    pub cef_tag: bool,
    pub cef_labels: bool,
    pub cef_time: CefTime,
    pub include_raw_log: bool,
    pub include_compliance: bool,
    pub max_message_bytes: usize,
    pub on_oversize: OnOversize,
    /// HOSTNAME; `None` renders the NILVALUE `-`.
    pub hostname: Option<String>,
    /// APP-NAME (RFC 5424) / TAG (RFC 3164).
    pub app_name: String,
}

/// A refused setting; the text names the key and the reason (formats.md E1–E4).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, SettingsError> {
    Err(SettingsError(msg.into()))
}

/// Facility names, by code (formats.md §1.1).
pub const FACILITIES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];

/// Severity names, by code.
pub const SEVERITIES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// The smallest `max_message_bytes` accepted (RFC 5424 §6.1: receivers MUST accept 480).
pub const MIN_MESSAGE_BYTES: usize = 480;
/// The largest UDP payload over IPv4.
pub const MAX_UDP_BYTES: usize = 65_507;
/// The largest stream message we agree to build.
pub const MAX_STREAM_BYTES: usize = 16 << 20;

fn code(key: &str, v: &NameOrNumber, names: &[&str]) -> Result<u8, SettingsError> {
    match v {
        NameOrNumber::Number(n) if (0..names.len() as i64).contains(n) => Ok(*n as u8),
        NameOrNumber::Number(n) => err(format!("{key}: out of range {n}")),
        NameOrNumber::Name(s) => match names.iter().position(|x| x == s) {
            Some(i) => Ok(i as u8),
            None => match s.parse::<i64>() {
                Ok(n) => code(key, &NameOrNumber::Number(n), names),
                Err(_) => err(format!(
                    "{key}: unknown name {s:?} (expected {})",
                    names.join(", ")
                )),
            },
        },
    }
}

/// Parses `local`, `Z` (or `UTC`), or `±hh:mm`.
pub fn parse_tz(s: &str) -> Result<Tz, SettingsError> {
    match s {
        "local" => return Ok(Tz::Local),
        "Z" | "z" | "UTC" => return Ok(Tz::Utc),
        _ => {}
    }
    let b = s.as_bytes();
    let ok = b.len() == 6
        && (b[0] == b'+' || b[0] == b'-')
        && b[3] == b':'
        && [1, 2, 4, 5].iter().all(|&i| b[i].is_ascii_digit());
    if !ok {
        return err(format!(
            "tz: {s:?} is not \"local\", \"Z\" or an offset like \"+09:00\""
        ));
    }
    let h = i32::from(b[1] - b'0') * 10 + i32::from(b[2] - b'0');
    let m = i32::from(b[4] - b'0') * 10 + i32::from(b[5] - b'0');
    if h > 23 || m > 59 {
        return err(format!("tz: {s:?} is out of range"));
    }
    let secs = (h * 3600 + m * 60) * if b[0] == b'-' { -1 } else { 1 };
    Ok(Tz::Fixed(secs))
}

/// Checks an SD-ID (RFC 5424 §6.3.2): `name@<enterprise number>`, at most 32 PRINTUSASCII
/// characters without `=`, SP, `]` or `"`.
pub fn check_sd_id(s: &str) -> Result<(), SettingsError> {
    let bad_char = s
        .bytes()
        .find(|&c| !(33..=126).contains(&c) || matches!(c, b'=' | b']' | b'"'));
    if s.is_empty() || s.len() > 32 || bad_char.is_some() {
        return err(format!(
            "sd_id {s:?}: an SD-ID is 1 to 32 printable ASCII characters without '=', ' ', ']' or '\"'"
        ));
    }
    let pen_ok = s.split_once('@').is_some_and(|(name, pen)| {
        !name.is_empty()
            && !pen.is_empty()
            && pen
                .split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
    });
    if !pen_ok {
        return err(format!(
            "sd_id {s:?}: a private SD-ID needs the form name@<IANA enterprise number>, e.g. plura@32473"
        ));
    }
    Ok(())
}

fn check_printusascii(key: &str, s: &str, max: usize) -> Result<(), SettingsError> {
    if s.len() > max || s.bytes().any(|c| !(33..=126).contains(&c)) {
        return err(format!(
            "{key}: {s:?} must be 1 to {max} printable ASCII characters (RFC 5424)"
        ));
    }
    Ok(())
}

impl SettingsInput {
    /// Checks the keys and fills defaults. `hostname` `None` means no host name (NILVALUE);
    /// `default_protocol` is used when `protocol` is not given.
    pub fn build(
        &self,
        hostname: Option<String>,
        app_name: String,
        default_protocol: Protocol,
    ) -> Result<RenderSettings, SettingsError> {
        let format = self.format.unwrap_or(Format::Rfc5424);
        let protocol = self.protocol.unwrap_or(default_protocol);
        let newline = self.newline.unwrap_or(Newline::Lf);
        if format == Format::Rfc5425 && protocol != Protocol::Tls {
            return err("format rfc5425 requires protocol tls");
        }
        let framing = match (protocol, self.framing) {
            (Protocol::Udp, Some(f)) => {
                return err(format!(
                    "framing {}: framing applies to tcp and tls only; udp sends one message per datagram",
                    framing_name(f)
                ))
            }
            (Protocol::Udp, None) => None,
            (_, None) => Some(Framing::OctetCounting),
            (_, Some(f)) if format == Format::Rfc5425 && f != Framing::OctetCounting => {
                return err(format!(
                    "framing {}: format rfc5425 requires framing octet-counting",
                    framing_name(f)
                ))
            }
            (_, Some(f)) => Some(f),
        };
        if newline == Newline::Ascii {
            match framing {
                Some(Framing::Lf) => {
                    return err(
                        "newline ascii writes LF bytes; framing lf uses LF as the frame end",
                    )
                }
                Some(Framing::Crlf) => {
                    return err(
                        "newline ascii writes LF bytes; framing crlf uses CR LF as the frame end",
                    )
                }
                _ => {}
            }
        }
        let facility = match &self.facility {
            Some(v) => code("facility", v, &FACILITIES)?,
            None => 16,
        };
        let severity = match &self.severity {
            Some(v) => code("severity", v, &SEVERITIES)?,
            None => 5,
        };
        let tz = match &self.tz {
            Some(s) => parse_tz(s)?,
            None => Tz::Local,
        };
        let frac_digits = match self.frac_digits {
            Some(n @ 0..=6) => n as u8,
            Some(n) => return err(format!("frac_digits: out of range {n} (0..6)")),
            None => 6,
        };
        let procid = match self.procid.as_deref() {
            None | Some("") | Some("-") => None,
            Some(p) => {
                check_printusascii("procid", p, 128)?;
                Some(p.to_owned())
            }
        };
        let msgid = match self.msgid.as_deref() {
            None | Some("") | Some("-") => MsgId::Nil,
            Some("category") => MsgId::Category,
            Some(m) => {
                check_printusascii("msgid", m, 32)?;
                MsgId::Fixed(m.to_owned())
            }
        };
        let sd_id = match self.sd_id.as_deref() {
            None | Some("") => None,
            Some(s) => {
                check_sd_id(s)?;
                Some(s.to_owned())
            }
        };
        let cef_header = self.cef_header.unwrap_or(CefHeader::Rfc3164);
        // D15: RFC 3164 §4.1 limits a packet with an RFC 3164 header to 1024 bytes.
        let rfc3164_prefix = format == Format::Rfc3164
            || (format == Format::Cef && cef_header == CefHeader::Rfc3164);
        let default_max = match protocol {
            Protocol::Udp if rfc3164_prefix => 1024,
            Protocol::Udp => 2048,
            _ => 65_536,
        };
        let max_message_bytes = match self.max_message_bytes {
            None => default_max,
            Some(n) if n < MIN_MESSAGE_BYTES as i64 => {
                return err(format!(
                    "max_message_bytes: {n} is below the minimum {MIN_MESSAGE_BYTES}"
                ))
            }
            Some(n) if protocol == Protocol::Udp && n > MAX_UDP_BYTES as i64 => {
                return err(format!(
                    "max_message_bytes: {n} is above the largest UDP payload {MAX_UDP_BYTES}"
                ))
            }
            Some(n) if n > MAX_STREAM_BYTES as i64 => {
                return err(format!(
                    "max_message_bytes: {n} is above {MAX_STREAM_BYTES}"
                ))
            }
            Some(n) => n as usize,
        };
        Ok(RenderSettings {
            format,
            protocol,
            framing,
            newline,
            facility,
            severity,
            tz,
            frac_digits,
            bom: self.bom.unwrap_or(Bom::Auto),
            procid,
            msgid,
            sd_id,
            tag_colon: self.tag_colon.unwrap_or(false),
            cef_header,
            cef_tag: self.cef_tag.unwrap_or(true),
            cef_labels: self.cef_labels.unwrap_or(false),
            cef_time: self.cef_time.unwrap_or(CefTime::Plura),
            include_raw_log: self.include_raw_log.unwrap_or(false),
            include_compliance: self.include_compliance.unwrap_or(false),
            max_message_bytes,
            on_oversize: self.on_oversize.unwrap_or(OnOversize::Truncate),
            hostname,
            app_name,
        })
    }
}

/// The config spelling of a framing.
pub const fn framing_name(f: Framing) -> &'static str {
    match f {
        Framing::OctetCounting => "octet-counting",
        Framing::Lf => "lf",
        Framing::Crlf => "crlf",
        Framing::Nul => "nul",
    }
}

impl RenderSettings {
    /// Non-fatal remarks for `check` and the start-up log (formats.md D15, D16).
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.protocol != Protocol::Udp && self.max_message_bytes > 8192 {
            w.push(format!(
                "max_message_bytes {} is above 8192, which RFC 5425 receivers and rsyslog accept by default",
                self.max_message_bytes
            ));
        }
        if self.sd_id.as_deref().is_some_and(|s| s.ends_with("@32473")) {
            w.push("sd_id uses 32473, the documentation enterprise number (RFC 5612); register a real one".into());
        }
        if self.format != Format::Cef
            && (self.cef_header != CefHeader::Rfc3164
                || !self.cef_tag
                || self.cef_labels
                || self.cef_time != CefTime::Plura)
        {
            w.push(
                "cef_header, cef_tag, cef_labels and cef_time apply to format = \"cef\" only"
                    .into(),
            );
        }
        if self.sd_id.is_some()
            && (self.format == Format::Rfc3164
                || (self.format == Format::Cef && self.cef_header != CefHeader::Rfc5424))
        {
            w.push("sd_id applies to an RFC 5424 header only; this destination writes none".into());
        }
        if self.bom == Bom::Never && matches!(self.format, Format::Rfc5424 | Format::Rfc5425) {
            w.push("bom = \"never\" breaks RFC 5424 §6.4 for UTF-8 messages".into());
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(toml_src: &str) -> Result<RenderSettings, SettingsError> {
        let input: SettingsInput = toml::from_str(toml_src).expect("valid toml");
        input.build(Some("h".into()), "Plura".into(), Protocol::Udp)
    }

    #[test]
    fn defaults() {
        let s = build("").unwrap();
        assert_eq!(
            (s.format, s.protocol, s.framing),
            (Format::Rfc5424, Protocol::Udp, None)
        );
        assert_eq!((s.facility, s.severity, s.max_message_bytes), (16, 5, 2048));
        assert_eq!(build("format = \"cef\"").unwrap().max_message_bytes, 1024);
        assert_eq!(
            build("protocol = \"tcp\"").unwrap().framing,
            Some(Framing::OctetCounting)
        );
        assert_eq!(
            build("protocol = \"tcp\"").unwrap().max_message_bytes,
            65_536
        );
    }

    #[test]
    fn spec_errors_e1_to_e4() {
        let e = |s| build(s).unwrap_err().0;
        assert_eq!(
            e("protocol = \"tcp\"\nnewline = \"ascii\"\nframing = \"lf\""),
            "newline ascii writes LF bytes; framing lf uses LF as the frame end"
        );
        assert_eq!(e("facility = 24"), "facility: out of range 24");
        assert!(e("sd_id = \"plura\"").contains("name@<IANA enterprise number>"));
        assert_eq!(
            e("format = \"rfc5425\""),
            "format rfc5425 requires protocol tls"
        );
        assert_eq!(
            e("format = \"rfc5425\"\nprotocol = \"tcp\""),
            "format rfc5425 requires protocol tls"
        );
    }

    #[test]
    fn other_refusals() {
        let e = |s| build(s).unwrap_err().0;
        assert!(e("framing = \"lf\"").contains("udp"));
        assert!(e("max_message_bytes = 479").contains("minimum 480"));
        assert!(e("severity = \"loud\"").starts_with("severity: unknown name"));
        assert!(e("tz = \"+25:00\"").starts_with("tz:"));
        assert!(e("frac_digits = 7").starts_with("frac_digits"));
        assert!(e("procid = \"a b\"").starts_with("procid"));
        assert!(toml::from_str::<SettingsInput>("colour = 1")
            .unwrap_err()
            .to_string()
            .contains("colour"));
    }

    #[test]
    fn rfc3164_udp_default_and_warnings() {
        assert_eq!(
            build("format = \"rfc3164\"").unwrap().max_message_bytes,
            1024
        );
        let cef5424 = build("format = \"cef\"\ncef_header = \"rfc5424\"").unwrap();
        assert_eq!(cef5424.max_message_bytes, 2048);
        assert!(cef5424.warnings().is_empty());
        let odd = build("format = \"rfc3164\"\ncef_labels = true\nsd_id = \"p@1\"").unwrap();
        assert_eq!(odd.warnings().len(), 2, "{:?}", odd.warnings());
    }

    #[test]
    fn names_numbers_and_tz() {
        let s = build("facility = \"kern\"\nseverity = 7\ntz = \"-03:30\"").unwrap();
        assert_eq!(
            (s.facility, s.severity, s.tz),
            (0, 7, Tz::Fixed(-(3 * 3600 + 1800)))
        );
        assert_eq!(build("facility = \"23\"").unwrap().facility, 23);
        assert_eq!(build("tz = \"Z\"").unwrap().tz, Tz::Utc);
        assert!(build("sd_id = \"plura@32473\"").is_ok());
        assert!(build("sd_id = \"plura@32473.1\"").is_ok());
    }
}
