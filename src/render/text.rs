//! PLURA TEXT body (formats.md §2.3): `TITLE NL RECORD`, RECORD being the layout's fields
//! joined by ` | ` with `-` for a missing value and an optional ` | logOrigin`.

use bytes::{BufMut, BytesMut};

use super::escape::{cut_chars, put, TEXT};
use super::layout::Layout;
use super::settings::Newline;
use crate::event::{Event, Field};

/// Appends `v` escaped for mode `M`, or `-` when missing.
pub(crate) fn put_or_dash<const M: u8>(dst: &mut BytesMut, v: Option<&str>) {
    match v {
        Some(s) => put::<M>(dst, s),
        None => dst.put_u8(b'-'),
    }
}

/// Appends the concatenation of `pieces`, escaped for mode `M` and cut to `max` characters
/// in total (the cut is on the unescaped text, as formats.md §1.9 says for CEF limits).
pub(crate) fn put_pieces<const M: u8>(dst: &mut BytesMut, pieces: &[&str], max: usize) {
    let bytes: usize = pieces.iter().map(|p| p.len()).sum();
    if bytes <= max {
        // Characters never outnumber bytes: nothing to cut.
        pieces.iter().for_each(|p| put::<M>(dst, p));
        return;
    }
    let mut budget = max;
    for p in pieces {
        let c = cut_chars(p, budget);
        put::<M>(dst, c);
        budget -= c.chars().count();
        if budget == 0 {
            break;
        }
    }
}

/// `mitreTechniqueId[.mitreTechniqueSubId]`: the sub-technique only when present and not
/// `-` or `NONE` (V44, V45); `-` when there is no technique id.
pub(crate) fn technique<'e>(ev: &'e Event<'_>) -> [&'e str; 3] {
    match ev.text(Field::MitreTechniqueId) {
        None => ["-", "", ""],
        Some(id) => match ev
            .text(Field::MitreTechniqueSubId)
            .filter(|s| !matches!(*s, "-" | "NONE"))
        {
            Some(sub) => [id, ".", sub],
            None => [id, "", ""],
        },
    }
}

/// `group/name` of a usage log: `-` when both are missing, else `-` for a missing part.
pub(crate) fn usage_pair<'e>(ev: &'e Event<'_>) -> [&'e str; 3] {
    match (
        ev.text(Field::UserActionCategoryGroupName),
        ev.text(Field::UserActionCategoryName),
    ) {
        (None, None) => ["-", "", ""],
        (g, n) => [g.unwrap_or("-"), "/", n.unwrap_or("-")],
    }
}

/// What makes two renderers write the same TEXT body for an event (the layout is the event's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TextKey {
    pub newline: Newline,
    pub raw_log: bool,
    /// The controls are written as a last RECORD field.
    pub compliance: bool,
}

/// The TEXT body of the event being rendered, written by the first renderer that needs it
/// and copied by the others of the same event that write the same body: RFC 3164, RFC 5424
/// and RFC 5425 destinations differ in their headers, not in the body.
#[derive(Debug, Default)]
pub struct SharedText {
    key: Option<TextKey>,
    body: Vec<u8>,
    ascii: bool,
}

impl SharedText {
    /// Forgets the body: call before rendering another event.
    pub fn clear(&mut self) {
        self.key = None;
    }

    /// Appends the body for `key`, written by `write` unless this event's body for `key` is
    /// kept; returns whether it is all ASCII.
    pub(crate) fn put(
        &mut self,
        key: TextKey,
        dst: &mut BytesMut,
        write: impl FnOnce(&mut BytesMut),
    ) -> bool {
        if self.key == Some(key) {
            dst.extend_from_slice(&self.body);
        } else {
            let at = dst.len();
            write(dst);
            self.body.clear();
            self.body.extend_from_slice(&dst[at..]);
            self.ascii = self.body.is_ascii();
            self.key = Some(key);
        }
        self.ascii
    }
}

/// The RECORD writer: ` | ` between fields, `-` for missing ones.
struct Record<'d> {
    dst: &'d mut BytesMut,
    first: bool,
}

impl Record<'_> {
    fn sep(&mut self) {
        if !self.first {
            self.dst.put_slice(b" | ");
        }
        self.first = false;
    }

    fn val(&mut self, v: Option<&str>) {
        self.sep();
        put_or_dash::<TEXT>(self.dst, v);
    }

    fn field(&mut self, ev: &Event<'_>, f: Field) {
        self.val(ev.text(f));
    }

    fn pieces(&mut self, p: &[&str]) {
        self.sep();
        put_pieces::<TEXT>(self.dst, p, usize::MAX);
    }
}

