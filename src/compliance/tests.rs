use super::*;
use crate::event::{decode, DecodeOptions};

/// The shipped default (config/compliance.toml = shared/spec/compliance/default-mapping.toml).
const SHIPPED: &str = include_str!("../../config/compliance.toml");

fn ev(json: &str) -> Event<'_> {
    decode(json.as_bytes(), None, &DecodeOptions::default()).expect("event")
}

fn with_filters(filters: &str, mode: ComplianceMode) -> Result<Compliance, LoadError> {
    Compliance::from_toml_str(&format!("{SHIPPED}\n{filters}"), mode)
}

const WEB_F1021: &str =
    r#"{"logType":"detect","category":"web","filterId":"F-1021","filterName":"컬럼 데이터 탈취"}"#;

#[test]
fn shipped_default_loads_in_both_modes() {
    for mode in [ComplianceMode::Registered, ComplianceMode::All] {
        let c = Compliance::from_toml_str(SHIPPED, mode).expect("shipped mapping is valid");
        assert_eq!(c.standards.len(), 4);
        // 20 PCI + 15 ISMS-P + 16 ISO + 4 EFSR ids (controls.md §0).
        assert_eq!(c.controls.len(), 55);
        assert!(
            c.defaults.iter().all(Option::is_some),
            "all 24 pairs have defaults"
        );
    }
}

#[test]
fn registered_mode_maps_only_registered_filters() {
    let c = Compliance::from_toml_str(SHIPPED, ComplianceMode::Registered).unwrap();
    assert!(c.lookup(&ev(WEB_F1021)).is_none());
    let c = with_filters(
        "[[filter]]\nfilter_id = \"F-1021\"\n",
        ComplianceMode::Registered,
    )
    .unwrap();
    let got = c.lookup(&ev(WEB_F1021)).expect("registered");
    // No standard listed: the category default, in canonical standard order.
    assert_eq!(
        got.as_str(),
        "pci_dss_3_2_1:6.6,10.6.1,11.4;isms_p:2.10.1,2.10.3,2.11.3;\
         iso27001_2013:A.12.4.1,A.12.6.1,A.14.1.2,A.16.1.2;efsr:제14조,제15조,제17조"
    );
    let other = r#"{"logType":"detect","category":"web","filterId":"F-9"}"#;
    assert!(c.lookup(&ev(other)).is_none());
}

