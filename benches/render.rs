//! Render hot path (performance.md: ≥ 3 M events/s per core for a web detection event in
//! RFC 5424 and CEF). Buffers are reused as in the pipeline. Decoding is measured against a
//! `serde_json::Value` parse of the same event, the compliance lookup against a clock read.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use plura_forwarder::event::{decode, DecodeOptions};
use plura_forwarder::render::settings::{Protocol, SettingsInput};
use plura_forwarder::render::{RenderContext, Renderer};
use std::hint::black_box;

const WEB: &[u8] = include_bytes!("../tests/fixtures/web_detect.json");
const NOW_US: i64 = 1_655_351_055_123_456;

fn renderer(toml_src: &str) -> Renderer {
    let input: SettingsInput = toml::from_str(toml_src).expect("settings");
    let s = input
        .build(Some("www.plura.io".into()), "Plura".into(), Protocol::Tcp)
        .expect("valid settings");
    Renderer::new(s)
}

fn render(c: &mut Criterion) {
    let cases = [
        ("rfc5424", renderer("format = \"rfc5424\"\ntz = \"+09:00\"")),
        ("cef", renderer("format = \"cef\"\ntz = \"+09:00\"")),
    ];
    let opts = DecodeOptions::default();
    let ctx = RenderContext { now_us: NOW_US };
    let mut g = c.benchmark_group("render");
    g.throughput(Throughput::Elements(1));
    for (name, r) in &cases {
        let ev = decode(WEB, None, &opts).expect("fixture decodes");
        g.bench_function(format!("{name}/render_only"), |b| {
            let mut buf = BytesMut::with_capacity(64 * 1024);
            b.iter(|| {
                buf.clear();
                black_box(r.render(black_box(&ev), &ctx, &mut buf));
            })
        });
        g.bench_function(format!("{name}/decode_and_render"), |b| {
            let mut buf = BytesMut::with_capacity(64 * 1024);
            b.iter(|| {
                buf.clear();
                let ev = decode(black_box(WEB), None, &opts).expect("decodes");
                black_box(r.render(&ev, &ctx, &mut buf));
            })
        });
    }
    // Batch-style: many frames appended to one buffer, as the sink batcher sees them.
    let (_, r) = &cases[0];
    let ev = decode(WEB, None, &opts).expect("fixture decodes");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("rfc5424/render_append_1000", |b| {
        b.iter_batched_ref(
            || BytesMut::with_capacity(1 << 20),
            |buf| {
                for _ in 0..1000 {
                    r.render(&ev, &ctx, buf);
                }
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// Decode alone, next to a plain `serde_json::Value` parse of the same bytes measured in the
/// same run (the ratio is what to compare across machines).
fn decode_vs_serde(c: &mut Criterion) {
    let opts = DecodeOptions::default();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("web_detect/plura", |b| {
        b.iter(|| black_box(decode(black_box(WEB), None, &opts).is_ok()))
    });
    g.bench_function("web_detect/serde_json_value", |b| {
        b.iter(|| black_box(serde_json::from_slice::<serde_json::Value>(black_box(WEB)).is_ok()))
    });
    // The load harness's events (all 24 log type / category pairs, 422–1,640 bytes), decoded as
    // its product runs them: no destination wants the raw log.
    let mix = harness_events(1000);
    let skip_raw = DecodeOptions {
        raw_log: false,
        ..DecodeOptions::default()
    };
    g.throughput(Throughput::Elements(mix.len() as u64));
    g.bench_function("harness_mix_1000/plura", |b| {
        b.iter(|| {
            for p in &mix {
                black_box(decode(black_box(p), None, &skip_raw).is_ok());
            }
        })
    });
    g.finish();
}

/// The first `n` events of `plura-forwarder bench`, as it produces them.
fn harness_events(n: u64) -> Vec<Vec<u8>> {
    (0..n).map(plura_forwarder::sample::harness_event).collect()
}

/// The compliance lookup done for every event (counters and `last_seen`), next to one read of
/// the wall clock measured in the same run: the lookup used to read it per event.
fn compliance_lookup(c: &mut Criterion) {
    use plura_forwarder::compliance::Compliance;
    use plura_forwarder::config::ComplianceMode;
    let mapping = include_str!("../config/compliance.toml");
    let comp = Compliance::from_toml_str(mapping, ComplianceMode::All).expect("shipped mapping");
    let ev = decode(WEB, None, &DecodeOptions::default()).expect("fixture decodes");
    assert!(comp.lookup(&ev).is_some(), "the fixture maps to controls");
    let mut g = c.benchmark_group("compliance");
    g.throughput(Throughput::Elements(1));
    g.bench_function("web_detect/lookup", |b| {
        b.iter(|| black_box(comp.lookup(black_box(&ev)).is_some()))
    });
    g.bench_function("wall_clock_read", |b| {
        b.iter(|| black_box(std::time::SystemTime::now()))
    });
    g.finish();
}

criterion_group!(benches, render, decode_vs_serde, compliance_lookup);
criterion_main!(benches);
