//! Render stage: an [`Event`] → the exact wire bytes of one destination (formats.md):
//! RFC 3164, RFC 5424/5425 or CEF, with framing, size limit and character rules applied.
//!
//! Writes straight into the caller's `BytesMut`; per-destination constants are built once in
//! [`Renderer::new`], so rendering a warm buffer allocates nothing.
//!
//! `include_compliance` (compliance.md) adds the event's controls, passed per render by
//! [`Renderer::render_with`] and pre-formatted at load: CEF `flexString1Label=compliance
//! flexString1=std:id,id;std:id` (before `cs6`, so that the raw log stays last); with an
//! RFC 5424 SD an element `[compliance@<PEN> std="id,id" ...]` after the event's element;
//! otherwise a last TEXT record field ` | compliance=std:id,id;std:id`. Nothing is added for
//! an event without controls.
//!
//! Where formats.md is silent, the renderer does what an operator would expect:
//! - the RFC 5424 header is the same for PLURA text and for CEF (`cef_header = "rfc5424"`):
//!   `msgid`, `procid` and `sd_id` apply to both;
//! - `tag_colon` also applies to the TAG before `CEF:0` in an RFC 3164 prefix;
//! - an RFC 3164 HOSTNAME is sanitised like an RFC 5424 one (`-` when there is none), and a
//!   TAG left empty by sanitising becomes `Plura`;
//! - a CRLF inside a CEF value with `newline = space` is one SP, as in TEXT;
//! - `end` is left out when `registerDate` is present but unreadable (no silent fallback to
//!   the Kafka time), and used from the Kafka timestamp when `registerDate` is absent;
//! - MITRE without a technique id prints `-` for the technique (no sub-technique alone);
//! - a header longer than `max_message_bytes` on its own (possible only with very long
//!   configured names) is cut like the rest: headers are ASCII, so the cut is still UTF-8.

mod cef;
mod escape;
mod framing;
mod layout;
mod limit;
mod num;
mod sd;
pub mod settings;
mod syslog;
mod text;
mod time;

use bytes::{BufMut, BytesMut};

use crate::compliance::Controls;
use crate::event::Event;
use cef::CefOpts;
use layout::Layout;
pub use settings::RenderSettings;
use settings::{Bom, CefHeader, Format, Newline, OnOversize};
use syslog::Headers;
pub use text::SharedText;
use text::TextKey;
use time::{Civil, Zone};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Renders events for one distinct [`RenderSettings`]; built once, shared by reference.
#[derive(Debug)]
pub struct Renderer {
    s: RenderSettings,
    zone: Zone,
    headers: Headers,
    cef: CefOpts,
    /// `compliance@<PEN>` (the PEN of `sd_id`), when SD and `include_compliance` are on.
    compliance_sd_id: Option<Box<str>>,
}

/// Per-render inputs that are not part of the event.
#[derive(Debug, Clone, Copy)]
pub struct RenderContext {
    /// Send time, µs since the epoch: the RFC 3164 / RFC 5424 header stamp.
    pub now_us: i64,
}

/// What [`Renderer::render`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rendered {
    /// The whole message was written.
    Ok,
    /// The message was cut to `max_message_bytes` (`on_oversize = truncate`).
    Truncated,
    /// Over `max_message_bytes` with `on_oversize = drop`: nothing was written.
    Oversize,
}

impl Renderer {
    /// Precomputes the constant header parts of `s`.
    pub fn new(s: RenderSettings) -> Self {
        let compliance_sd_id = match (&s.sd_id, s.include_compliance) {
            (Some(id), true) => id
                .split_once('@')
                .map(|(_, pen)| format!("compliance@{pen}").into()),
            _ => None,
        };
        Renderer {
            compliance_sd_id,
            zone: Zone::new(s.tz),
            headers: Headers::new(&s),
            cef: CefOpts {
                space: s.newline == Newline::Space,
                labels: s.cef_labels,
                raw_log: s.include_raw_log,
                time: s.cef_time,
            },
            s,
        }
    }

    /// The settings this renderer was built from.
    pub fn settings(&self) -> &RenderSettings {
        &self.s
    }

