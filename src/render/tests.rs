//! Byte-exact renderer tests from inline settings, for rules the conformance file does not
//! pin down: SD fallback, drop leaves the buffer alone, BOM modes, header corner cases.

use bytes::BytesMut;

use super::settings::{Protocol, SettingsInput};
use super::{RenderContext, Rendered, Renderer};
use crate::event::{decode, DecodeOptions};

/// 2022-06-16T12:44:15.123456+09:00
const NOW_US: i64 = 1_655_351_055_123_456;

const HOST: &str = r#"{"logType":"detect","category":"host","serviceName":"호스트","eventName":"탐지",
    "serverIp":"172.16.12.41","serverName":"Harry-SP-L","filterName":"로그인 성공",
    "filterCategoryName":"로그온","filterRiskLevel":4,"detectIp":"172.16.20.192",
    "registerDate":"2022-06-16T12:18:41+09:00"}"#;

fn renderer(toml_src: &str, host: Option<&str>) -> Renderer {
    let input: SettingsInput = toml::from_str(toml_src).expect("toml");
    let s = input
        .build(host.map(Into::into), "Plura".into(), Protocol::Udp)
        .expect("valid settings");
    Renderer::new(s)
}

fn render_with(r: &Renderer, json: &str) -> (Rendered, String) {
    let ev = decode(json.as_bytes(), None, &DecodeOptions::default()).expect("event");
    let mut b = BytesMut::new();
    let out = r.render(&ev, &RenderContext { now_us: NOW_US }, &mut b);
    (out, String::from_utf8(b.to_vec()).expect("UTF-8"))
}

fn render(toml_src: &str, json: &str) -> String {
    let (out, s) = render_with(&renderer(toml_src, Some("h")), json);
    assert_eq!(out, Rendered::Ok);
    s
}

#[test]
fn bom_modes() {
    let ascii = r#"{"logType":"detect","category":"network","serviceName":"N","eventName":"D"}"#;
    let base = "tz = \"Z\"\nframing = \"octet-counting\"\nprotocol = \"tcp\"\nbom = ";
    assert_eq!(
        render(&format!("{base}\"auto\""), ascii),
        "67 <133>1 2022-06-16T03:44:15.123456Z h Plura - - - N D\\nN | - | - | -"
    );
    assert_eq!(
        render(&format!("{base}\"always\""), ascii),
        "70 <133>1 2022-06-16T03:44:15.123456Z h Plura - - - \u{FEFF}N D\\nN | - | - | -"
    );
    let never = render(&format!("{base}\"never\""), HOST);
    assert!(never.contains(" h Plura - - - 호스트 탐지"), "{never}");
    assert!(!never.contains('\u{FEFF}'));
    // RFC 3164 never writes a BOM.
    assert!(!render("format = \"rfc3164\"\nbom = \"always\"", HOST).contains('\u{FEFF}'));
}

#[test]
fn rfc3164_host_tag_and_colon_for_cef() {
    let r = renderer("format = \"cef\"\ntag_colon = true\ntz = \"+09:00\"", None);
    let (_, s) = render_with(&r, HOST);
    assert!(s.starts_with("<133>Jun 16 12:44:15 - Plura: CEF:0|"), "{s}");
    let r = renderer(
        "format = \"rfc3164\"\ntz = \"+09:00\"",
        Some("my host\u{7}"),
    );
    let (_, s) = render_with(&r, HOST);
    assert!(
        s.starts_with("<133>Jun 16 12:44:15 my_host_ Plura 호스트"),
        "{s}"
    );
}

#[test]
fn cef_in_rfc5424_keeps_sd_and_msgid() {
    let s = render(
        "format = \"cef\"\ncef_header = \"rfc5424\"\nsd_id = \"p@32473\"\nmsgid = \"category\"\n\
         procid = \"77\"\ntz = \"-03:30\"\nfrac_digits = 0",
        HOST,
    );
    assert!(
        s.starts_with(
            "<133>1 2022-06-16T00:14:15-03:30 h Plura 77 detect.host [p@32473 logType=\"detect\" \
             category=\"host\" eventName=\"탐지\" serviceName=\"호스트\" serverIp=\"172.16.12.41\""
        ),
        "{s}"
    );
    assert!(
        s.contains("filterRiskLevel=\"4\"] \u{FEFF}CEF:0|QubitSecurity|"),
        "{s}"
    );
    assert!(s.contains("|4|end=Jun 15 2022 23:48:41 cs1="), "{s}");
}

