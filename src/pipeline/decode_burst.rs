//! Decoding the messages that are ready together, before handling them one by one.
//!
//! The consume loop takes up to [`BURST_MAX`] ready messages at once, decodes them all, then
//! routes, renders and hands over each in offset order. Measured on the TCP bench (2-core
//! Zen 1, 2026-12-04, five interleaved invocations each): 290k events/s against 255k when
//! each message was decoded and handled before the next was taken; 256 at once did no better
//! than 64. Decoding is most of the consume thread's work, and doing it for many events in a
//! row (then the rest for many in a row) is what changed; the counters that would say why
//! (instruction cache, branch prediction) are not available in this VM.

use super::{Input, TopicOptions};
use crate::event::{decode, decode_into, Category, Event, Invalid, LogType};

/// A decoded message: the event, or why it is not one.
pub type Decoded<'a> = Result<Event<'a>, Invalid>;

/// At most this many ready messages are decoded together: an event is 1,080 bytes, so a
/// burst holds about 69 KB, and the first of them waits for 63 decodes at most.
pub const BURST_MAX: usize = 64;

/// Decodes `inputs` into `out` (emptied first), in the same order. Each event is decoded
/// where it is kept ([`decode_into`]); `resize_with` makes the empty events in place, where
/// `push` built each on the stack and copied it.
pub fn decode_all<'a>(topics: &TopicOptions, inputs: &[Input<'a>], out: &mut Vec<Decoded<'a>>) {
    out.clear();
    out.resize_with(inputs.len(), || {
        Ok(Event::new(LogType::Detect, Category::Host))
    });
    for (input, slot) in inputs.iter().zip(out.iter_mut()) {
        let Ok(ev) = slot else { continue };
        let opts = topics.for_topic(input.topic);
        let payload = input.payload.unwrap_or_default();
        if let Err(invalid) = decode_into(payload, input.key, &opts, ev) {
            *slot = Err(invalid);
        }
    }
}

/// Decodes one message with its topic's options (a tombstone is an empty payload).
#[inline]
pub fn decode_one<'a>(topics: &TopicOptions, input: &Input<'a>) -> Decoded<'a> {
    let opts = topics.for_topic(input.topic);
    decode(input.payload.unwrap_or_default(), input.key, &opts)
}

/// An empty vector on `v`'s allocation for the borrows of the next burst (an in-place collect
/// of nothing; were the standard library to stop reusing the allocation, this would allocate).
pub fn recycle<'b>(mut v: Vec<Decoded<'_>>) -> Vec<Decoded<'b>> {
    v.clear();
    v.into_iter().map(|_| unreachable!("cleared")).collect()
}

/// The same for the burst's inputs.
pub fn recycle_inputs<'b>(mut v: Vec<Input<'_>>) -> Vec<Input<'b>> {
    v.clear();
    v.into_iter().map(|_| unreachable!("cleared")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Headers;

    fn input(payload: &[u8]) -> Input<'_> {
        Input {
            topic: "t",
            partition: 0,
            offset: 0,
            key: None,
            payload: Some(payload),
            timestamp_ms: None,
            headers: Headers::None,
        }
    }

    /// Each message is decoded into its own slot, valid and invalid ones interleaved, and the
    /// vectors keep their allocation from one burst to the next.
    #[test]
    fn slots_follow_the_inputs_and_allocations_are_reused() {
        let payloads: Vec<String> = (0..BURST_MAX)
            .map(|i| match i % 7 {
                3 => format!("{{not json {i}"),
                _ => format!(r#"{{"logType":"detect","category":"web","eventId":"e-{i}"}}"#),
            })
            .collect();
        let topics = TopicOptions {
            bound: Vec::new(),
            max_event_bytes: 1 << 20,
            raw_log: false,
        };
        let mut out = Vec::with_capacity(BURST_MAX);
        let mut ins = Vec::with_capacity(BURST_MAX);
        let (out_at, ins_at) = (out.as_ptr() as usize, ins.as_ptr() as usize);
        for n in [BURST_MAX, 0, 1, BURST_MAX - 1] {
            let mut inputs = recycle_inputs(ins);
            inputs.extend(payloads[..n].iter().map(|p| input(p.as_bytes())));
            let mut decoded = recycle(out);
            decode_all(&topics, &inputs, &mut decoded);
            assert_eq!(decoded.len(), n);
            for (i, d) in decoded.iter().enumerate() {
                match d {
                    Ok(ev) => {
                        let want = format!("e-{i}");
                        assert_eq!(ev.text(crate::event::Field::EventId), Some(want.as_str()));
                    }
                    Err(e) => assert_eq!((i % 7, e.reason()), (3, "not_json")),
                }
            }
            assert_eq!(decoded.as_ptr() as usize, out_at);
            assert_eq!(inputs.as_ptr() as usize, ins_at);
            out = recycle(decoded);
            ins = recycle_inputs(inputs);
        }
    }
}
