//! Redmine 4.x / 5.x: `POST {base}/issues.json` with `X-Redmine-API-Key`, body `{"issue":{…}}`,
//! Textile description (the default text formatting); `issue_type` is the tracker (id or name). An unknown or invisible project is a 422,
//! not a 404. ticketing.md §4.

use reqwest::header::HeaderName;
use serde_json::{json, Value as Json};

use super::client::{Created, Target};
use super::description::{textile, truncate_chars, TicketContent};
use super::error::TicketError;

/// `validates_length_of :subject, :maximum => 255`.
pub const SUBJECT_MAX: usize = 255;
/// No model limit; proxies often cap bodies at 1 MB. The raw log is cut to fit this.
pub const DESCRIPTION_MAX: usize = 64 * 1024;

/// The API key header.
pub const API_KEY: &str = "x-redmine-api-key";

/// The create URL.
pub fn create_url(t: &Target) -> String {
    format!("{}/issues.json", t.base())
}

/// The request body; `tracker` is the `issue_type` resolved to an id (`None` leaves the
/// project's default tracker).
pub fn body(t: &Target, c: &TicketContent, tracker: Option<u64>, with_priority: bool) -> Json {
    let project = t.cfg.project.trim();
    let project_id = match project.parse::<u64>() {
        Ok(n) => json!(n),
        Err(_) => json!(project),
    };
    let mut issue = json!({
        "project_id": project_id,
        "subject": truncate_chars(&c.summary, SUBJECT_MAX),
        "description": textile(c, DESCRIPTION_MAX),
    });
    if let Some(tracker) = tracker {
        issue["tracker_id"] = json!(tracker);
    }
    if let (true, Some(level)) = (with_priority, c.level) {
        issue["priority_id"] = json!(level.redmine());
    }
    json!({ "issue": issue })
}

/// Creates one issue; retries once without `priority_id` when Redmine says the priority is
/// blank (a site without the default priorities).
pub(crate) async fn create(t: &Target, c: &TicketContent) -> Result<Created, TicketError> {
    match create_once(t, c, true).await {
        Err(TicketError::Rejected {
            status: 422,
            message,
            ..
        }) if c.level.is_some() && message.contains("Priority") => {
            tracing::warn!(ticket = %t.cfg.name, error = %message, "Redmine refused the priority; creating without it.");
            create_once(t, c, false).await
        }
        r => r,
    }
}

/// `issue_type` as a tracker id: a number as it is; a name looked up once in
/// `GET /trackers.json` (Redmine takes only ids, and silently uses the project's default
/// tracker for an unknown one). A failed lookup is retried with the next ticket.
async fn tracker_id(t: &Target) -> Result<Option<u64>, TicketError> {
    let name = t.cfg.issue_type.trim();
    if let Ok(n) = name.parse::<u64>() {
        return Ok(Some(n));
    }
    if let Some(cached) = *t.redmine_tracker.lock().unwrap_or_else(|p| p.into_inner()) {
        return Ok(cached);
    }
    let key = (HeaderName::from_static(API_KEY), t.header_value(&t.secret)?);
    let Ok(reply) = t.get(&format!("{}/trackers.json", t.base()), key).await else {
        return Ok(None);
    };
    if !reply.status.is_success() {
        return Ok(None);
    }
    let found = reply
        .json()
        .as_ref()
        .and_then(|j| j.get("trackers"))
        .and_then(Json::as_array)
        .and_then(|list| {
            list.iter()
                .find(|x| {
                    x["name"]
                        .as_str()
                        .is_some_and(|n| n.eq_ignore_ascii_case(name))
                })
                .and_then(|x| x["id"].as_u64())
        });
    if found.is_none() {
        tracing::warn!(ticket = %t.cfg.name, tracker = name, "Redmine has no tracker by this name; issues get the project's default tracker.");
    }
    *t.redmine_tracker.lock().unwrap_or_else(|p| p.into_inner()) = Some(found);
    Ok(found)
}

async fn create_once(
    t: &Target,
    c: &TicketContent,
    with_priority: bool,
) -> Result<Created, TicketError> {
    let tracker = tracker_id(t).await?;
    let key = (HeaderName::from_static(API_KEY), t.header_value(&t.secret)?);
    let reply = t
        .post(&create_url(t), key, &body(t, c, tracker, with_priority))
        .await?;
    let json = reply.json();
    if reply.status.is_success() {
        let id = json
            .as_ref()
            .and_then(|j| j.pointer("/issue/id"))
            .and_then(Json::as_u64)
            .ok_or_else(|| TicketError::BadResponse {
                system: "redmine",
                status: reply.status.as_u16(),
                message: "no issue.id in the answer".into(),
            })?;
        let url = reply
            .headers
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .filter(|l| l.starts_with("http"))
            .map_or_else(|| format!("{}/issues/{id}", t.base()), str::to_owned);
        return Ok(Created {
            key: format!("#{id}"),
            url,
            system: "redmine".into(),
            id: Some(id.to_string()),
        });
    }
    Err(reply.error("redmine", json.as_ref().map(error_text).unwrap_or_default()))
}

/// `{"errors": ["…", "…"]}` → `…; …`.
pub fn error_text(j: &Json) -> String {
    j.get("errors")
        .and_then(Json::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Json::as_str)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}
