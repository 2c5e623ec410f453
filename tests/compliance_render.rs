//! Golden tests for the three placements of compliance controls (compliance.md): CEF
//! `flexString1`, the RFC 5424 `compliance@<PEN>` SD element, and the last TEXT record field
//! (RFC 5424 without SD, RFC 3164); and proof that lookup plus rendering allocate nothing
//! once warm (own test binary, counting allocator on this thread only).

mod counting_alloc;

use counting_alloc::allocations;

use bytes::BytesMut;
use plura_forwarder::compliance::Compliance;
use plura_forwarder::config::ComplianceMode;
use plura_forwarder::event::{decode, DecodeOptions, Event};
use plura_forwarder::render::settings::{Protocol, SettingsInput};
use plura_forwarder::render::{RenderContext, Rendered, Renderer};

const MAPPING: &str = include_str!("../config/compliance.toml");
/// 2022-06-16T12:44:15.123456+09:00
const NOW_US: i64 = 1_655_351_055_123_456;

const WEB: &str = r#"{"logType":"detect","category":"web","serviceName":"웹","eventName":"탐지",
  "filterId":"F-1021","filterName":"컬럼 데이터 탈취","filterCategoryName":"SQLI","filterRiskLevel":4,
  "serverIp":"172.16.12.40","serverName":"Harry-LP-L","detectIp":"172.16.20.192",
  "detectDescription":"/wordpress/index.php","registerDate":"2022-06-16T12:28:29+09:00",
  "logOrigin":"GET /?id=1"}"#;

fn compliance() -> Compliance {
    let src = format!(
        "{MAPPING}\n[[filter]]\nfilter_id = \"F-1021\"\npci_dss_3_2_1 = [\"6.5.1\", \"11.4\"]\n\
         iso27001_2013 = []\nefsr = []\n"
    );
    Compliance::from_toml_str(&src, ComplianceMode::Registered).expect("mapping")
}

fn renderer(settings: &str) -> Renderer {
    let input: SettingsInput = toml::from_str(settings).expect("settings toml");
    Renderer::new(
        input
            .build(Some("www.plura.io".into()), "Plura".into(), Protocol::Udp)
            .expect("settings"),
    )
}

fn event(json: &str) -> Event<'_> {
    decode(json.as_bytes(), None, &DecodeOptions::default()).expect("event")
}

fn render(settings: &str, json: &str) -> String {
    let c = compliance();
    let ev = event(json);
    let mut b = BytesMut::new();
    let out = renderer(settings).render_with(
        &ev,
        &RenderContext { now_us: NOW_US },
        c.lookup(&ev),
        &mut b,
    );
    assert_eq!(out, Rendered::Ok);
    String::from_utf8(b.to_vec()).expect("UTF-8")
}

const CONTROLS: &str = "pci_dss_3_2_1:6.5.1,11.4;isms_p:2.10.1,2.10.3,2.11.3";

#[test]
fn cef_flexstring1_before_the_raw_log() {
    let got = render(
        "format = \"cef\"\ntz = \"+09:00\"\ninclude_compliance = true\ninclude_raw_log = true",
        WEB,
    );
    let want = "<133>Jun 16 12:44:15 www.plura.io Plura CEF:0|QubitSecurity|Plura|5|(탐지)웹|\
        컬럼 데이터 탈취|4|end=Jun 16 2022 12:28:29 cs1=- cs2=- cs3=- cs4=- cs5=SQLI \
        Name=컬럼 데이터 탈취 request=- src=172.16.20.192 dvc=172.16.12.40 dvchost=Harry-LP-L \
        dhost=- requestMethod=- requestCookies=- requestClientApplication=- categoryOutcome=- \
        requestContext=- flexString1Label=compliance \
        flexString1=pci_dss_3_2_1:6.5.1,11.4;isms_p:2.10.1,2.10.3,2.11.3 cs6=GET /?id\\=1";
    assert_eq!(got, want);
}

#[test]
fn rfc5424_sd_element_compliance_at_pen() {
    let got = render(
        "format = \"rfc5424\"\ntz = \"Z\"\nbom = \"never\"\nsd_id = \"plura@32473\"\ninclude_compliance = true",
        r#"{"logType":"detect","category":"web","filterId":"F-1021","filterName":"f"}"#,
    );
    let want = "<133>1 2022-06-16T03:44:15.123456Z www.plura.io Plura - - \
        [plura@32473 logType=\"detect\" category=\"web\" eventName=\"탐지\" serviceName=\"웹\" \
        filterName=\"f\"][compliance@32473 pci_dss_3_2_1=\"6.5.1,11.4\" \
        isms_p=\"2.10.1,2.10.3,2.11.3\"] 웹 탐지\\n웹 | - | - | - | f | -";
    assert_eq!(got, want);
}

