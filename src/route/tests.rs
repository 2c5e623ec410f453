use std::borrow::Cow;

use proptest::prelude::*;

use super::*;
use crate::config::from_toml_str;
use crate::event::{decode, Category, DecodeOptions, ALL_PAIRS};

use Decision::{Filtered, OutOfScope, Routed};

fn router(toml: &str) -> Router {
    let c = from_toml_str(toml).unwrap_or_else(|e| panic!("{e}"));
    Router::new(&c.syslog).unwrap()
}

fn route(r: &Router, ev: &Event<'_>) -> Vec<Decision> {
    let mut out = vec![Routed; 7]; // stale content must be cleared
    r.route(ev, &mut out);
    out
}

fn event(t: LogType, c: Category, group: Option<&str>) -> Event<'static> {
    let mut ev = Event::new(t, c);
    if let Some(g) = group {
        ev.set(Field::GroupId, Some(Value::Str(Cow::Owned(g.to_owned()))));
    }
    ev
}

/// Four destinations: representative / group "acme", each with everything selected or with
/// one category per log type (web, waf, member).
const SCOPES: &str = r#"
[[syslog]]
name = "rep-all"
address = "h:1"
[[syslog]]
name = "grp-all"
kind = "group"
group = "acme"
address = "h:1"
[[syslog]]
name = "rep-some"
address = "h:1"
detect = ["web"]
defense = ["waf"]
usage = ["member"]
[[syslog]]
name = "grp-some"
kind = "group"
group = "acme"
address = "h:1"
detect = ["web"]
defense = "none"
"#;

/// What each destination of SCOPES must decide, written from the rules rather than the code.
fn expected(t: LogType, c: Category, group: Option<&str>) -> [Decision; 4] {
    let some = matches!(
        (t, c),
        (LogType::Detect, Category::Web)
            | (LogType::Defense, Category::Waf)
            | (LogType::Usage, Category::Member)
    );
    let some_grp = (t, c) == (LogType::Detect, Category::Web);
    let in_group = t != LogType::Usage && group == Some("acme");
    let pick = |scope: bool, wanted: bool| match (scope, wanted) {
        (false, _) => OutOfScope,
        (true, true) => Routed,
        (true, false) => Filtered,
    };
    [
        pick(true, true),
        pick(in_group, true),
        pick(true, some),
        pick(in_group, some_grp),
    ]
}

#[test]
fn every_pair_by_kind_and_selection() {
    let r = router(SCOPES);
    assert_eq!(r.len(), 4);
    let mut n = 0;
    for (t, c) in ALL_PAIRS {
        for g in [Some("acme"), Some("globex"), Some("ACME"), None] {
            let ev = event(t, c, g);
            assert_eq!(route(&r, &ev), expected(t, c, g), "{t:?} {c:?} group {g:?}");
            n += 1;
        }
    }
    assert_eq!(n, 96);
    // Spot checks of the rules themselves.
    let usage_acme = event(LogType::Usage, Category::Member, Some("acme"));
    assert_eq!(
        route(&r, &usage_acme),
        [Routed, OutOfScope, Routed, OutOfScope]
    );
    let web_acme = event(LogType::Detect, Category::Web, Some("acme"));
    assert_eq!(route(&r, &web_acme), [Routed; 4]);
    let waf_acme = event(LogType::Defense, Category::Waf, Some("acme"));
    assert_eq!(route(&r, &waf_acme), [Routed, Routed, Routed, Filtered]);
}

#[test]
fn group_comes_from_the_kafka_key_when_the_event_has_none() {
    let r = router(SCOPES);
    let opts = DecodeOptions::default();
    let ev = decode(
        br#"{"logType":"detect","category":"web"}"#,
        Some(b"acme"),
        &opts,
    )
    .unwrap();
    assert_eq!(route(&r, &ev), [Routed; 4]);
    let ev = decode(
        br#"{"logType":"detect","category":"web","groupId":"globex"}"#,
        Some(b"acme"),
        &opts,
    )
    .unwrap();
    assert_eq!(route(&r, &ev)[1], OutOfScope);
}

