//! What a ticket says: the summary, the event's fields as a table, the compliance controls and
//! the raw log, rendered in each system's markup (ticketing.md §1–4, §6.4–6.5).
//!
//! Everything here is pure; the clients only choose the markup and the length limits.

use std::fmt::Write as _;

use serde_json::{json, Value as Json};

use crate::event::{Event, Field};

use super::error::TicketError;

/// An event as a ticket needs it: owned (it waits in a queue), fields in a stable order.
#[derive(Debug, Clone, PartialEq)]
pub struct TicketEvent {
    /// `eventId`, or `topic/partition/offset` (event.md), or `manual-<hash>` for a manual
    /// ticket of an event without `eventId`.
    pub id: String,
    /// (event.md name, text) of every present field.
    pub fields: Vec<(String, String)>,
}

impl TicketEvent {
    /// From a decoded event. `fallback_id` names it when it has no `eventId`
    /// (`topic/partition/offset`).
    pub fn from_event(ev: &Event<'_>, fallback_id: &str) -> Self {
        let mut fields = Vec::with_capacity(16);
        fields.push(("logType".to_owned(), ev.log_type.name().to_owned()));
        fields.push(("category".to_owned(), ev.category.name().to_owned()));
        for &f in Field::ALL {
            if matches!(f, Field::LogType | Field::Category) {
                continue;
            }
            if let Some(v) = ev.text(f) {
                fields.push((f.name().to_owned(), v.to_owned()));
            }
        }
        for (k, v) in ev.extra() {
            fields.push((k.to_string(), v.as_text().to_owned()));
        }
        let id = ev
            .text(Field::EventId)
            .map_or_else(|| fallback_id.to_owned(), str::to_owned);
        TicketEvent { id, fields }
    }

    /// From the JSON object of a manual ticket (`POST /api/tickets`). Strings as they are,
    /// numbers and booleans in their JSON text, objects and arrays as JSON; null and `""`
    /// are missing (event.md).
    ///
    /// # Errors
    /// [`TicketError::NotAnObject`] when `v` is not an object.
    pub fn from_json(v: &Json) -> Result<Self, TicketError> {
        let obj = v.as_object().ok_or(TicketError::NotAnObject)?;
        let mut fields = Vec::with_capacity(obj.len());
        for (k, v) in obj {
            let text = match v {
                Json::Null => continue,
                Json::String(s) if s.is_empty() => continue,
                Json::String(s) => s.clone(),
                other => other.to_string(),
            };
            fields.push((k.clone(), text));
        }
        let id = match obj.get("eventId").and_then(Json::as_str) {
            Some(id) if !id.is_empty() => id.to_owned(),
            _ => format!("manual-{:016x}", fnv1a(v.to_string().as_bytes())),
        };
        Ok(TicketEvent { id, fields })
    }

    /// A field's text by its event.md name.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// FNV-1a 64: stable across builds and replicas (std's hasher is not guaranteed to be).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The ticket priority, from `filterRiskLevel` (0–10, or a CEF severity word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Risk 9–10 or `Very-High`.
    Critical,
    /// Risk 7–8 or `High`.
    High,
    /// Risk 4–6 or `Medium`.
    Medium,
    /// Risk 1–3 or `Low`.
    Low,
    /// Risk 0.
    Info,
}

impl Level {
    /// `None` for `-`, `Unknown`, or anything else.
    pub fn from_risk(text: &str) -> Option<Level> {
        let t = text.trim();
        if let Ok(n) = t.parse::<u8>() {
            return match n {
                0 => Some(Level::Info),
                1..=3 => Some(Level::Low),
                4..=6 => Some(Level::Medium),
                7..=8 => Some(Level::High),
                9..=10 => Some(Level::Critical),
                _ => None,
            };
        }
        match t.to_ascii_lowercase().as_str() {
            "low" => Some(Level::Low),
            "medium" => Some(Level::Medium),
            "high" => Some(Level::High),
            "very-high" | "very high" | "critical" => Some(Level::Critical),
            _ => None,
        }
    }