/// Appends `TITLE NL RECORD` for `ev` in `layout`; `compliance` (the `std:id,id;std:id`
/// form) becomes a last field ` | compliance=…`.
pub(crate) fn put_text(
    dst: &mut BytesMut,
    ev: &Event<'_>,
    layout: Layout,
    newline: Newline,
    raw_log: bool,
    compliance: Option<&str>,
) {
    if layout == Layout::Usage {
        if let Some(t) = ev.text(Field::EventType) {
            put::<TEXT>(dst, t);
            dst.put_u8(b' ');
        }
        put::<TEXT>(dst, ev.event_name());
    } else {
        put::<TEXT>(dst, ev.service_name());
        dst.put_u8(b' ');
        put::<TEXT>(dst, ev.event_name());
    }
    dst.put_slice(match newline {
        Newline::Lf => b"\\n",
        Newline::Ascii => b"\n",
        Newline::Space => b" ",
    });

    use Field as F;
    let mut r = Record { dst, first: true };
    if layout != Layout::Usage {
        r.val(Some(ev.service_name()));
    }
    match layout {
        Layout::Correlation => {
            for f in [F::ServerIp, F::ServerName, F::FilterName] {
                r.field(ev, f);
            }
            match ev.text(F::DetectRatio) {
                Some(v) if v.ends_with('%') => r.val(Some(v)),
                Some(v) => r.pieces(&[v, "%"]),
                None => r.val(None),
            }
        }
        Layout::Host | Layout::Network => {
            for f in [F::ServerIp, F::ServerName, F::FilterName] {
                r.field(ev, f);
            }
        }
        Layout::Web | Layout::Waf => {
            for f in [
                F::ServerIp,
                F::ServerName,
                F::FilterCategoryName,
                F::FilterName,
                F::DetectDescription,
            ] {
                r.field(ev, f);
            }
        }
        Layout::AccountTakeover => {
            for f in [
                F::DetectPath,
                F::FilterCategoryName,
                F::FilterName,
                F::DetectIp,
            ] {
                r.field(ev, f);
            }
        }
        Layout::DataLeak => {
            for f in [
                F::ServerIp,
                F::LogUri,
                F::FilterCategoryName,
                F::FilterName,
                F::DetectIp,
            ] {
                r.field(ev, f);
            }
        }
        Layout::Mitre => {
            r.pieces(&technique(ev));
            for f in [
                F::MitrePlatformName,
                F::MitreTacticsName,
                F::MitreTechniqueName,
            ] {
                r.field(ev, f);
            }
        }
        Layout::Application => {
            for f in [F::ServerIp, F::ServerName, F::FilterName, F::LogConfigPath] {
                r.field(ev, f);
            }
        }
        Layout::Defense => {
            for f in [F::ServerIp, F::ServerName, F::FilterName, F::DetectIp] {
                r.field(ev, f);
            }
        }
        Layout::DefenseWaf => {
            for f in [
                F::ServerIp,
                F::ServerName,
                F::FilterCategoryName,
                F::FilterName,
                F::DetectIp,
            ] {
                r.field(ev, f);
            }
        }
        Layout::Usage => {
            r.field(ev, F::UserActionCategoryGroupName);
            r.pieces(&usage_pair(ev));
            r.field(ev, F::UserName);
            r.field(ev, F::DetectDescription);
        }
    }
    if raw_log && layout != Layout::Usage {
        r.field(ev, F::LogOrigin);
    }
    if let Some(c) = compliance {
        r.pieces(&["compliance=", c]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{decode, DecodeOptions};

    fn text(json: &str, nl: Newline, raw: bool) -> String {
        let ev = decode(json.as_bytes(), None, &DecodeOptions::default()).unwrap();
        let mut b = BytesMut::new();
        put_text(
            &mut b,
            &ev,
            Layout::of(ev.log_type, ev.category),
            nl,
            raw,
            None,
        );
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn correlation_ratio_and_missing() {
        let t = |r: &str| {
            text(
                &format!(r#"{{"logType":"detect","category":"correlation"{r}}}"#),
                Newline::Space,
                false,
            )
        };
        assert_eq!(
            t(r#","detectRatio":90"#),
            "상관분석 탐지 상관분석 | - | - | - | 90%"
        );
        assert_eq!(
            t(r#","detectRatio":"87.5%""#),
            "상관분석 탐지 상관분석 | - | - | - | 87.5%"
        );
        assert_eq!(t(""), "상관분석 탐지 상관분석 | - | - | - | -");
    }

    #[test]
    fn mitre_without_id_and_usage_pairs() {
        let m = text(
            r#"{"logType":"detect","category":"mitre_attack","mitreTechniqueSubId":"004"}"#,
            Newline::Lf,
            true,
        );
        assert_eq!(m, r"마이터 탐지\n마이터 | - | - | - | - | -");
        let u = |j: &str| text(j, Newline::Ascii, true);
        assert_eq!(
            u(
                r#"{"logType":"usage","category":"other","eventType":"로그인","userActionCategoryName":"x"}"#
            ),
            "로그인 사용로그\n- | -/x | - | -"
        );
        assert_eq!(
            u(r#"{"logType":"usage","category":"other","userActionCategoryGroupName":"g"}"#),
            "사용로그\ng | g/- | - | -"
        );
    }

    #[test]
    fn pieces_cut_by_characters() {
        let mut b = BytesMut::new();
        put_pieces::<TEXT>(&mut b, &["가나", "(", "다라", ")"], 4);
        assert_eq!(std::str::from_utf8(&b).unwrap(), "가나(다");
    }
}
