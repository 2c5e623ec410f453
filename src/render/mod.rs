//! Render stage: a routed [`crate::event::Event`] → the exact bytes one destination sends.

pub mod settings;
