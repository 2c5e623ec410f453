//! Jira: Cloud (REST v3, ADF description, basic auth with e-mail + API token) and Server /
//! Data Center (REST v2, wiki-markup description, bearer personal access token).
//! ticketing.md §1–2.

use reqwest::header::{HeaderValue, AUTHORIZATION};
use serde_json::{json, Value as Json};

use super::client::{id_or_name, Created, Target};
use super::description::{adf, truncate_chars, wiki, TicketContent};
use super::error::TicketError;

/// Jira's summary limit (characters).
pub const SUMMARY_MAX: usize = 255;
/// Description budget: Jira's 32,767 limit less a margin for the stored representation.
pub const DESCRIPTION_MAX: usize = 30_000;

/// The create URL for this deployment.
pub fn create_url(t: &Target) -> String {
    let v = if t.cfg.is_jira_cloud() { 3 } else { 2 };
    format!("{}/rest/api/{v}/issue", t.base())
}

/// The request body: `{"fields": {…}}`; `with_priority = false` leaves the priority out.
pub fn body(t: &Target, c: &TicketContent, with_priority: bool) -> Json {
    let description = if t.cfg.is_jira_cloud() {
        adf(c, DESCRIPTION_MAX)
    } else {
        Json::String(wiki(c, DESCRIPTION_MAX))
    };
    let mut fields = json!({
        "project": id_or_name(&t.cfg.project, "id", "key"),
        "issuetype": id_or_name(&t.cfg.issue_type, "id", "name"),
        "summary": truncate_chars(&c.summary, SUMMARY_MAX),
        "description": description,
        "labels": c.labels.iter().map(|l| truncate_chars(l, 255)).collect::<Vec<_>>(),
    });
    if let (true, Some(level)) = (with_priority, c.level) {
        fields["priority"] = json!({"name": level.jira()});
    }
    json!({ "fields": fields })
}

fn auth(t: &Target) -> Result<HeaderValue, TicketError> {
    if t.cfg.is_jira_cloud() {
        use base64_basic::encode;
        let user = t.cfg.user.as_deref().unwrap_or_default();
        t.header_value(&format!(
            "Basic {}",
            encode(&format!("{user}:{}", t.secret))
        ))
    } else {
        t.header_value(&format!("Bearer {}", t.secret))
    }
}

/// Creates one issue; retries once without the priority when Jira says the field cannot be set.
pub(crate) async fn create(t: &Target, c: &TicketContent) -> Result<Created, TicketError> {
    match create_once(t, c, true).await {
        Err(TicketError::Rejected { message, .. })
            if c.level.is_some() && message.contains("priority:") =>
        {
            tracing::warn!(ticket = %t.cfg.name, error = %message, "Jira refused the priority field; creating without it.");
            create_once(t, c, false).await
        }
        r => r,
    }
}

async fn create_once(
    t: &Target,
    c: &TicketContent,
    with_priority: bool,
) -> Result<Created, TicketError> {
    let reply = t
        .post(
            &create_url(t),
            (AUTHORIZATION, auth(t)?),
            &body(t, c, with_priority),
        )
        .await?;
    let json = reply.json();
    if reply.status.is_success() {
        let key = json
            .as_ref()
            .and_then(|j| j.get("key"))
            .and_then(Json::as_str)
            .ok_or_else(|| TicketError::BadResponse {
                system: "jira",
                status: reply.status.as_u16(),
                message: "no \"key\" in the answer".into(),
            })?;
        let id = json
            .as_ref()
            .and_then(|j| j.get("id"))
            .and_then(Json::as_str)
            .map(str::to_owned);
        return Ok(Created {
            key: key.to_owned(),
            url: format!("{}/browse/{key}", t.base()),
            system: "jira".into(),
            id,
        });
    }
    Err(reply.error("jira", json.as_ref().map(error_text).unwrap_or_default()))
}

/// `errorMessages` and `errors` of an ErrorCollection, as one line: `a; field: msg`.
pub fn error_text(j: &Json) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(list) = j.get("errorMessages").and_then(Json::as_array) {
        parts.extend(list.iter().filter_map(Json::as_str).map(str::to_owned));
    }
    if let Some(map) = j.get("errors").and_then(Json::as_object) {
        for (k, v) in map {
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            parts.push(format!("{k}: {v}"));
        }
    }
    if parts.is_empty() {
        if let Some(m) = j.get("message").and_then(Json::as_str) {
            parts.push(m.to_owned());
        }
    }
    parts.join("; ")
}

/// Standard base64 for the basic-auth header (no extra crate for 20 lines).
mod base64_basic {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
        for chunk in b.chunks(3) {
            let n = (u32::from(chunk[0]) << 16)
                | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
                | u32::from(*chunk.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[cfg(test)]
    #[test]
    fn rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode(i), o);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_collection_text() {
        let j = json!({"errorMessages": ["We can't create this issue"], "errors": {"priority": "Field 'priority' cannot be set."}});
        assert_eq!(
            error_text(&j),
            "We can't create this issue; priority: Field 'priority' cannot be set."
        );
    }
}