#[test]
fn rfc5424_without_sd_and_rfc3164_last_record_field() {
    let json = r#"{"logType":"detect","category":"web","filterId":"F-1021","filterName":"f"}"#;
    let got = render(
        "format = \"rfc5424\"\ntz = \"Z\"\nbom = \"never\"\ninclude_compliance = true",
        json,
    );
    assert_eq!(
        got,
        format!(
            "<133>1 2022-06-16T03:44:15.123456Z www.plura.io Plura - - - 웹 탐지\\n\
             웹 | - | - | - | f | - | compliance={CONTROLS}"
        )
    );
    // RFC 3164: after logOrigin, the very last field.
    let got = render(
        "format = \"rfc3164\"\ntz = \"+09:00\"\ninclude_compliance = true\ninclude_raw_log = true",
        WEB,
    );
    assert_eq!(
        got,
        format!(
            "<133>Jun 16 12:44:15 www.plura.io Plura 웹 탐지\\n웹 | 172.16.12.40 | Harry-LP-L | \
             SQLI | 컬럼 데이터 탈취 | /wordpress/index.php | GET /?id=1 | compliance={CONTROLS}"
        )
    );
}

#[test]
fn nothing_added_when_off_or_unmapped() {
    let c = compliance();
    let ev = event(WEB);
    let ctx = RenderContext { now_us: NOW_US };
    for settings in [
        "format = \"cef\"",
        "format = \"rfc5424\"\nsd_id = \"plura@32473\"",
        "format = \"rfc3164\"",
    ] {
        let r = renderer(settings);
        let (mut plain, mut with) = (BytesMut::new(), BytesMut::new());
        r.render(&ev, &ctx, &mut plain);
        r.render_with(&ev, &ctx, c.peek(&ev), &mut with);
        assert_eq!(plain, with, "include_compliance = false: {settings}");
        // On, but the event maps to nothing (its filter is not registered).
        let r = renderer(&format!("{settings}\ninclude_compliance = true"));
        let other = event(r#"{"logType":"detect","category":"web","filterId":"F-9"}"#);
        assert!(c.peek(&other).is_none());
        let (mut plain, mut with) = (BytesMut::new(), BytesMut::new());
        r.render(&other, &ctx, &mut plain);
        r.render_with(&other, &ctx, c.lookup(&other), &mut with);
        assert_eq!(plain, with, "unmapped: {settings}");
    }
}

#[test]
fn lookup_and_render_allocate_nothing_when_warm() {
    let c = compliance();
    let ev = event(WEB);
    let ctx = RenderContext { now_us: NOW_US };
    for settings in [
        "format = \"cef\"\ninclude_compliance = true\ninclude_raw_log = true",
        "format = \"rfc5424\"\nsd_id = \"plura@32473\"\ninclude_compliance = true",
        "format = \"rfc3164\"\ninclude_compliance = true",
    ] {
        let r = renderer(settings);
        let mut buf = BytesMut::with_capacity(64 * 1024);
        r.render_with(&ev, &ctx, c.lookup(&ev), &mut buf);
        buf.clear();
        let n = allocations(|| {
            for _ in 0..100 {
                let controls = c.lookup(&ev);
                r.render_with(&ev, &ctx, controls, &mut buf);
                buf.clear();
            }
        });
        assert_eq!(n, 0, "{settings}");
    }
}

/// Renderers that share an event's TEXT body write the controls only where their destination
/// wants them: the body with controls is not copied into one without, nor the other way.
#[test]
fn a_shared_text_body_keeps_each_destinations_controls() {
    use plura_forwarder::render::SharedText;
    let c = compliance();
    let ev = event(WEB);
    let controls = c.lookup(&ev);
    assert!(controls.is_some(), "the event maps to controls");
    let ctx = RenderContext { now_us: NOW_US };
    let settings = [
        "format = \"rfc3164\"\ninclude_compliance = true",
        "format = \"rfc5424\"",
        "format = \"rfc5424\"\ninclude_compliance = true",
        // With an SD the controls go to their own element: the body is the one without.
        "format = \"rfc5424\"\nsd_id = \"plura@32473\"\ninclude_compliance = true",
        "format = \"rfc3164\"",
    ];
    let renderers: Vec<Renderer> = settings.iter().map(|s| renderer(s)).collect();
    assert!(renderers[1].shares_text_with(&renderers[3]));
    assert!(!renderers[0].shares_text_with(&renderers[1]));
    let mut shared = SharedText::default();
    let (mut copied, mut alone) = (BytesMut::new(), BytesMut::new());
    for (r, s) in renderers.iter().zip(settings) {
        copied.clear();
        alone.clear();
        r.render_sharing(&ev, &ctx, controls, Some(&mut shared), &mut copied);
        r.render_with(&ev, &ctx, controls, &mut alone);
        assert_eq!(copied, alone, "{s}");
        let with = String::from_utf8_lossy(&alone).contains("| compliance=");
        assert_eq!(
            with,
            s.contains("include_compliance") && !s.contains("sd_id"),
            "{s}"
        );
    }
}