/// One representative destination with `[syslog.filter]` = `filter`, routing `json`.
fn passes(filter: &str, json: &str) -> bool {
    let r = router(&format!(
        "[[syslog]]\nname = \"d\"\naddress = \"h:1\"\n[syslog.filter]\n{filter}\n"
    ));
    let ev = decode(json.as_bytes(), None, &DecodeOptions::default()).unwrap();
    match route(&r, &ev)[..] {
        [Routed] => true,
        [Filtered] => false,
        ref other => panic!("unexpected {other:?}"),
    }
}

fn with(fields: &str) -> String {
    if fields.is_empty() {
        r#"{"logType":"detect","category":"web"}"#.to_owned()
    } else {
        format!(r#"{{"logType":"detect","category":"web",{fields}}}"#)
    }
}

#[test]
fn filter_min_risk() {
    let f = "min_risk = 4";
    for (v, want) in [
        (r#""filterRiskLevel":4"#, true),
        (r#""filterRiskLevel":10"#, true),
        (r#""filterRiskLevel":"5""#, true),
        (r#""filterRiskLevel":3"#, false),
        (r#""filterRiskLevel":"-""#, false),
        (r#""filterRiskLevel":"high""#, false),
        (r#""filterRiskLevel":4.5"#, true),
        (r#""filterRiskLevel":3.9"#, false),
        ("", false),
    ] {
        assert_eq!(passes(f, &with(v)), want, "{v}");
    }
    assert!(passes("min_risk = 0", &with(r#""filterRiskLevel":0"#)));
    assert!(!passes("min_risk = 0", &with(r#""filterRiskLevel":"-""#)));
}

#[test]
fn filter_ids_and_groups() {
    let f = r#"filter_ids = ["F-1021", 77]"#;
    assert!(passes(f, &with(r#""filterId":"F-1021""#)));
    assert!(passes(f, &with(r#""filterId":77"#)));
    assert!(!passes(f, &with(r#""filterId":"F-102""#)));
    assert!(!passes(f, &with(r#""filterId":"f-1021""#)));
    assert!(!passes(f, &with("")));
    let f = r#"groups = ["acme", "initech"]"#;
    assert!(passes(f, &with(r#""groupId":"initech""#)));
    assert!(!passes(f, &with(r#""groupId":"globex""#)));
    assert!(!passes(f, &with("")));
}

#[test]
fn filter_names_are_globs() {
    let f = r#"filter_names = ["*인젝션*", "컬럼 ??? 탈취", "F[1]"]"#;
    assert!(passes(f, &with(r#""filterName":"SQL 인젝션 공격""#)));
    assert!(passes(f, &with(r#""filterName":"인젝션""#)));
    assert!(
        passes(f, &with(r#""filterName":"컬럼 데이터 탈취""#)),
        "? is one character, Hangul included"
    );
    assert!(!passes(f, &with(r#""filterName":"컬럼 데이 탈취""#)));
    assert!(!passes(f, &with(r#""filterName":"컬럼 데이터 탈취함""#)));
    assert!(
        passes(f, &with(r#""filterName":"F[1]""#)),
        "[ ] are literal"
    );
    assert!(!passes(f, &with(r#""filterName":"F1""#)));
    assert!(!passes(f, &with(r#""filterName":"SQL 인젝""#)));
    assert!(!passes(f, &with("")));
    assert!(
        passes(r#"filter_names = ["a*"]"#, &with(r#""filterName":"a\nb""#)),
        "* spans line breaks"
    );
    assert!(
        !passes(
            r#"filter_names = ["abc"]"#,
            &with(r#""filterName":"xabcx""#)
        ),
        "anchored"
    );
}

#[test]
fn filter_ips() {
    let f = r#"server_ips = ["172.16.0.0/12", "10.0.0.5", "2001:db8::/32"]"#;
    for (ip, want) in [
        ("172.16.12.40", true),
        ("172.31.255.255", true),
        ("172.32.0.1", false),
        ("10.0.0.5", true),
        ("10.0.0.6", false),
        ("2001:db8::7", true),
        ("2001:db9::7", false),
        ("::ffff:172.16.1.1", true),
        (" 10.0.0.5 ", true),
        ("10.0.0.300", false),
        ("host-a", false),
        ("-", false),
    ] {
        assert_eq!(
            passes(f, &with(&format!(r#""serverIp":"{ip}""#))),
            want,
            "{ip}"
        );
    }
    assert!(!passes(f, &with("")));
    // detect_ips reads detectIp, not serverIp.
    let f = r#"detect_ips = ["203.0.113.0/24"]"#;
    assert!(passes(f, &with(r#""detectIp":"203.0.113.9""#)));
    assert!(!passes(f, &with(r#""serverIp":"203.0.113.9""#)));
}

#[test]
fn filter_fields_match_known_and_unknown_fields() {
    let f = "[syslog.filter.fields]\nlogMethod = \"^(POST|PUT)$\"";
    assert!(passes(f, &with(r#""logMethod":"POST""#)));
    assert!(!passes(f, &with(r#""logMethod":"GET""#)));
    assert!(!passes(f, &with("")), "a missing field fails");
    let f = "[syslog.filter.fields]\ncustomTag = \"pci\"\nlogStatus = \"^5\"";
    assert!(passes(f, &with(r#""customTag":"x-pci-y","logStatus":500"#)));
    assert!(!passes(
        f,
        &with(r#""customTag":"x-pci-y","logStatus":404"#)
    ));
    assert!(!passes(f, &with(r#""logStatus":500"#)));
    let f = "[syslog.filter.fields]\nlogBlocked = \"^(1|true)$\"";
    assert!(passes(f, &with(r#""logBlocked":true"#)));
    assert!(!passes(f, &with(r#""logBlocked":"0""#)));
}

#[test]
fn filter_fields_see_the_classification() {
    let r = router(
        "[[syslog]]\nname = \"d\"\naddress = \"h:1\"\n[syslog.filter.fields]\nlogType = \"^detect$\"\ncategory = \"^(web|waf)$\"\n",
    );
    let opts = DecodeOptions {
        topic_log_type: Some(LogType::Detect),
        ..DecodeOptions::default()
    };
    let ev = decode(br#"{"category":"waf"}"#, None, &opts).unwrap();
    assert_eq!(route(&r, &ev), [Routed]);
    let ev = decode(br#"{"category":"host"}"#, None, &opts).unwrap();
    assert_eq!(route(&r, &ev), [Filtered]);
    assert_eq!(
        route(&r, &event(LogType::Defense, Category::Web, None)),
        [Filtered]
    );
}

#[test]
fn all_filter_conditions_must_hold() {
    let f = "min_risk = 3\nfilter_ids = [\"F-1\"]\ngroups = [\"acme\"]";
    assert!(passes(
        f,
        &with(r#""filterRiskLevel":3,"filterId":"F-1","groupId":"acme""#)
    ));
    assert!(!passes(
        f,
        &with(r#""filterRiskLevel":2,"filterId":"F-1","groupId":"acme""#)
    ));
    assert!(!passes(
        f,
        &with(r#""filterRiskLevel":3,"filterId":"F-2","groupId":"acme""#)
    ));
    assert!(!passes(
        f,
        &with(r#""filterRiskLevel":3,"filterId":"F-1","groupId":"b""#)
    ));
    assert!(passes("", &with("")), "no filter passes everything");
}

#[test]
fn selection_is_checked_before_filters_and_scope_before_selection() {
    let r = router(
        "[[syslog]]\nname = \"g\"\nkind = \"group\"\ngroup = \"acme\"\naddress = \"h:1\"\ndetect = [\"web\"]\n[syslog.filter]\nmin_risk = 5\n",
    );
    let mk = |c, g: &str, risk: &str| {
        let mut ev = event(LogType::Detect, c, Some(g));
        ev.set(
            Field::FilterRiskLevel,
            Some(Value::Num(Box::leak(risk.to_owned().into_boxed_str()))),
        );
        ev
    };
    assert_eq!(route(&r, &mk(Category::Web, "acme", "9")), [Routed]);
    assert_eq!(route(&r, &mk(Category::Web, "acme", "1")), [Filtered]);
    assert_eq!(route(&r, &mk(Category::Host, "acme", "9")), [Filtered]);
    assert_eq!(route(&r, &mk(Category::Web, "other", "9")), [OutOfScope]);
}

#[test]
fn matcher_serves_ticket_when() {
    let c = from_toml_str(
        "[[ticket]]\nname = \"t\"\nsystem = \"redmine\"\nurl = \"https://r\"\nproject = \"p\"\nauth_key_env = \"K\"\n[ticket.when]\ndetect = [\"web\"]\ndefense = \"none\"\nusage = \"none\"\nmin_risk = 7\n",
    )
    .unwrap();
    let w = c.ticket[0].when.as_ref().unwrap();
    let m = Matcher::new(&w.select, &w.filter).unwrap();
    let opts = DecodeOptions::default();
    let (seven, six) = (
        with(r#""filterRiskLevel":7"#),
        with(r#""filterRiskLevel":6"#),
    );
    let ev = decode(seven.as_bytes(), None, &opts).unwrap();
    assert!(m.matches(&ev));
    let ev = decode(six.as_bytes(), None, &opts).unwrap();
    assert!(!m.matches(&ev));
    let ev = decode(
        br#"{"logType":"defense","category":"web","filterRiskLevel":9}"#,
        None,
        &opts,
    )
    .unwrap();
    assert!(!m.matches(&ev));
}

#[test]
fn empty_router() {
    let r = Router::new(&[]).unwrap();
    assert!(r.is_empty());
    assert_eq!(route(&r, &event(LogType::Detect, Category::Web, None)), []);
}

#[test]
fn glob_translation() {
    let re = glob_regex(&["a.b*".into(), "(x)?".into()]).unwrap();
    assert!(re.is_match("a.bzz") && re.is_match("(x)y"));
    assert!(!re.is_match("axb") && !re.is_match("(x)"));
}

const FILTERED: &str = r#"
[[syslog]]
name = "f"
address = "h:1"
[syslog.filter]
min_risk = 3
filter_ids = ["F-1"]
filter_names = ["*a?b*"]
server_ips = ["10.0.0.0/8", "::1"]
detect_ips = ["192.0.2.1"]
groups = ["acme"]
[syslog.filter.fields]
logMethod = "^P"
custom = "z+"
[[syslog]]
name = "g"
kind = "group"
group = "acme"
address = "h:1"
"#;

proptest! {
    #[test]
    fn route_never_panics(
        pair in 0..ALL_PAIRS.len(),
        values in proptest::collection::vec(proptest::option::of(".*"), 8),
        raw_num in "[-+0-9.eE]{0,8}",
    ) {
        let r = router(FILTERED);
        let (t, c) = ALL_PAIRS[pair];
        let mut ev = Event::new(t, c);
        let fields = [Field::FilterRiskLevel, Field::FilterId, Field::FilterName, Field::ServerIp,
                      Field::DetectIp, Field::GroupId, Field::LogMethod];
        for (f, v) in fields.iter().zip(&values) {
            ev.set(*f, v.clone().map(|s| Value::Str(Cow::Owned(s))));
        }
        if let Some(v) = &values[7] {
            ev.push_extra(Cow::Borrowed("custom"), Value::Str(Cow::Owned(v.clone())));
        }
        if !raw_num.is_empty() {
            ev.set(Field::FilterRiskLevel, Some(Value::Num(&raw_num)));
        }
        let mut out = Vec::new();
        r.route(&ev, &mut out);
        prop_assert_eq!(out.len(), 2);
        if t == LogType::Usage {
            prop_assert_eq!(out[1], OutOfScope);
        }
    }
}