    /// Appends exactly the wire bytes (framing included) of one event to `dst`.
    /// On [`Rendered::Oversize`] (`on_oversize = drop`) `dst` is left as it was.
    pub fn render(&self, ev: &Event<'_>, ctx: &RenderContext, dst: &mut BytesMut) -> Rendered {
        self.render_with(ev, ctx, None, dst)
    }

    /// As [`Renderer::render`], with the event's compliance controls (from
    /// [`Compliance::lookup`](crate::compliance::Compliance::lookup)); they are written only
    /// when the destination has `include_compliance = true`.
    pub fn render_with(
        &self,
        ev: &Event<'_>,
        ctx: &RenderContext,
        compliance: Option<&Controls>,
        dst: &mut BytesMut,
    ) -> Rendered {
        self.render_sharing(ev, ctx, compliance, None, dst)
    }

    /// As [`Renderer::render_with`]; with `shared`, a TEXT body that another renderer already
    /// wrote for this event is copied instead of written again ([`Renderer::shares_text_with`]).
    /// Clear `shared` before each event.
    pub fn render_sharing(
        &self,
        ev: &Event<'_>,
        ctx: &RenderContext,
        compliance: Option<&Controls>,
        shared: Option<&mut SharedText>,
        dst: &mut BytesMut,
    ) -> Rendered {
        let cmp = compliance.filter(|c| self.s.include_compliance && !c.is_empty());
        let frame_start = dst.len();
        let msg_start = framing::begin(dst, self.s.framing);
        let layout = Layout::of(ev.log_type, ev.category);
        let now = self.zone.civil(ctx.now_us);
        let outcome = self.message(ev, cmp, layout, &now, shared, dst, msg_start);
        if outcome == Rendered::Oversize {
            dst.truncate(frame_start);
        } else {
            framing::end(dst, self.s.framing, frame_start, msg_start);
        }
        outcome
    }

    /// Writes the SYSLOG-MSG at `msg_start` and applies `max_message_bytes` (§1.9).
    #[allow(clippy::too_many_arguments)]
    fn message(
        &self,
        ev: &Event<'_>,
        cmp: Option<&Controls>,
        layout: Layout,
        now: &Civil,
        mut shared: Option<&mut SharedText>,
        dst: &mut BytesMut,
        msg_start: usize,
    ) -> Rendered {
        let max = self.s.max_message_bytes;
        let mut body = self.write(ev, cmp, layout, now, shared.as_deref_mut(), dst, true);
        if dst.len() - msg_start <= max {
            return Rendered::Ok;
        }
        if self.s.on_oversize == OnOversize::Drop {
            return Rendered::Oversize;
        }
        // RFC 5424: only MSG is cut; when HEADER + SD + BOM alone exceed the limit, SD goes first.
        if body - msg_start > max && self.s.sd_id.is_some() && self.has_5424_header() {
            dst.truncate(msg_start);
            body = self.write(ev, cmp, layout, now, shared, dst, false);
        }
        let mut end = msg_start + limit::utf8_floor(&dst[msg_start..], max);
        if self.s.format == Format::Cef {
            end = limit::drop_dangling_escape(&dst[..end], body);
        }
        dst.truncate(end);
        Rendered::Truncated
    }

    /// Whether two renderers write the same TEXT body for every event (CEF writes none).
    pub fn shares_text_with(&self, other: &Renderer) -> bool {
        let text = |r: &Renderer| r.s.format != Format::Cef;
        text(self)
            && text(other)
            && self.text_key(self.text_compliance()) == other.text_key(other.text_compliance())
    }

    /// Whether an event's controls go into the TEXT body: with an RFC 5424 SD they travel
    /// in their own SD element instead.
    fn text_compliance(&self) -> bool {
        self.s.include_compliance && (self.s.sd_id.is_none() || self.s.format == Format::Rfc3164)
    }

    fn text_key(&self, compliance: bool) -> TextKey {
        TextKey {
            newline: self.s.newline,
            raw_log: self.s.include_raw_log,
            compliance,
        }
    }

