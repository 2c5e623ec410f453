//! Render stage (TEMPORARY STUB on main; replaced by the render branch at merge).
#![allow(missing_docs, dead_code)]
pub mod settings;
use bytes::{BufMut, BytesMut};
use crate::event::Event;
pub use settings::RenderSettings;
pub struct Renderer { s: RenderSettings }
pub struct RenderContext { pub now_us: i64 }
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rendered { Ok, Truncated, Oversize }
impl Renderer {
    pub fn new(s: RenderSettings) -> Self { Renderer { s } }
    pub fn settings(&self) -> &RenderSettings { &self.s }
    pub fn render(&self, ev: &Event<'_>, _ctx: &RenderContext, dst: &mut BytesMut) -> Rendered {
        let body = format!("<133>1 - - - - - - {} {}", ev.service_name(), ev.event_name());
        match self.s.framing {
            Some(_) => { dst.put_slice(format!("{} ", body.len()).as_bytes()); dst.put_slice(body.as_bytes()); }
            None => dst.put_slice(body.as_bytes()),
        }
        Rendered::Ok
    }
}
