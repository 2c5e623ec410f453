//! Runs every conformance vector of `shared/spec/format-vectors.jsonl` through settings
//! checking, decoding and the renderer, comparing the exact wire bytes.

use bytes::BytesMut;
use plura_forwarder::event::{decode, DecodeOptions};
use plura_forwarder::render::settings::{Protocol, SettingsInput};
use plura_forwarder::render::{RenderContext, Rendered, Renderer};
use serde_json::Value;

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/spec/format-vectors.jsonl"
);

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn show(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

/// The outcome of one vector: `Err` names what went wrong.
fn run(v: &Value) -> Result<(), String> {
    let mut settings = v["settings"].as_object().expect("settings object").clone();
    let now = settings.remove("now").expect("now");
    let now = chrono::DateTime::parse_from_rfc3339(now.as_str().expect("now string"))
        .expect("now RFC 3339");
    let now_us = now.timestamp_micros();
    let hostname = match settings.remove("hostname") {
        Some(Value::String(h)) => Some(h),
        Some(Value::Null) => None,
        None => Some("www.plura.io".into()),
        Some(other) => panic!("hostname {other}"),
    };
    let app_name = match settings.remove("app_name") {
        Some(Value::String(a)) => a,
        _ => "Plura".into(),
    };
    // formats.md §4 writes SD as `structured_data: {"sd_id": ...}`; config.md's key is `sd_id`.
    if let Some(sd) = settings.remove("structured_data") {
        if let Some(id) = sd.get("sd_id") {
            settings.insert("sd_id".into(), id.clone());
        }
    }
    let input: SettingsInput = serde_json::from_value(Value::Object(settings))
        .map_err(|e| format!("settings do not parse: {e}"))?;
    let built = input.build(hostname, app_name, Protocol::Udp);
    if let Some(want) = v.get("expected_error").and_then(Value::as_str) {
        return match built {
            Err(e) if e.0 == want => Ok(()),
            Err(e) => Err(format!("error {:?}, want {want:?}", e.0)),
            Ok(_) => Err(format!("accepted; want error {want:?}")),
        };
    }
    let settings = built.map_err(|e| format!("settings refused: {e}"))?;
    let payload = serde_json::to_vec(&v["input"]).expect("input");
    let ev =
        decode(&payload, None, &DecodeOptions::default()).map_err(|e| format!("decode: {e}"))?;
    let renderer = Renderer::new(settings);
    let mut dst = BytesMut::from(&b"prefix"[..]);
    let outcome = renderer.render(&ev, &RenderContext { now_us }, &mut dst);
    if v.get("expected_outcome").and_then(Value::as_str) == Some("dropped") {
        return match (outcome, &dst[..]) {
            (Rendered::Oversize, b"prefix") => Ok(()),
            _ => Err(format!(
                "{outcome:?}, {} bytes; want Oversize and nothing",
                dst.len()
            )),
        };
    }
    let want = hex(v["expected_hex"].as_str().expect("expected_hex"));
    let got = &dst[6..];
    if got != want.as_slice() {
        return Err(format!(
            "{outcome:?}\n  got  {}\n  want {}",
            show(got),
            show(&want)
        ));
    }
    if let Some(n) = v.get("expected_len").and_then(Value::as_u64) {
        assert_eq!(got.len() as u64, n);
    }
    Ok(())
}

#[test]
fn every_format_vector_passes() {
    let text = std::fs::read_to_string(VECTORS).unwrap_or_else(|e| panic!("{VECTORS}: {e}"));
    let mut failures = Vec::new();
    let mut count = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).expect("JSONL line");
        count += 1;
        if let Err(e) = run(&v) {
            failures.push(format!("{}: {e}", v["id"]));
        }
    }
    assert!(count >= 40, "only {count} vectors read");
    assert!(
        failures.is_empty(),
        "{} of {count} vectors fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