#[test]
fn sd_goes_before_msg_is_cut() {
    let long = format!(
        r#"{{"logType":"detect","category":"host","filterName":"{}","logOrigin":"{}"}}"#,
        "f".repeat(400),
        "o".repeat(2000)
    );
    let base = "sd_id = \"p@32473\"\ninclude_raw_log = true\ntz = \"Z\"\nmax_message_bytes = 480";
    let (out, s) = render_with(&renderer(base, Some("h")), &long);
    assert_eq!(out, Rendered::Truncated);
    assert_eq!(s.len(), 480);
    assert!(
        s.starts_with("<133>1 2022-06-16T03:44:15.123456Z h Plura - - - \u{FEFF}호스트 탐지"),
        "{s}"
    );

    // SD that fits stays; only MSG is cut. serviceName is once in SD, twice in MSG.
    let small = format!(
        r#"{{"logType":"detect","category":"host","serviceName":"{}"}}"#,
        "가".repeat(100)
    );
    let base = "sd_id = \"p@32473\"\ntz = \"Z\"\nmax_message_bytes = 1000";
    let (out, s) = render_with(&renderer(base, Some("h")), &small);
    assert_eq!(out, Rendered::Truncated);
    assert!(s.len() <= 1000 && s.len() >= 998, "{}", s.len());
    assert!(s.contains("[p@32473 logType=\"detect\""), "{s}");
}

#[test]
fn drop_leaves_the_buffer_alone_and_framing_counts_the_cut() {
    let big = format!(
        r#"{{"logType":"detect","category":"host","logOrigin":"{}"}}"#,
        "x".repeat(3000)
    );
    let ev = decode(big.as_bytes(), None, &DecodeOptions::default()).unwrap();
    let ctx = RenderContext { now_us: NOW_US };
    let drop = renderer(
        "include_raw_log = true\non_oversize = \"drop\"\nmax_message_bytes = 1000\n\
         protocol = \"tcp\"",
        Some("h"),
    );
    let mut b = BytesMut::from(&b"earlier frames"[..]);
    assert_eq!(drop.render(&ev, &ctx, &mut b), Rendered::Oversize);
    assert_eq!(&b[..], b"earlier frames");

    let cut = renderer(
        "include_raw_log = true\nmax_message_bytes = 1000\nprotocol = \"tcp\"",
        Some("h"),
    );
    assert_eq!(cut.render(&ev, &ctx, &mut b), Rendered::Truncated);
    assert!(b[14..].starts_with(b"1000 <133>1 "));
    assert_eq!(b.len(), 14 + 5 + 1000);
}

#[test]
fn cef_cut_leaves_no_half_escape() {
    for pad in 0..4 {
        let ev = format!(
            r#"{{"logType":"detect","category":"host","filterName":"{}","logOrigin":"{}"}}"#,
            "f".repeat(pad),
            "\\\\".repeat(600)
        );
        let r = renderer(
            "format = \"cef\"\ninclude_raw_log = true\nmax_message_bytes = 480",
            Some("h"),
        );
        let (out, s) = render_with(&r, &ev);
        assert_eq!(out, Rendered::Truncated);
        let run = s.bytes().rev().take_while(|&b| b == b'\\').count();
        assert_eq!(run % 2, 0, "pad {pad}: {s}");
        assert!(s.len() == 480 || s.len() == 479);
    }
}

