//! MantisBT 2.x: `POST {base}/api/rest/issues` with `Authorization: <token>` (the bare token;
//! `Bearer` only works on unreleased master). Summary cut to 128 characters (the DB column),
//! category required, description never empty. ticketing.md §3.

use std::sync::atomic::Ordering;

use reqwest::header::AUTHORIZATION;
use serde_json::{json, Value as Json};

use super::client::{Created, Target};
use super::description::{plain, truncate_chars, TicketContent};
use super::error::TicketError;

/// The `summary` column is `C(128)`; the API does not check it.
pub const SUMMARY_MAX: usize = 128;
/// `$g_max_textarea_length` = 65,535, less a margin.
pub const DESCRIPTION_MAX: usize = 60_000;

/// The create URL: with URL rewriting, or through `index.php` once that was needed.
pub fn create_url(t: &Target) -> String {
    if t.mantis_index_php.load(Ordering::Relaxed) {
        format!("{}/api/rest/index.php/issues", t.base())
    } else {
        format!("{}/api/rest/issues", t.base())
    }
}

/// `{"id": N}` for a numeric id, else `{"name": …}`.
fn ref_of(s: &str) -> Json {
    match s.trim().parse::<u64>() {
        Ok(n) => json!({ "id": n }),
        Err(_) => json!({ "name": s.trim() }),
    }
}

/// The request body (no wrapper object).
pub fn body(t: &Target, c: &TicketContent) -> Json {
    let mut b = json!({
        "summary": truncate_chars(&c.summary, SUMMARY_MAX),
        "description": plain(c, DESCRIPTION_MAX),
        "additional_information": format!("forwarder marker: {}; event id: {}; labels: {}", c.marker, c.event.id, c.labels.join(" ")),
        "project": ref_of(&t.cfg.project),
        "category": ref_of(&t.cfg.issue_type),
    });
    if let Some(level) = c.level {
        b["priority"] = json!({ "name": level.mantis() });
    }
    b
}

/// Creates one issue; on a 404 that is not a MantisBT error, tries `index.php` once and keeps
/// using it when it answers.
pub(crate) async fn create(t: &Target, c: &TicketContent) -> Result<Created, TicketError> {
    let first = create_once(t, c).await;
    match &first {
        Err(TicketError::Rejected {
            status: 404,
            message,
            ..
        }) if !t.mantis_index_php.load(Ordering::Relaxed) && !message.contains("(code ") => {
            t.mantis_index_php.store(true, Ordering::Relaxed);
            let second = create_once(t, c).await;
            if matches!(&second, Err(TicketError::Rejected { status: 404, .. })) {
                t.mantis_index_php.store(false, Ordering::Relaxed);
                return first;
            }
            second
        }
        _ => first,
    }
}

async fn create_once(t: &Target, c: &TicketContent) -> Result<Created, TicketError> {
    let reply = t
        .post(
            &create_url(t),
            (AUTHORIZATION, t.header_value(&t.secret)?),
            &body(t, c),
        )
        .await?;
    let json = reply.json();
    match reply.status.as_u16() {
        202 => Ok(Created {
            key: "(moderated)".into(),
            url: format!("{}/view_all_bug_page.php", t.base()),
            system: "mantisbt".into(),
            id: None,
        }),
        200..=299 => {
            let id = json
                .as_ref()
                .and_then(|j| j.pointer("/issue/id"))
                .and_then(Json::as_u64)
                .ok_or_else(|| TicketError::BadResponse {
                    system: "mantisbt",
                    status: reply.status.as_u16(),
                    message: "no issue.id in the answer".into(),
                })?;
            Ok(Created {
                key: format!("#{id}"),
                url: format!("{}/view.php?id={id}", t.base()),
                system: "mantisbt".into(),
                id: Some(id.to_string()),
            })
        }
        _ => Err(reply.error(
            "mantisbt",
            json.as_ref().map(error_text).unwrap_or_default(),
        )),
    }
}

/// `{"message","code","localized"}` → `message (code N)`.
pub fn error_text(j: &Json) -> String {
    let msg = j.get("message").and_then(Json::as_str).unwrap_or_default();
    match j.get("code").and_then(Json::as_i64) {
        Some(code) if !msg.is_empty() => format!("{msg} (code {code})"),
        _ => msg.to_owned(),
    }
}