    /// The summary tag.
    pub const fn tag(self) -> &'static str {
        match self {
            Level::Critical => "CRITICAL",
            Level::High => "HIGH",
            Level::Medium => "MEDIUM",
            Level::Low => "LOW",
            Level::Info => "INFO",
        }
    }

    /// Jira's default priority scheme names.
    pub const fn jira(self) -> &'static str {
        match self {
            Level::Critical => "Highest",
            Level::High => "High",
            Level::Medium => "Medium",
            Level::Low => "Low",
            Level::Info => "Lowest",
        }
    }

    /// MantisBT's default priority enum labels (`config_defaults_inc.php`).
    pub const fn mantis(self) -> &'static str {
        match self {
            Level::Critical => "urgent",
            Level::High => "high",
            Level::Medium => "normal",
            Level::Low | Level::Info => "low",
        }
    }

    /// Redmine's default-data priority ids (1 Low, 2 Normal, 3 High, 4 Urgent, 5 Immediate).
    pub const fn redmine(self) -> u32 {
        match self {
            Level::Critical => 4,
            Level::High => 3,
            Level::Medium => 2,
            Level::Low | Level::Info => 1,
        }
    }
}

/// Everything one ticket says, before markup.
#[derive(Debug, Clone, PartialEq)]
pub struct TicketContent {
    /// Untruncated; each client cuts to its limit.
    pub summary: String,
    /// The fields for the table (without `logOrigin`).
    pub event: TicketEvent,
    /// `logOrigin`, when `include_raw_log` and present.
    pub raw_log: Option<String>,
    /// (standard, control) pairs, as the compliance lookup gave them.
    pub controls: Vec<(String, String)>,
    /// From `filterRiskLevel`; `None` sends no priority (the system's default).
    pub level: Option<Level>,
    /// Jira labels (no spaces); other systems get them in the text.
    pub labels: Vec<String>,
    /// `fwd-<hash of the event id>`: a stable marker to find the ticket again (§6.3).
    pub marker: String,
    /// A heading line above the table.
    pub intro: String,
}

/// The product name in summaries and labels.
const PRODUCT: &str = "plura";

impl TicketContent {
    /// The ticket for one event.
    pub fn for_event(event: TicketEvent, include_raw_log: bool, controls: &[(&str, &str)]) -> Self {
        let level = event.get("filterRiskLevel").and_then(Level::from_risk);
        let summary = summary(&event, level);
        let marker = format!("fwd-{:016x}", fnv1a(event.id.as_bytes()));
        let mut labels = vec![PRODUCT.to_owned()];
        for k in ["logType", "category"] {
            if let Some(v) = event.get(k) {
                labels.push(label(&format!("{PRODUCT}-{v}")));
            }
        }
        labels.push(marker.clone());
        let raw_log = if include_raw_log {
            event.get("logOrigin").map(str::to_owned)
        } else {
            None
        };
        let mut event = event;
        event.fields.retain(|(k, _)| k != "logOrigin");
        TicketContent {
            summary,
            intro: format!("PLURA security event {}", event.id),
            event,
            raw_log,
            controls: controls
                .iter()
                .map(|(s, c)| ((*s).to_owned(), (*c).to_owned()))
                .collect(),
            level,
            labels,
            marker,
        }
    }

    /// The test ticket ("티켓 발행 테스트"): `[TEST]` summary, a `test` label.
    pub fn test(ticket_name: &str, now_rfc3339: &str) -> Self {
        let host = hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default();
        let id = format!("test-{now_rfc3339}");
        let marker = format!("fwd-{:016x}", fnv1a(id.as_bytes()));
        let mut fields = vec![
            (
                "test".to_owned(),
                "티켓 발행 테스트 (ticket test)".to_owned(),
            ),
            ("ticket".to_owned(), ticket_name.to_owned()),
            ("time".to_owned(), now_rfc3339.to_owned()),
        ];
        if !host.is_empty() {
            fields.push(("host".to_owned(), host));
        }
        TicketContent {
            summary: format!("[TEST] plura-forwarder connectivity test {now_rfc3339}"),
            intro: "A test ticket from plura-forwarder; it can be closed.".to_owned(),
            event: TicketEvent { id, fields },
            raw_log: None,
            controls: Vec::new(),
            level: None,
            labels: vec![PRODUCT.to_owned(), "test".to_owned(), marker.clone()],
            marker,
        }
    }

    /// Controls grouped by standard, in the order given: `("pci_dss_3_2_1", "10.6.1, 11.4")`.
    pub fn controls_by_standard(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (s, c) in &self.controls {
            match out.iter_mut().find(|(k, _)| k == s) {
                Some((_, list)) => {
                    list.push_str(", ");
                    list.push_str(c);
                }
                None => out.push((s.clone(), c.clone())),
            }
        }
        out
    }
}