#[test]
fn all_mode_uses_category_defaults() {
    let c = Compliance::from_toml_str(SHIPPED, ComplianceMode::All).unwrap();
    let got = c
        .lookup(&ev(r#"{"logType":"usage","category":"support"}"#))
        .unwrap();
    // efsr = [] for usage/support: the standard is left out.
    assert_eq!(
        got.as_str(),
        "pci_dss_3_2_1:8.1.5,10.2.2;isms_p:2.3.3,2.9.4;iso27001_2013:A.12.4.3,A.15.2.1"
    );
    assert_eq!(
        got.sd_params(),
        " pci_dss_3_2_1=\"8.1.5,10.2.2\" isms_p=\"2.3.3,2.9.4\" iso27001_2013=\"A.12.4.3,A.15.2.1\""
    );
}

#[test]
fn filter_lists_replace_or_extend_per_standard() {
    let c = with_filters(
        "[[filter]]\nfilter_id = \"F-1021\"\npci_dss_3_2_1 = [\"6.5.1\"]\nefsr = []\n\
         [[filter]]\nfilter_name = \"컬럼 데이터 탈취\"\nextend = true\nisms_p = [\"2.11.5\", \"2.10.1\"]\n",
        ComplianceMode::Registered,
    )
    .unwrap();
    // The id entry wins over the name entry.
    assert_eq!(
        c.peek(&ev(WEB_F1021)).unwrap().as_str(),
        "pci_dss_3_2_1:6.5.1;isms_p:2.10.1,2.10.3,2.11.3;\
         iso27001_2013:A.12.4.1,A.12.6.1,A.14.1.2,A.16.1.2"
    );
    let by_name = r#"{"logType":"defense","category":"waf","filterName":"컬럼 데이터 탈취"}"#;
    assert_eq!(
        c.peek(&ev(by_name)).unwrap().as_str(),
        "pci_dss_3_2_1:6.6,10.6.1,11.4;isms_p:2.10.1,2.10.3,2.11.3,2.11.5;\
         iso27001_2013:A.12.4.1,A.14.1.2,A.16.1.5;efsr:제15조,제17조"
    );
}

#[test]
fn scoped_entries_override_unscoped_and_empty_maps_nothing() {
    let c = with_filters(
        "[[filter]]\nfilter_id = \"F-7\"\npci_dss_3_2_1 = [\"11.4\"]\n\
         [[filter]]\nfilter_id = \"F-7\"\nlog_type = \"defense\"\ncategory = \"waf\"\n\
         pci_dss_3_2_1 = []\nisms_p = []\niso27001_2013 = []\nefsr = []\n",
        ComplianceMode::All,
    )
    .unwrap();
    let det = r#"{"logType":"detect","category":"waf","filterId":"F-7"}"#;
    assert!(c
        .peek(&ev(det))
        .unwrap()
        .as_str()
        .starts_with("pci_dss_3_2_1:11.4;isms_p:"));
    // Emptied on purpose: no controls, even in mode all (no fallback to the default).
    let def = r#"{"logType":"defense","category":"waf","filterId":"F-7"}"#;
    assert!(c.lookup(&ev(def)).is_none());
    assert_eq!(c.totals().events, 0);
}

#[test]
fn numeric_filter_id_matches_its_json_text() {
    let c = with_filters(
        "[[filter]]\nfilter_id = \"1021\"\n",
        ComplianceMode::Registered,
    )
    .unwrap();
    assert!(c
        .peek(&ev(
            r#"{"logType":"detect","category":"host","filterId":1021}"#
        ))
        .is_some());
}

#[test]
fn errors_name_the_standard_and_the_id() {
    let e = with_filters(
        "[[filter]]\nfilter_id = \"F-1\"\npci_dss_3_2_1 = [\"10.9.9\"]\nnist = [\"AC-1\"]\n\
         [[filter]]\npci_dss_3_2_1 = [\"11.4\"]\n\
         [[filter]]\nfilter_id = \"F-2\"\nlog_type = \"usage\"\ncategory = \"web\"\n\
         [[filter]]\nfilter_id = \"F-3\"\n[[filter]]\nfilter_id = \"F-3\"\n",
        ComplianceMode::Registered,
    )
    .unwrap_err();
    let lines = e.errors();
    let want = [
        "compliance mapping: filter[1] \"F-1\": pci_dss_3_2_1: unknown control id \"10.9.9\" (not in [controls.pci_dss_3_2_1])",
        "compliance mapping: filter[1] \"F-1\": unknown standard \"nist\" (no [controls.nist] table)",
        "compliance mapping: filter[2]: needs filter_id or filter_name",
        "compliance mapping: filter[3] \"F-2\": category \"web\" is not a category of usage",
    ];
    for w in want {
        assert!(lines.iter().any(|l| l == w), "missing {w:?} in {lines:#?}");
    }
    assert!(
        lines.iter().any(|l| l.contains(
            "filter[5] \"F-3\": \"F-3\" for detect/correlation is already mapped by filter[4]"
        )),
        "{lines:#?}"
    );
    assert!(matches!(e, LoadError::Invalid { .. }));
}

#[test]
fn map_rows_and_controls_are_checked() {
    let src = "schema_version = 1\n[controls.pci_dss_3_2_1]\n\"10.6.1\" = { title = \"t\" }\n\
               \"a b\" = { title = \"t\" }\n\
               [[map]]\nlog_type = \"detect\"\ncategory = \"member\"\n\
               [[map]]\nlog_type = \"detect\"\ncategory = \"web\"\nisms_p = [\"2.11.3\"]\n\
               [[map]]\nlog_type = \"detect\"\ncategory = \"web\"\n";
    let lines = Compliance::from_toml_str(src, ComplianceMode::All)
        .unwrap_err()
        .errors();
    for w in [
        "controls.pci_dss_3_2_1.\"a b\": a control id must be non-empty",
        "map[1] (detect/member): log_type and category must name a pair",
        "map[2] (detect/web): unknown standard \"isms_p\"",
        "map[3] (detect/web): a second row for the same log_type and category",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(w)),
            "missing {w:?} in {lines:#?}"
        );
    }
    let e = Compliance::load(Path::new("/nonexistent/c.toml"), ComplianceMode::All).unwrap_err();
    assert!(e
        .to_string()
        .starts_with("compliance mapping /nonexistent/c.toml: "));
}

