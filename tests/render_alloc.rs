//! Proves the render path allocates nothing per event once warm (performance.md): a counting
//! global allocator, own test binary, counting only on the rendering thread.

mod counting_alloc;

use counting_alloc::allocations;

use bytes::BytesMut;
use plura_forwarder::event::{decode, DecodeOptions};
use plura_forwarder::render::settings::{Protocol, SettingsInput};
use plura_forwarder::render::{RenderContext, Rendered, Renderer};

const WEB: &[u8] = include_bytes!("fixtures/web_detect.json");
const NOW_US: i64 = 1_655_351_055_123_456;

fn renderer(toml_src: &str) -> Renderer {
    let input: SettingsInput = toml::from_str(toml_src).unwrap();
    Renderer::new(
        input
            .build(Some("www.plura.io".into()), "Plura".into(), Protocol::Tcp)
            .unwrap(),
    )
}

fn assert_no_allocation_when_warm(name: &str, r: &Renderer) {
    let ev = decode(WEB, None, &DecodeOptions::default()).unwrap();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    for i in 0..16 {
        buf.clear();
        r.render(&ev, &RenderContext { now_us: NOW_US + i }, &mut buf);
    }
    let n = allocations(|| {
        for i in 0..10_000 {
            buf.clear();
            let out = r.render(
                &ev,
                &RenderContext {
                    now_us: NOW_US + i * 1000,
                },
                &mut buf,
            );
            assert_eq!(out, Rendered::Ok);
        }
    });
    assert_eq!(n, 0, "{name}: {n} allocations in 10,000 warm renders");
    assert!(buf.len() > 100, "{name}: rendered {} bytes", buf.len());
}

#[test]
fn warm_render_allocates_nothing() {
    // The counter itself must see allocations, or a zero proves nothing.
    assert!(allocations(|| drop(std::hint::black_box(vec![1u8; 16]))) >= 1);

    let cases = [
        (
            "rfc5424",
            "format = \"rfc5424\"\ntz = \"+09:00\"\ninclude_raw_log = true",
        ),
        (
            "rfc5424+sd+local",
            "format = \"rfc5424\"\nsd_id = \"plura@32473\"\nmsgid = \"category\"\ntz = \"local\"",
        ),
        (
            "cef",
            "format = \"cef\"\ntz = \"+09:00\"\ninclude_raw_log = true",
        ),
        (
            "cef+labels+local",
            "format = \"cef\"\ncef_labels = true\ncef_header = \"rfc5424\"\ntz = \"local\"",
        ),
        (
            "rfc3164",
            "format = \"rfc3164\"\nframing = \"lf\"\ntz = \"Z\"",
        ),
    ];
    for (name, src) in cases {
        assert_no_allocation_when_warm(name, &renderer(src));
    }
}

/// A fan-out that shares the TEXT body (RFC 5424, RFC 3164 and CEF of one event) allocates
/// nothing once warm either: the kept body reuses its buffer.
#[test]
fn warm_shared_text_renders_allocate_nothing() {
    use plura_forwarder::render::SharedText;
    let renderers = [
        renderer("format = \"rfc5424\"\ninclude_raw_log = true"),
        renderer("format = \"rfc3164\"\ninclude_raw_log = true"),
        renderer("format = \"cef\"\ninclude_raw_log = true"),
    ];
    assert!(renderers[0].shares_text_with(&renderers[1]));
    let ev = decode(WEB, None, &DecodeOptions::default()).unwrap();
    let mut shared = SharedText::default();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut fan_out = |i: i64| {
        shared.clear();
        for r in &renderers {
            buf.clear();
            let ctx = RenderContext {
                now_us: NOW_US + i * 1000,
            };
            let out = r.render_sharing(&ev, &ctx, None, Some(&mut shared), &mut buf);
            assert_eq!(out, Rendered::Ok);
        }
    };
    (0..16).for_each(&mut fan_out);
    let n = allocations(|| (0..10_000).for_each(&mut fan_out));
    assert_eq!(n, 0, "{n} allocations in 10,000 warm fan-outs");
}