    fn has_5424_header(&self) -> bool {
        match self.s.format {
            Format::Rfc5424 | Format::Rfc5425 => true,
            Format::Cef => self.s.cef_header == CefHeader::Rfc5424,
            Format::Rfc3164 => false,
        }
    }

    /// Writes the whole SYSLOG-MSG; returns where the payload (after any BOM) starts.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        ev: &Event<'_>,
        cmp: Option<&Controls>,
        layout: Layout,
        now: &Civil,
        shared: Option<&mut SharedText>,
        dst: &mut BytesMut,
        with_sd: bool,
    ) -> usize {
        let s = &self.s;
        let text_cmp = cmp.filter(|_| self.text_compliance()).map(Controls::as_str);
        // Returns whether the body is all ASCII when that is known without a look.
        let text = |dst: &mut BytesMut| {
            let write = |dst: &mut BytesMut| {
                text::put_text(dst, ev, layout, s.newline, s.include_raw_log, text_cmp);
            };
            match shared {
                Some(shared) => Some(shared.put(self.text_key(text_cmp.is_some()), dst, write)),
                None => {
                    write(dst);
                    None
                }
            }
        };
        let cef_cmp = cmp.map(Controls::as_str);
        let cef = |dst: &mut BytesMut| {
            cef::put_cef(dst, ev, layout, self.cef, &self.zone, cef_cmp);
            None
        };
        match (s.format, s.cef_header) {
            (Format::Rfc3164, _) => {
                self.headers.put_3164(dst, now);
                let body = dst.len();
                let _ = text(dst);
                body
            }
            (Format::Rfc5424 | Format::Rfc5425, _) => {
                self.put_5424_header(ev, cmp, layout, now, dst, with_sd);
                self.with_bom(dst, text)
            }
            (Format::Cef, CefHeader::Rfc3164) => {
                self.headers.put_3164(dst, now);
                let body = dst.len();
                let _ = cef(dst);
                body
            }
            (Format::Cef, CefHeader::Rfc5424) => {
                self.put_5424_header(ev, cmp, layout, now, dst, with_sd);
                self.with_bom(dst, cef)
            }
            (Format::Cef, CefHeader::None) => {
                let body = dst.len();
                let _ = cef(dst);
                body
            }
        }
    }

    /// HEADER SP STRUCTURED-DATA SP.
    fn put_5424_header(
        &self,
        ev: &Event<'_>,
        cmp: Option<&Controls>,
        layout: Layout,
        now: &Civil,
        dst: &mut BytesMut,
        with_sd: bool,
    ) {
        self.headers.put_5424(dst, now, self.zone.is_utc(), ev);
        match (&self.s.sd_id, with_sd) {
            (Some(id), true) => {
                sd::put_sd(dst, id, ev, layout, self.s.include_raw_log);
                if let (Some(c), Some(cid)) = (cmp, &self.compliance_sd_id) {
                    dst.put_u8(b'[');
                    dst.put_slice(cid.as_bytes());
                    dst.put_slice(c.sd_params().as_bytes());
                    dst.put_u8(b']');
                }
            }
            _ => dst.put_u8(b'-'),
        }
        dst.put_u8(b' ');
    }

    /// Writes the RFC 5424 MSG through `f`, preceded by the BOM per `bom` (§1.3); returns
    /// where MSG starts after the BOM. `auto` writes the BOM first and takes it out again
    /// for a pure-ASCII MSG, since most PLURA text is Korean; `f` says whether MSG is ASCII
    /// when it knows.
    fn with_bom(&self, dst: &mut BytesMut, f: impl FnOnce(&mut BytesMut) -> Option<bool>) -> usize {
        match self.s.bom {
            Bom::Never => {
                let body = dst.len();
                let _ = f(dst);
                body
            }
            Bom::Always => {
                dst.put_slice(BOM);
                let body = dst.len();
                let _ = f(dst);
                body
            }
            Bom::Auto => {
                let at = dst.len();
                dst.put_slice(BOM);
                let body = dst.len();
                let ascii = f(dst);
                if ascii.unwrap_or_else(|| dst[body..].is_ascii()) {
                    let end = dst.len();
                    dst.copy_within(body..end, at);
                    dst.truncate(end - BOM.len());
                    at
                } else {
                    body
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