#[test]
fn every_pair_renders_in_every_format() {
    for (t, c) in crate::event::ALL_PAIRS {
        let json = format!(r#"{{"logType":"{}","category":"{}"}}"#, t.name(), c.name());
        for f in ["rfc3164", "rfc5424", "cef"] {
            let s = render(&format!("format = \"{f}\"\nsd_id = \"p@1\""), &json);
            assert!(!s.is_empty(), "{t:?}/{c:?}/{f}");
        }
    }
    // Usage CEF: fixed severity 0, eventType as class id, no logOrigin even when asked.
    let s = render(
        "format = \"cef\"\ninclude_raw_log = true\ncef_labels = true",
        r#"{"logType":"usage","category":"filter","eventType":"E|1","logOrigin":"x"}"#,
    );
    assert!(
        s.ends_with(
            "CEF:0|QubitSecurity|Plura|5|E\\|1|사용로그|0|cs1Label=userActionCategoryGroupName \
             cs1=- cs2Label=userActionCategory cs2=- cs5Label=userName cs5=-"
        ),
        "{s}"
    );
}

#[test]
fn event_time_falls_back_to_the_kafka_timestamp() {
    let r = renderer(
        "format = \"cef\"\ncef_header = \"none\"\ncef_time = \"epoch_ms\"",
        None,
    );
    let mut ev = decode(
        br#"{"logType":"detect","category":"network"}"#,
        None,
        &DecodeOptions::default(),
    )
    .unwrap();
    ev.kafka_timestamp_ms = Some(1_655_349_521_123);
    let mut b = BytesMut::new();
    r.render(&ev, &RenderContext { now_us: NOW_US }, &mut b);
    assert_eq!(
        std::str::from_utf8(&b).unwrap(),
        "CEF:0|QubitSecurity|Plura|5|(탐지)네트워크|-|Unknown|end=1655349521123 cs1=- cs2=- dvchost=-"
    );
}

#[test]
fn renderer_is_shareable_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Renderer>();
}

/// Renderers that share the event's TEXT body through a [`SharedText`](super::SharedText)
/// write exactly what each writes alone: every sample event, in a fan-out order where the
/// body is kept by one format and copied by others (BOM auto on a copied body, the SD
/// fallback of a truncated RFC 5424 message, a differing newline in between).
#[test]
fn a_shared_text_body_renders_the_same_bytes() {
    let settings = [
        "format = \"rfc3164\"\nprotocol = \"tcp\"",
        "sd_id = \"p@32473\"\nmsgid = \"category\"",
        "format = \"rfc3164\"\nnewline = \"space\"",
        "protocol = \"tcp\"\nframing = \"octet-counting\"",
        "format = \"cef\"",
        "bom = \"always\"",
        "sd_id = \"p@32473\"\ntz = \"Z\"\nmax_message_bytes = 480",
        "include_raw_log = true",
        "format = \"rfc3164\"\ninclude_raw_log = true\nmax_message_bytes = 480",
    ];
    let renderers: Vec<Renderer> = settings.iter().map(|s| renderer(s, Some("h"))).collect();
    assert!(renderers[0].shares_text_with(&renderers[1]));
    assert!(renderers[0].shares_text_with(&renderers[3]));
    assert!(!renderers[0].shares_text_with(&renderers[2]), "newline");
    assert!(!renderers[0].shares_text_with(&renderers[4]), "CEF");
    assert!(!renderers[0].shares_text_with(&renderers[7]), "raw log");
    assert!(renderers[7].shares_text_with(&renderers[8]));
    let ctx = RenderContext { now_us: NOW_US };
    let mut shared = super::SharedText::default();
    let (mut copied, mut alone) = (BytesMut::new(), BytesMut::new());
    // The samples are Korean; an ASCII one takes the BOM out under `bom = "auto"`.
    let ascii = r#"{"logType":"detect","category":"network","serviceName":"N","eventName":"D"}"#;
    let events = (0..240)
        .map(crate::sample::harness_event)
        .chain([ascii.into(), HOST.into()]);
    for (seq, json) in events.enumerate() {
        let ev = decode(&json, None, &DecodeOptions::default()).expect("event");
        shared.clear();
        for (r, s) in renderers.iter().zip(settings) {
            copied.clear();
            alone.clear();
            let a = r.render_sharing(&ev, &ctx, None, Some(&mut shared), &mut copied);
            let b = r.render(&ev, &ctx, &mut alone);
            assert_eq!((a, &copied[..]), (b, &alone[..]), "event {seq}, {s}");
        }
    }
}