/// `[LEVEL] title from detectIp on server`.
fn summary(ev: &TicketEvent, level: Option<Level>) -> String {
    let tag = level.map_or("PLURA", Level::tag);
    let title = ev
        .get("filterName")
        .or_else(|| ev.get("userActionCategoryName"))
        .or_else(|| ev.get("detectDescription"))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let svc = ev
                .get("serviceName")
                .or(ev.get("category"))
                .unwrap_or("event");
            let name = ev.get("eventName").or(ev.get("logType")).unwrap_or("");
            format!("{svc} {name}").trim().to_owned()
        });
    let mut s = format!("[{tag}] {}", one_line(&title));
    if let Some(ip) = ev.get("detectIp") {
        let _ = write!(s, " from {}", one_line(ip));
    }
    if let Some(srv) = ev.get("serverName").or_else(|| ev.get("serverIp")) {
        let _ = write!(s, " on {}", one_line(srv));
    }
    s
}

/// A Jira label: no whitespace.
fn label(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .collect()
}

/// Control characters out, line breaks and tabs to spaces: text for one table cell or line.
pub fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `s` cut to `max` characters (Unicode scalars, not bytes), with `…` when cut.
pub fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A raw log fit for a code block: CRLF and CR to LF, other C0 controls (except tab) out, then
/// cut to `max` characters with a note of what was left off.
pub fn clean_raw(s: &str, max: usize) -> String {
    let s = s.replace("\r\n", "\n").replace('\r', "\n");
    let clean: String = s
        .chars()
        .filter(|&c| c == '\n' || c == '\t' || !c.is_control())
        .collect();
    let total = clean.chars().count();
    if total <= max {
        return clean;
    }
    let kept: String = clean.chars().take(max).collect();
    let omitted = clean.len() - kept.len();
    format!("{kept}\n… (truncated, {omitted} bytes omitted)")
}

/// The longest a table cell gets; the raw log carries the whole text.
const CELL_MAX: usize = 2000;

fn cell(v: &str) -> String {
    let v = truncate_chars(&one_line(v), CELL_MAX);
    if v.trim().is_empty() {
        "-".to_owned()
    } else {
        v
    }
}

/// Room left for the raw log in a description of at most `limit` characters.
fn raw_budget(limit: usize, used: usize) -> usize {
    limit.saturating_sub(used + 200).max(1000)
}

/// Jira Cloud: an Atlassian Document Format document. Text nodes are never empty; the raw log
/// is a `codeBlock` (line breaks kept).
pub fn adf(c: &TicketContent, limit: usize) -> Json {
    let text = |t: &str| json!({"type": "text", "text": if t.is_empty() { "-" } else { t }});
    let strong = |t: &str| json!({"type": "text", "text": t, "marks": [{"type": "strong"}]});
    let para = |nodes: Vec<Json>| json!({"type": "paragraph", "content": nodes});
    let heading = |t: &str| json!({"type": "heading", "attrs": {"level": 3}, "content": [text(t)]});
    let mut used = c.intro.len();
    let mut content = vec![para(vec![text(&c.intro)]), heading("Event")];
    let mut rows = vec![json!({"type": "tableRow", "content": [
        {"type": "tableHeader", "content": [para(vec![text("Field")])]},
        {"type": "tableHeader", "content": [para(vec![text("Value")])]},
    ]})];
    for (k, v) in &c.event.fields {
        let v = cell(v);
        used += k.len() + v.chars().count() + 20;
        rows.push(json!({"type": "tableRow", "content": [
            {"type": "tableCell", "content": [para(vec![strong(&cell(k))])]},
            {"type": "tableCell", "content": [para(vec![text(&v)])]},
        ]}));
    }
    content.push(json!({"type": "table", "attrs": {"isNumberColumnEnabled": false, "layout": "default"}, "content": rows}));
    let controls = c.controls_by_standard();
    if !controls.is_empty() {
        content.push(heading("Compliance"));
        let items: Vec<Json> = controls
            .iter()
            .map(|(s, list)| {
                used += s.len() + list.len() + 4;
                json!({"type": "listItem", "content": [para(vec![strong(&cell(s)), text(&format!(": {}", cell(list)))])]})
            })
            .collect();
        content.push(json!({"type": "bulletList", "content": items}));
    }
    if let Some(raw) = &c.raw_log {
        let raw = clean_raw(raw, raw_budget(limit, used));
        content.push(heading("Raw log"));
        let mut block = json!({"type": "codeBlock", "attrs": {"language": "text"}, "content": []});
        if !raw.is_empty() {
            block["content"] = json!([{"type": "text", "text": raw}]);
        }
        content.push(block);
    }
    json!({"type": "doc", "version": 1, "content": content})
}

