//! Any bytes → decode → render under settings chosen by the first input byte. Never a panic;
//! every frame obeys formats.md: UTF-8 message, within `max_message_bytes`, octet count equal
//! to the message length, no raw control character except the `newline = ascii` LF.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use plura_forwarder::event::{decode, DecodeOptions};
use plura_forwarder::render::settings::{Framing, Protocol, SettingsInput};
use plura_forwarder::render::{RenderContext, Rendered, Renderer};

const FORMATS: [&str; 4] = ["rfc3164", "rfc5424", "rfc5425", "cef"];
const CEF_HEADERS: [&str; 3] = ["rfc3164", "rfc5424", "none"];
const NEWLINES: [&str; 3] = ["lf", "ascii", "space"];
const TRANSPORTS: [(&str, &str); 5] = [
    ("udp", ""),
    ("tcp", "framing = \"octet-counting\""),
    ("tcp", "framing = \"lf\""),
    ("tcp", "framing = \"nul\""),
    ("tls", "framing = \"octet-counting\""),
];

fn renderer(sel: u8) -> Option<Renderer> {
    let s = sel as usize;
    let (proto, framing) = TRANSPORTS[s % 5];
    let toml_src = format!(
        "format = \"{}\"\ncef_header = \"{}\"\nnewline = \"{}\"\nprotocol = \"{proto}\"\n{framing}\n\
         max_message_bytes = 480\ninclude_raw_log = true\nsd_id = \"plura@32473\"\n\
         on_oversize = \"{}\"\ncef_labels = {}\ntz = \"local\"",
        FORMATS[s / 5 % 4],
        CEF_HEADERS[s / 20 % 3],
        NEWLINES[s / 60 % 3],
        if s & 0x80 != 0 { "drop" } else { "truncate" },
        s & 1 == 1,
    );
    let input: SettingsInput = toml::from_str(&toml_src).ok()?;
    input
        .build(Some("fuzz".into()), "Plura".into(), Protocol::Udp)
        .ok()
        .map(Renderer::new)
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, payload)) = data.split_first() else {
        return;
    };
    let Some(r) = renderer(sel) else { return };
    let Ok(ev) = decode(payload, None, &DecodeOptions::default()) else {
        return;
    };
    let mut dst = BytesMut::new();
    let out = r.render(
        &ev,
        &RenderContext {
            now_us: 1_655_351_055_123_456,
        },
        &mut dst,
    );
    if out == Rendered::Oversize {
        assert!(dst.is_empty());
        return;
    }
    let msg: &[u8] = match r.settings().framing {
        None => &dst,
        Some(Framing::OctetCounting) => {
            let sp = dst.iter().position(|&b| b == b' ').unwrap();
            let n: usize = std::str::from_utf8(&dst[..sp]).unwrap().parse().unwrap();
            assert_eq!(n, dst.len() - sp - 1);
            &dst[sp + 1..]
        }
        Some(_) => &dst[..dst.len() - 1],
    };
    assert!(std::str::from_utf8(msg).is_ok());
    assert!(msg.len() <= r.settings().max_message_bytes);
    assert!(msg.iter().filter(|&&b| b == b'\n').count() <= 1);
    assert!(msg
        .iter()
        .all(|&b| (b >= 0x20 && b != 0x7f) || b == b'\t' || b == b'\n'));
});