#[test]
fn report_counts_hits_last_seen_and_top_filters() {
    let c = with_filters(
        "[[filter]]\nfilter_id = \"F-1021\"\n[[filter]]\nfilter_name = \"SSH\"\n",
        ComplianceMode::All,
    )
    .unwrap();
    for _ in 0..3 {
        c.lookup(&ev(WEB_F1021)).unwrap();
    }
    c.lookup(&ev(
        r#"{"logType":"detect","category":"network","filterName":"SSH"}"#,
    ))
    .unwrap();
    c.lookup(&ev(r#"{"logType":"detect","category":"network"}"#))
        .unwrap();
    let r = c.report();
    assert_eq!(r["mode"], "all");
    assert_eq!(r["mapped_events"], 5);
    assert_eq!(r["registered_filters"], 2);
    let pci = &r["standards"]["pci_dss_3_2_1"];
    assert_eq!(pci["name"], "PCI-DSS v3.2.1");
    assert_eq!(pci["events"], 5);
    let c1061 = &pci["controls"]["10.6.1"];
    assert_eq!(c1061["hits"], 5);
    assert!(c1061["title"]
        .as_str()
        .unwrap()
        .starts_with("Review at least daily"));
    assert!(c1061["last_seen"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        c1061["top_filters"],
        serde_json::json!([
            {"filter_id": "F-1021", "hits": 3},
            {"filter_name": "SSH", "hits": 1},
            {"default": "detect/network", "hits": 1},
        ])
    );
    let unused = &pci["controls"]["1.1.1"];
    assert_eq!(unused["hits"], 0);
    assert!(unused["last_seen"].is_null());
    assert_eq!(
        r["standards"]["efsr"]["controls"]["제17조"]["title_en"],
        "Management of public web servers such as homepages"
    );
}

#[test]
fn reload_carries_the_counts_over() {
    let old = with_filters(
        "[[filter]]\nfilter_id = \"F-1021\"\n",
        ComplianceMode::Registered,
    )
    .unwrap();
    old.lookup(&ev(WEB_F1021)).unwrap();
    old.lookup(&ev(WEB_F1021)).unwrap();
    // The new file narrows PCI for F-1021: its old slot no longer matches, controls still do.
    let mut new = with_filters(
        "[[filter]]\nfilter_id = \"F-1021\"\npci_dss_3_2_1 = [\"6.6\"]\n",
        ComplianceMode::Registered,
    )
    .unwrap();
    new.carry_counts_from(&old);
    new.lookup(&ev(WEB_F1021)).unwrap();
    let r = new.report();
    assert_eq!(r["mapped_events"], 3);
    assert_eq!(r["since"], old.report()["since"]);
    let pci = &r["standards"]["pci_dss_3_2_1"];
    assert_eq!(pci["events"], 3);
    assert_eq!(pci["controls"]["6.6"]["hits"], 3);
    assert_eq!(pci["controls"]["10.6.1"]["hits"], 2);
    assert_eq!(
        pci["controls"]["6.6"]["top_filters"],
        serde_json::json!([{"filter_id": "F-1021", "hits": 1}])
    );
    let mut same = with_filters(
        "[[filter]]\nfilter_id = \"F-1021\"\n",
        ComplianceMode::Registered,
    )
    .unwrap();
    same.carry_counts_from(&old);
    assert_eq!(
        same.report()["standards"]["isms_p"]["controls"]["2.10.3"]["top_filters"],
        serde_json::json!([{"filter_id": "F-1021", "hits": 2}])
    );
}

/// `last_seen` comes from the coarse clock: it must tell the same time as the wall clock, to a
/// kernel tick (at most 10 ms at HZ=100) and the time between the two reads.
#[test]
fn the_coarse_clock_tells_the_wall_time() {
    for _ in 0..100 {
        let (before, coarse, after) = (now_ms(), coarse_now_ms(), now_ms());
        assert!(
            coarse > before - 20 && coarse <= after,
            "coarse {coarse}, wall {before}..{after}"
        );
    }
}