/// Jira Server / Data Center: wiki markup. The raw log is a `{noformat}` block whose literal
/// marker inside the log is broken so that it cannot end the block early.
pub fn wiki(c: &TicketContent, limit: usize) -> String {
    let esc = |s: &str| {
        let mut o = String::with_capacity(s.len());
        for ch in cell(s).chars() {
            if matches!(ch, '\\' | '|' | '{' | '}' | '[' | ']' | '*' | '_' | '-') {
                o.push('\\');
            }
            o.push(ch);
        }
        o
    };
    let mut s = String::new();
    let _ = write!(s, "{}\n\nh3. Event\n||Field||Value||\n", esc(&c.intro));
    for (k, v) in &c.event.fields {
        let _ = writeln!(s, "|*{}*|{}|", esc(k), esc(v));
    }
    let controls = c.controls_by_standard();
    if !controls.is_empty() {
        s.push_str("\nh3. Compliance\n");
        for (st, list) in controls {
            let _ = writeln!(s, "* *{}*: {}", esc(&st), esc(&list));
        }
    }
    if let Some(raw) = &c.raw_log {
        let raw = clean_raw(raw, raw_budget(limit, s.chars().count()));
        let raw = replace_ci(&raw, "{noformat}", "{ noformat}");
        let _ = write!(s, "\nh3. Raw log\n{{noformat}}\n{raw}\n{{noformat}}\n");
    }
    s
}

/// Redmine: Textile (the default text formatting). The raw log is a `<pre>` block with any
/// `</pre>` inside it escaped.
pub fn textile(c: &TicketContent, limit: usize) -> String {
    let esc = |s: &str| cell(s).replace('|', "&#124;");
    let mut s = String::new();
    let _ = write!(
        s,
        "{}\n\nh3. Event\n\n|_. Field |_. Value |\n",
        esc(&c.intro)
    );
    for (k, v) in &c.event.fields {
        let _ = writeln!(s, "| {} | {} |", esc(k), esc(v));
    }
    let controls = c.controls_by_standard();
    if !controls.is_empty() {
        s.push_str("\nh3. Compliance\n\n");
        for (st, list) in controls {
            let _ = writeln!(s, "* *{}*: {}", esc(&st), esc(&list));
        }
    }
    let _ = write!(s, "\nForwarder marker: {}\n", c.marker);
    if let Some(raw) = &c.raw_log {
        let raw = clean_raw(raw, raw_budget(limit, s.chars().count()));
        let raw = replace_ci(&raw, "</pre", "&lt;/pre");
        let _ = write!(s, "\nh3. Raw log\n\n<pre>\n{raw}\n</pre>\n");
    }
    s
}

/// MantisBT: plain text (Markdown only if the site enabled it), so an aligned two-column list
/// and the raw log between ``` fences longer than any backtick run in it. Never empty
/// (Mantis refuses a blank description).
pub fn plain(c: &TicketContent, limit: usize) -> String {
    let width = c
        .event
        .fields
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut s = String::new();
    let _ = write!(s, "{}\n\nEvent\n", cell(&c.intro));
    for (k, v) in &c.event.fields {
        let k = cell(k);
        let pad = width.saturating_sub(k.chars().count());
        let _ = writeln!(s, "  {k}{} : {}", " ".repeat(pad), cell(v));
    }
    let controls = c.controls_by_standard();
    if !controls.is_empty() {
        s.push_str("\nCompliance\n");
        for (st, list) in controls {
            let _ = writeln!(s, "  {}: {}", cell(&st), cell(&list));
        }
    }
    if let Some(raw) = &c.raw_log {
        let raw = clean_raw(raw, raw_budget(limit, s.chars().count()));
        let fence = "`".repeat(longest_run(&raw, '`').max(2) + 1);
        let _ = write!(s, "\nRaw log\n{fence}\n{raw}\n{fence}\n");
    }
    s
}

fn longest_run(s: &str, ch: char) -> usize {
    let (mut best, mut cur) = (0, 0);
    for c in s.chars() {
        if c == ch {
            cur += 1;
            best = best.max(cur);
        } else {
            cur = 0;
        }
    }
    best
}

