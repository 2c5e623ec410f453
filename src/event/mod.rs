//! Event stage: one Kafka message value → a classified [`Event`] that borrows from the payload.
//!
//! Decoding never panics; anything that is not a valid event comes back as an [`Invalid`]
//! with a bounded `reason` label, which the pipeline counts and dead-letters.

mod classify;
mod decode;
mod field;
mod find;
mod json_str;
mod scan;

pub use classify::{Category, LogType, ALL_PAIRS};
pub use decode::{decode, decode_into, DecodeOptions, Invalid};
pub use field::Field;

use std::borrow::Cow;

/// One field value as it arrived. Absent, `null` and `""` are not stored (they are "missing").
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// A JSON string, unescaped (borrowed when it had no escapes).
    Str(Cow<'a, str>),
    /// A JSON number, kept as its exact JSON text so it renders as sent.
    Num(&'a str),
    /// A JSON boolean.
    Bool(bool),
    /// A JSON object or array (kept only for unknown fields, as raw JSON text).
    Raw(&'a str),
}

impl Value<'_> {
    /// The text a renderer prints for this value (event.md: numbers and booleans in their JSON text).
    pub fn as_text(&self) -> &str {
        match self {
            Value::Str(s) => s,
            Value::Num(n) => n,
            Value::Bool(true) => "true",
            Value::Bool(false) => "false",
            Value::Raw(r) => r,
        }
    }
}

/// A decoded, classified event. Borrows string data from the Kafka payload where it can.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    /// Detect, defense or usage.
    pub log_type: LogType,
    /// The category within the log type (validated against it).
    pub category: Category,
    fields: [Option<Value<'a>>; Field::COUNT],
    /// Fields this version does not know; kept so that filters can match them.
    extra: Vec<(Cow<'a, str>, Value<'a>)>,
    /// The Kafka message timestamp (ms since epoch), the event time when `registerDate` is absent.
    pub kafka_timestamp_ms: Option<i64>,
}

impl<'a> Event<'a> {
    /// An event with only its classification set; fields are added with [`Event::set`].
    pub fn new(log_type: LogType, category: Category) -> Self {
        Event {
            log_type,
            category,
            fields: std::array::from_fn(|_| None),
            extra: Vec::new(),
            kafka_timestamp_ms: None,
        }
    }

    /// The value of a known field, `None` when missing (absent, null or empty).
    #[inline]
    pub fn get(&self, field: Field) -> Option<&Value<'a>> {
        self.fields[field as usize].as_ref()
    }

    /// The text of a known field, `None` when missing.
    #[inline]
    pub fn text(&self, field: Field) -> Option<&str> {
        self.get(field).map(Value::as_text)
    }

    /// Sets a known field; an empty string is stored as missing.
    #[inline(always)]
    pub fn set(&mut self, field: Field, value: Option<Value<'a>>) {
        let value = match value {
            Some(Value::Str(s)) if s.is_empty() => None,
            v => v,
        };
        self.fields[field as usize] = value;
    }

    /// Any field by its event.md name, known or not.
    pub fn get_by_name(&self, name: &str) -> Option<&Value<'a>> {
        match Field::from_name(name) {
            Some(f) => self.get(f),
            None => self
                .extra
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v),
        }
    }

    /// Fields the forwarder does not know, in arrival order.
    pub fn extra(&self) -> &[(Cow<'a, str>, Value<'a>)] {
        &self.extra
    }

    pub(crate) fn push_extra(&mut self, name: Cow<'a, str>, value: Value<'a>) {
        self.extra.push((name, value));
    }

    /// `serviceName`, or the category's Korean display name (event.md default).
    pub fn service_name(&self) -> &str {
        self.text(Field::ServiceName)
            .unwrap_or(self.category.display_name(self.log_type))
    }

    /// `eventName`, or 탐지 / 방어 / 사용로그 by log type (event.md default).
    pub fn event_name(&self) -> &str {
        self.text(Field::EventName)
            .unwrap_or(self.log_type.default_event_name())
    }

    /// The group routing key: `groupId` (the Kafka key is applied by the source when it is absent).
    pub fn group(&self) -> Option<&str> {
        self.text(Field::GroupId)
    }
}
