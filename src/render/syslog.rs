//! Syslog headers (formats.md §1.2, §1.3), with everything that does not change per event
//! (PRI, host name, APP-NAME/TAG, PROCID, fixed MSGID) rendered once when the renderer is built.

use bytes::{BufMut, BytesMut};

use super::escape::{printusascii, tag3164};
use super::settings::{Format, MsgId, RenderSettings};
use super::time::{put_rfc3164, put_rfc5424, Civil};
use crate::event::Event;

/// The constant parts of a destination's syslog header.
#[derive(Debug)]
pub(crate) struct Headers {
    /// `<PRI>1 ` (RFC 5424).
    pri_version: Vec<u8>,
    /// `<PRI>` (RFC 3164).
    pri: Vec<u8>,
    /// ` HOSTNAME APP-NAME PROCID ` (RFC 5424, between TIMESTAMP and MSGID).
    mid5424: Vec<u8>,
    /// `None`: MSGID is `logType.category`, written per event.
    msgid: Option<Vec<u8>>,
    /// ` HOSTNAME TAG ` / ` HOSTNAME TAG: ` / ` HOSTNAME ` (RFC 3164, after TIMESTAMP).
    tail3164: Vec<u8>,
    frac_digits: u8,
}

impl Headers {
    pub(crate) fn new(s: &RenderSettings) -> Self {
        let pri = format!("<{}>", u32::from(s.facility) * 8 + u32::from(s.severity));
        let host = s
            .hostname
            .as_deref()
            .map_or_else(|| "-".into(), |h| printusascii(h, 255));
        let procid = s
            .procid
            .as_deref()
            .map_or_else(|| "-".into(), |p| printusascii(p, 128));
        let mid5424 = format!(" {host} {} {procid} ", printusascii(&s.app_name, 48));
        let msgid = match &s.msgid {
            MsgId::Nil => Some(b"-".to_vec()),
            MsgId::Fixed(m) => Some(printusascii(m, 32).into_bytes()),
            MsgId::Category => None,
        };
        let tag = s.format != Format::Cef || s.cef_tag;
        let tail3164 = match (tag, s.tag_colon) {
            (false, _) => format!(" {host} "),
            (true, false) => format!(" {host} {} ", tag3164(&s.app_name)),
            (true, true) => format!(" {host} {}: ", tag3164(&s.app_name)),
        };
        Headers {
            pri_version: format!("{pri}1 ").into_bytes(),
            pri: pri.into_bytes(),
            mid5424: mid5424.into_bytes(),
            msgid,
            tail3164: tail3164.into_bytes(),
            frac_digits: s.frac_digits,
        }
    }

    /// `<PRI>Mmm dd hh:mm:ss HOSTNAME TAG `: everything before the payload.
    pub(crate) fn put_3164(&self, dst: &mut BytesMut, now: &Civil) {
        dst.put_slice(&self.pri);
        put_rfc3164(dst, now);
        dst.put_slice(&self.tail3164);
    }

    /// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID `: the caller adds SD and MSG.
    pub(crate) fn put_5424(&self, dst: &mut BytesMut, now: &Civil, utc: bool, ev: &Event<'_>) {
        dst.put_slice(&self.pri_version);
        put_rfc5424(dst, now, self.frac_digits, utc);
        dst.put_slice(&self.mid5424);
        match &self.msgid {
            Some(m) => dst.put_slice(m),
            None => {
                dst.put_slice(ev.log_type.name().as_bytes());
                dst.put_u8(b'.');
                dst.put_slice(ev.category.name().as_bytes());
            }
        }
        dst.put_u8(b' ');
    }
}