/// Replaces `pat` (ASCII, any case) in `s`.
fn replace_ci(s: &str, pat: &str, with: &str) -> String {
    let lower = s.to_ascii_lowercase();
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    for (i, _) in lower.match_indices(&pat.to_ascii_lowercase()) {
        out.push_str(&s[last..i]);
        out.push_str(with);
        last = i + pat.len();
    }
    out.push_str(&s[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TicketEvent {
        TicketEvent::from_json(&json!({
            "logType": "detect", "category": "web", "eventId": "e-0001",
            "filterName": "컬럼 데이터 탈취", "filterRiskLevel": 7, "detectIp": "172.16.20.192",
            "serverName": "Harry-LP-L", "logUri": "/a|b", "logOrigin": "GET /x {noformat} </PRE> y\r\nline2\u{0}",
            "logStatus": null, "logQuery": ""
        }))
        .unwrap()
    }

    #[test]
    fn summary_and_level_from_the_event() {
        let c = TicketContent::for_event(
            sample(),
            true,
            &[
                ("pci_dss_3_2_1", "10.6.1"),
                ("isms_p", "2.11.3"),
                ("pci_dss_3_2_1", "11.4"),
            ],
        );
        assert_eq!(
            c.summary,
            "[HIGH] 컬럼 데이터 탈취 from 172.16.20.192 on Harry-LP-L"
        );
        assert_eq!(c.level, Some(Level::High));
        assert_eq!(c.event.id, "e-0001");
        assert!(c.event.get("logOrigin").is_none());
        assert!(c.event.get("logStatus").is_none() && c.event.get("logQuery").is_none());
        assert_eq!(
            c.controls_by_standard(),
            vec![
                ("pci_dss_3_2_1".to_owned(), "10.6.1, 11.4".to_owned()),
                ("isms_p".to_owned(), "2.11.3".to_owned())
            ]
        );
        assert_eq!(c.labels[..3], ["plura", "plura-detect", "plura-web"]);
        assert!(c.labels[3].starts_with("fwd-"));
    }

    #[test]
    fn markups_escape_the_raw_log_and_cells() {
        let c = TicketContent::for_event(sample(), true, &[("pci_dss_3_2_1", "10.6.1")]);
        let w = wiki(&c, 32_000);
        assert!(
            w.contains("{noformat}\nGET /x { noformat} </PRE> y\nline2\n{noformat}"),
            "{w}"
        );
        assert!(w.contains("|*logUri*|/a\\|b|"), "{w}");
        let t = textile(&c, 65_000);
        assert!(
            t.contains("<pre>\nGET /x {noformat} &lt;/pre> y\nline2\n</pre>"),
            "{t}"
        );
        assert!(t.contains("| logUri | /a&#124;b |"), "{t}");
        let p = plain(&c, 65_000);
        assert!(
            p.contains("```\nGET /x {noformat} </PRE> y\nline2\n```"),
            "{p}"
        );
        let a = adf(&c, 32_000);
        let s = a.to_string();
        assert!(s.contains("\"codeBlock\""));
        assert!(!s.contains("\"text\":\"\""), "empty ADF text node: {s}");
        let no_raw = TicketContent::for_event(sample(), false, &[]);
        assert!(!wiki(&no_raw, 32_000).contains("Raw log"));
        assert!(!wiki(&no_raw, 32_000).contains("Compliance"));
    }

    #[test]
    fn raw_log_is_cut_in_characters() {
        let raw = "é".repeat(5000);
        let out = clean_raw(&raw, 1000);
        assert!(out.starts_with(&"é".repeat(1000)));
        assert!(out.ends_with("(truncated, 8000 bytes omitted)"));
        assert_eq!(truncate_chars("abcdef", 4), "abc…");
        assert_eq!(truncate_chars("abc", 4), "abc");
    }

    #[test]
    fn risk_words_and_numbers() {
        assert_eq!(Level::from_risk("10"), Some(Level::Critical));
        assert_eq!(Level::from_risk("0"), Some(Level::Info));
        assert_eq!(Level::from_risk("Very-High"), Some(Level::Critical));
        assert_eq!(Level::from_risk("-"), None);
        assert_eq!(Level::from_risk("11"), None);
    }

    #[test]
    fn manual_event_without_id_gets_a_stable_one() {
        let v = json!({"logType": "detect", "category": "web"});
        let a = TicketEvent::from_json(&v).unwrap();
        assert_eq!(a.id, TicketEvent::from_json(&v).unwrap().id);
        assert!(a.id.starts_with("manual-"));
        assert_eq!(
            TicketEvent::from_json(&json!([1])),
            Err(TicketError::NotAnObject)
        );
    }
}
