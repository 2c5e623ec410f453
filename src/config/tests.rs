use super::*;
use crate::render::settings::{Format, Framing, Protocol};

/// A minimal valid destination table.
const DEST: &str = "[[syslog]]\nname = \"d\"\naddress = \"127.0.0.1:514\"\n";

fn ok(src: &str) -> Config {
    match from_toml_str(src) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

fn errs(src: &str) -> Vec<String> {
    match from_toml_str(src) {
        Ok(_) => panic!("expected errors for:\n{src}"),
        Err(e) => e.0,
    }
}

/// The only error of `src`.
fn err(src: &str) -> String {
    let e = errs(src);
    assert_eq!(e.len(), 1, "expected one error, got {e:#?}");
    e.into_iter().next().unwrap()
}

/// One destination with extra keys.
fn dest(extra: &str) -> String {
    format!("{DEST}{extra}\n")
}

#[test]
fn default_toml_loads_with_its_two_destinations() {
    let c = ok(DEFAULT_TOML);
    assert_eq!(c.syslog.len(), 2);
    let (a, b) = (&c.syslog[0], &c.syslog[1]);
    assert_eq!(
        (a.name.as_str(), &a.kind),
        ("soc-siem", &Kind::Representative)
    );
    assert_eq!(
        (a.render.protocol, a.render.format),
        (Protocol::Tcp, Format::Rfc5424)
    );
    assert_eq!(a.address, "127.0.0.1:5514");
    assert_eq!(b.kind, Kind::Group("acme".into()));
    assert_eq!(
        (b.render.protocol, b.render.format),
        (Protocol::Udp, Format::Cef)
    );
    assert_eq!(b.address, "127.0.0.1:5515");
    assert_eq!(b.select.usage, CategorySet::NONE);
    assert_eq!(b.select.defense.describe(LogType::Defense), "web,waf");
    assert!(c.ticket.is_empty());
    // The shipped file's warnings are only about the environment (admin token unset).
    for w in c.warnings() {
        assert!(w.starts_with("admin:"), "unexpected warning {w}");
    }
}

#[test]
fn shipped_files_load_from_disk() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let path = std::path::Path::new(dir).join("config/forwarder.toml");
    let cwd = std::env::current_dir().unwrap();
    // mapping_file is relative to the working directory, which cargo sets to the crate root.
    assert_eq!(cwd, std::path::Path::new(dir));
    let c = load(&path).unwrap();
    assert_eq!(c.path.as_deref(), Some(path.as_path()));
    let shipped =
        std::fs::read_to_string(std::path::Path::new(dir).join("config/compliance.toml")).unwrap();
    assert!(shipped.contains("schema_version = 1"));
}

#[test]
fn defaults_match_config_md() {
    let c = ok(DEST);
    let k = &c.kafka;
    assert_eq!(k.brokers, "127.0.0.1:9092");
    assert_eq!(k.group_id, "plura-forwarder");
    assert_eq!(k.topics, ["plura.detect", "plura.defense", "plura.usage"]);
    assert_eq!(k.dead_letter_topic, "plura.forwarder.dlq");
    assert_eq!(k.retry_topic, "plura.forwarder.retry");
    assert_eq!(k.ticket_history_topic, "plura.forwarder.tickets");
    assert_eq!(k.max_event_bytes, 1_048_576);
    assert!(k.topic_log_types.is_empty() && k.properties.is_empty());
    let f = &c.forwarder;
    assert_eq!(f.hostname, hostname::get().unwrap().into_string().unwrap());
    assert_eq!(f.app_name, "Plura");
    assert_eq!(
        (
            f.queue_events,
            f.batch_max_events,
            f.batch_max_bytes,
            f.batch_linger_ms
        ),
        (65_536, 1024, 1_048_576, 5)
    );
    assert_eq!(
        (f.commit_interval_ms, f.shutdown_grace_s, f.park_after_ms),
        (1000, 30, 1000)
    );
    assert_eq!(c.admin.listen, "127.0.0.1:9464");
    assert_eq!(c.admin.token_env, "PLURA_FORWARDER_ADMIN_TOKEN");
    assert_eq!(
        c.compliance.mapping_file,
        PathBuf::from("config/compliance.toml")
    );
    assert_eq!(c.compliance.mode, ComplianceMode::Registered);
    let d = &c.syslog[0];
    assert_eq!(d.kind, Kind::Representative);
    let r = &d.render;
    assert_eq!(
        (r.protocol, r.format, r.framing),
        (Protocol::Tcp, Format::Rfc5424, Some(Framing::OctetCounting))
    );
    assert_eq!(
        (r.facility, r.severity, r.frac_digits, r.max_message_bytes),
        (16, 5, 6, 65_536)
    );
    assert_eq!(r.app_name, "Plura");
    assert!(
        !r.include_raw_log && !r.include_compliance && !r.tag_colon && r.cef_tag && !r.cef_labels
    );
    assert_eq!(d.select, Selection::all());
    assert!(d.filter.is_empty());
    assert_eq!(d.tls, None);
    assert_eq!(c.path, None);
}

#[test]
fn ticket_defaults_match_config_md() {
    let c = ok(&format!(
        "{DEST}[[ticket]]\nname = \"j\"\nsystem = \"jira\"\nversion = \"cloud\"\nurl = \"https://x.atlassian.net/\"\nproject = \"SEC\"\nauth_key_env = \"JIRA_API_TOKEN\"\nuser = \"a@b.c\"\n"
    ));
    let t = &c.ticket[0];
    assert_eq!(
        (t.system, t.version.as_str(), t.url.as_str()),
        (TicketSystem::Jira, "cloud", "https://x.atlassian.net")
    );
    assert!(t.is_jira_cloud());
    assert_eq!(t.auth, SecretSource::Env("JIRA_API_TOKEN".into()));
    assert_eq!(t.issue_type, "Task");
    assert!(t.include_raw_log);
    assert_eq!(
        (t.rate_per_minute, t.burst, t.dedup_window_s),
        (30, 10, 3600)
    );
    assert_eq!(t.dedup_key, ["filterId", "serverIp"]);
    assert_eq!(t.when, None);
    let c = ok("[[ticket]]\nname = \"r\"\nsystem = \"redmine\"\nurl = \"http://127.0.0.1:3000\"\nproject = 7\nauth_key_file = \"/run/k\"\n[ticket.when]\ndetect = [\"web\", \"data_leak\"]\ndefense = \"none\"\nmin_risk = 7\n");
    let t = &c.ticket[0];
    assert_eq!((t.version.as_str(), t.project.as_str()), ("5", "7"));
    assert_eq!(t.auth, SecretSource::File("/run/k".into()));
    let w = t.when.as_ref().unwrap();
    assert_eq!(
        w.select.describe(),
        "detect=web,data_leak defense=none usage=all"
    );
    assert_eq!(w.filter.min_risk, Some(7));
    assert!(c.syslog.is_empty());
}

#[test]
fn spec_example_missing_port() {
    let src = format!(
        "{DEST}[[syslog]]\nname = \"b\"\naddress = \"::1\"\n[[syslog]]\nname = \"soc-b\"\naddress = \"10.0.0.5\"\n"
    );
    let e = errs(&src);
    assert_eq!(
        e,
        [
            "syslog[1] \"b\": address \"::1\": an IPv6 address needs brackets, e.g. [::1]:514",
            "syslog[2] \"soc-b\": address \"10.0.0.5\": missing port",
        ]
    );
}

#[test]
fn addresses() {
    for good in [
        "127.0.0.1:514",
        "[::1]:514",
        "[2001:db8::1]:6514",
        "siem.example.com:1",
        "h:65535",
    ] {
        assert!(split_address(good).is_ok(), "{good}");
    }
    assert_eq!(split_address("[::1]:514"), Ok(("::1", 514)));
    let bad = [
        ("10.0.0.5", "missing port"),
        ("10.0.0.5:", "missing port"),
        (":514", "missing host"),
        ("10.0.0.5:0", "port 0 is out of range 1..65535"),
        ("10.0.0.5:65536", "port 65536 is out of range 1..65535"),
        ("10.0.0.5:syslog", "port \"syslog\" is not a number"),
        ("[::1]", "missing port"),
        ("[::1", "missing ']' after the IPv6 address"),
        ("[nope]:1", "\"nope\" is not an IPv6 address"),
        (
            "2001:db8::1:514",
            "an IPv6 address needs brackets, e.g. [::1]:514",
        ),
        (
            "bad host:514",
            "host \"bad host\" is not an IP address or host name",
        ),
        ("", "empty (expected host:port)"),
    ];
    for (a, why) in bad {
        assert_eq!(split_address(a), Err(why.to_owned()), "{a}");
    }
    assert_eq!(
        err("[[syslog]]\nname = \"x\"\n"),
        "syslog[0] \"x\": address: missing (host:port, e.g. \"127.0.0.1:514\")"
    );
}

#[test]
fn all_errors_are_collected() {
    let src = "[kafka]\ntopics = []\nmax_event_bytes = 0\n[forwarder]\nqueue_events = 0\n[admin]\nlisten = \"nope\"\n\
               [compliance]\nmode = \"some\"\n\
               [[syslog]]\nname = \"a b\"\naddress = \"h\"\nformat = \"rfc5425\"\n\
               [[syslog]]\nname = \"g\"\nkind = \"group\"\naddress = \"h:1\"\nusage = \"all\"\ndetect = [\"web\", \"nope\"]\n\
               [syslog.filter]\nmin_risk = 11\nserver_ips = [\"10.0.0.300/8\"]\n\
               [syslog.filter.fields]\nlogMethod = \"^(POST\"\n";
    let e = errs(src);
    let want = [
        "kafka: topics: must not be empty",
        "kafka: max_event_bytes: must be at least 1, got 0",
        "forwarder: queue_events: must be at least 1, got 0",
        "admin: listen \"nope\": not a socket address",
        "compliance: mode \"some\": expected \"registered\" or \"all\"",
        "syslog[0] \"a b\": name: must be 1 to 64 letters",
        "syslog[0] \"a b\": address \"h\": missing port",
        "syslog[0] \"a b\": format rfc5425 requires protocol tls",
        "syslog[1] \"g\": group: required when kind = \"group\"",
        "syslog[1] \"g\": detect: unknown category \"nope\" for detect logs (expected correlation, host, web",
        "syslog[1] \"g\": usage: must be \"none\" or absent for kind = \"group\"",
        "syslog[1] \"g\": filter.min_risk: 11 is out of range 0..10",
        "syslog[1] \"g\": filter.server_ips \"10.0.0.300/8\": not a CIDR network or IP address",
        "syslog[1] \"g\": filter.fields.logMethod \"^(POST\": invalid regular expression: unclosed group",
    ];
    assert_eq!(e.len(), want.len(), "{e:#?}");
    for (got, want) in e.iter().zip(want) {
        assert!(got.starts_with(want), "{got:?} should start with {want:?}");
    }
    // Display is every error, one per line.
    let shown = from_toml_str(src).unwrap_err().to_string();
    assert_eq!(shown.lines().count(), want.len());
}

#[test]
fn render_errors_are_prefixed_with_the_destination() {
    assert_eq!(
        err(&dest(
            "protocol = \"tcp\"\nnewline = \"ascii\"\nframing = \"lf\""
        )),
        "syslog[0] \"d\": newline ascii writes LF bytes; framing lf uses LF as the frame end"
    );
    assert_eq!(
        err(&dest(
            "protocol = \"tls\"\nformat = \"rfc5425\"\nframing = \"lf\""
        )),
        "syslog[0] \"d\": framing lf: format rfc5425 requires framing octet-counting"
    );
    assert_eq!(
        err(&dest("facility = 24")),
        "syslog[0] \"d\": facility: out of range 24"
    );
    assert!(err(&dest("protocol = \"udp\"\nframing = \"nul\""))
        .starts_with("syslog[0] \"d\": framing nul: framing applies to tcp and tls only"));
    assert!(err(&dest("sd_id = \"plura\"")).starts_with("syslog[0] \"d\": sd_id \"plura\""));
    // The forwarder's hostname and app_name reach the render settings.
    let c = ok(&format!(
        "[forwarder]\nhostname = \"fw-1\"\napp_name = \"Plura2\"\n{DEST}"
    ));
    assert_eq!(c.syslog[0].render.hostname.as_deref(), Some("fw-1"));
    assert_eq!(c.syslog[0].render.app_name, "Plura2");
    let c = ok(&format!("[forwarder]\nhostname = \"-\"\n{DEST}"));
    assert_eq!(c.syslog[0].render.hostname, None);
}

#[test]
fn unknown_keys_and_syntax_errors_name_table_key_and_line() {
    let e = err(&dest("protocl = \"udp\""));
    assert!(e.starts_with("syslog[0]: line 4, column 1: unknown field `protocl` (did you mean `protocol`?), expected one of `name`, `kind`"), "{e}");
    let e = err(&dest("colour = \"red\""));
    assert!(
        e.starts_with("syslog[0]: line 4, column 1: unknown field `colour`, expected one of"),
        "{e}"
    );
    let e = err(&format!(
        "{DEST}[[syslog]]\nname = \"e\"\naddress = \"h:1\"\n[syslog.filter]\nmin_rsik = 3\n"
    ));
    assert!(
        e.starts_with("syslog[1].filter: line 8, column 1: unknown field `min_rsik`"),
        "{e}"
    );
    let e = err(&format!("[kafka]\nbroker = \"x\"\n{DEST}"));
    assert!(
        e.starts_with("kafka: line 2, column 1: unknown field `broker`"),
        "{e}"
    );
    let e = err(&format!(
        "[kafka.properties]\n\"a\" = 1\n[forwarder]\nqueue = 1\n{DEST}"
    ));
    assert!(
        e.starts_with("forwarder: line 4, column 1: unknown field `queue`"),
        "{e}"
    );
    let e = err(&format!("verbose = true\n{DEST}"));
    assert!(
        e.starts_with("config: line 1, column 1: unknown field `verbose`"),
        "{e}"
    );
    let e = err(&format!(
        "[[ticket]]\nname = \"t\"\n[ticket.when]\nmin_risk = 1\nseverity = 2\n{DEST}"
    ));
    assert!(
        e.starts_with("ticket[0].when: line 5, column 1: unknown field `severity`"),
        "{e}"
    );
    let e = err(&format!("[admin]\nlisten\n{DEST}"));
    assert!(e.starts_with("admin: line 2, column 7:"), "{e}");
    // A value of the wrong kind names its key.
    let e = err(&dest("protocol = \"tcpx\""));
    assert!(
        e.starts_with("syslog[0]: line 4, column 12: protocol: unknown variant `tcpx`"),
        "{e}"
    );
    let e = err(&format!("[forwarder]\nqueue_events = \"many\"\n{DEST}"));
    assert!(
        e.starts_with("forwarder: line 2, column 16: queue_events: invalid type"),
        "{e}"
    );
    let e = err(&format!(
        "[forwarder]\nhostname = \"a\"\nhostname = \"b\"\n{DEST}"
    ));
    assert!(e.starts_with("forwarder: line 3"), "{e}");
}

#[test]
fn unknown_keys_of_every_table_are_collected_in_file_order() {
    let src = format!(
        "verbose = 1\n[kafak]\n[forwarder]\nqueue = 1\n{DEST}colour = 1\n[syslog.filtr]\n[[syslog]]\nname = \"e\"\naddress = \"h:1\"\nprotocol = 5\n[[ticket]]\nname = \"t\"\n[ticket.when]\nseverity = 1\n"
    );
    let e = errs(&src);
    let want = [
        "config: line 1, column 1: unknown field `verbose`",
        "config: line 2, column 2: unknown field `kafak`",
        "forwarder: line 4, column 1: unknown field `queue`",
        "syslog[0]: line 8, column 1: unknown field `colour`",
        "syslog[1]: line 13, column 12: protocol: wanted string or table",
        "ticket[0].when: line 17, column 1: unknown field `severity`",
    ];
    assert_eq!(e.len(), want.len(), "{e:#?}");
    for (got, want) in e.iter().zip(want) {
        assert!(got.starts_with(want), "{got:?} should start with {want:?}");
    }
    assert_eq!(
        err("syslog = 3\n"),
        "config: line 1, column 10: syslog: expected [[syslog]] tables, got integer"
    );
}

#[test]
fn names_are_unique_and_label_safe() {
    let e = errs(&format!("{DEST}{DEST}[[syslog]]\naddress = \"h:1\"\n[[syslog]]\nname = \"a/b\"\naddress = \"h:1\"\n"));
    assert_eq!(
        e,
        [
            "syslog[2]: name: missing (every table needs a unique name)",
            "syslog[3] \"a/b\": name: must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit (it is a metric label and a URL path segment)",
            "syslog[1] \"d\": name: already used by syslog[0]",
        ]
    );
    for bad in ["", "-x", "a b", "대표", &"x".repeat(65)] {
        let e = err(&format!("[[syslog]]\nname = {bad:?}\naddress = \"h:1\"\n"));
        assert!(e.contains("name: must be"), "{bad}: {e}");
    }
    ok("[[syslog]]\nname = \"SOC_siem-1.a\"\naddress = \"h:1\"\n");
}

#[test]
fn kind_and_group() {
    assert_eq!(
        err("[[syslog]]\nname = \"g\"\nkind = \"group\"\naddress = \"h:1\"\n"),
        "syslog[0] \"g\": group: required when kind = \"group\""
    );
    assert_eq!(
        err(&dest("group = \"acme\"")),
        "syslog[0] \"d\": group: only for kind = \"group\""
    );
    assert_eq!(
        err(&dest("kind = \"all\"")),
        "syslog[0] \"d\": kind \"all\": expected \"representative\" or \"group\""
    );
    let g = |usage: &str| {
        format!("[[syslog]]\nname = \"g\"\nkind = \"group\"\ngroup = \"acme\"\naddress = \"h:1\"\n{usage}\n")
    };
    for usage in ["", "usage = \"none\"", "usage = []"] {
        let c = ok(&g(usage));
        assert_eq!(c.syslog[0].select.usage, CategorySet::NONE);
        assert_eq!(c.syslog[0].kind, Kind::Group("acme".into()));
    }
    for usage in ["usage = \"all\"", "usage = [\"member\"]"] {
        assert_eq!(
            err(&g(usage)),
            "syslog[0] \"g\": usage: must be \"none\" or absent for kind = \"group\" (group servers never receive usage logs)"
        );
    }
}

#[test]
fn selections() {
    let c = ok(&dest(
        "detect = [\"web\", \"mitre_attack\"]\ndefense = \"none\"\nusage = [\"member\"]",
    ));
    let s = c.syslog[0].select;
    assert!(
        s.wants(LogType::Detect, Category::Web) && s.wants(LogType::Detect, Category::MitreAttack)
    );
    assert!(!s.wants(LogType::Detect, Category::Host));
    assert!(s.defense.is_empty());
    assert!(s.wants(LogType::Usage, Category::Member) && !s.wants(LogType::Usage, Category::Host));
    assert_eq!(
        s.describe(),
        "detect=web,mitre_attack defense=none usage=member"
    );
    assert_eq!(
        err(&dest("defense = [\"mitre_attack\"]")),
        "syslog[0] \"d\": defense: unknown category \"mitre_attack\" for defense logs (expected correlation, host, web, network, account_takeover, data_leak, waf, host_security)"
    );
    assert_eq!(
        err(&dest("detect = \"web\"")),
        "syslog[0] \"d\": detect: \"web\" is not \"all\" or \"none\"; categories go in a list, e.g. [\"web\"]"
    );
    assert_eq!(
        err(&dest("usage = 3")),
        "syslog[0] \"d\": usage: expected \"all\", \"none\" or a list of categories, got integer"
    );
    assert_eq!(
        err(&dest("usage = [3]")),
        "syslog[0] \"d\": usage: list items must be category names, got integer"
    );
    // Every pair can be selected alone.
    for (t, c) in crate::event::ALL_PAIRS {
        let keys: Vec<String> = LogType::ALL
            .iter()
            .map(|t2| match *t2 == t {
                true => format!("{} = [{:?}]", t2.name(), c.name()),
                false => format!("{} = \"none\"", t2.name()),
            })
            .collect();
        let cfg = ok(&dest(&keys.join("\n")));
        let s = cfg.syslog[0].select;
        for (t2, c2) in crate::event::ALL_PAIRS {
            assert_eq!(s.wants(t2, c2), (t, c) == (t2, c2));
        }
    }
}

#[test]
fn filter_keys() {
    let c = ok(&dest(
        "[syslog.filter]\nmin_risk = 3\nfilter_ids = [\"F-1021\", 77]\nfilter_names = [\"*인젝션*\"]\n\
         server_ips = [\"172.16.0.0/12\", \"10.0.0.5\", \"2001:db8::/32\"]\ndetect_ips = [\"203.0.113.0/24\"]\ngroups = [\"acme\"]\n\
         [syslog.filter.fields]\nlogMethod = \"^(POST|PUT)$\"\ncustomThing = \"x\"\n",
    ));
    let f = &c.syslog[0].filter;
    assert_eq!(f.min_risk, Some(3));
    assert_eq!(f.filter_ids, ["F-1021", "77"]);
    assert_eq!(f.server_ips[1].to_string(), "10.0.0.5/32");
    assert_eq!(f.fields.len(), 2);
    assert!(f
        .describe()
        .starts_with("min_risk=3 filter_ids=[F-1021, 77]"));
    assert!(c.warnings().iter().any(|w| w == "syslog[0] \"d\": filter.fields.customThing: not an event.md field; only events that carry it can pass"));
    let bad = [
        ("min_risk = -1", "filter.min_risk: -1 is out of range 0..10"),
        ("filter_ids = []", "filter.filter_ids: empty list; it would match nothing (remove the key to not filter on it)"),
        ("filter_ids = [true]", "filter.filter_ids: items must be non-empty strings, got true"),
        ("filter_names = [\"\"]", "filter.filter_names: empty pattern (filterName is never empty)"),
        ("detect_ips = [\"x\"]", "filter.detect_ips \"x\": not a CIDR network or IP address (e.g. \"172.16.0.0/12\", \"10.0.0.5\", \"2001:db8::/32\")"),
        ("server_ips = [\"10.0.0.0/33\"]", "filter.server_ips \"10.0.0.0/33\": not a CIDR network"),
        ("groups = [\"\"]", "filter.groups: empty group name"),
        ("[syslog.filter.fields]\nlogUri = \"[\"", "filter.fields.logUri \"[\": invalid regular expression: unclosed character class"),
    ];
    for (k, want) in bad {
        let e = err(&dest(&format!("[syslog.filter]\n{k}")));
        assert!(e.starts_with(&format!("syslog[0] \"d\": {want}")), "{e}");
        assert!(!e.contains('\n'));
    }
}

#[test]
fn tls_only_with_protocol_tls() {
    assert_eq!(
        err(&dest("[syslog.tls]\nverify = false")),
        "syslog[0] \"d\": tls: [syslog.tls] applies to protocol = \"tls\" only (protocol is \"tcp\")"
    );
    let c = ok("[[syslog]]\nname = \"t\"\nprotocol = \"tls\"\nformat = \"rfc5425\"\naddress = \"[::1]:6514\"\n");
    let t = c.syslog[0].tls.as_ref().unwrap();
    assert_eq!(
        (t.server_name.as_str(), t.verify, &t.ca_file),
        ("::1", true, &None)
    );
    let c = ok("[[syslog]]\nname = \"t\"\nprotocol = \"tls\"\naddress = \"siem:6514\"\n[syslog.tls]\nverify = false\nca_file = \"/nonexistent/ca.pem\"\n");
    assert!(c
        .warnings()
        .iter()
        .any(|w| w.contains("tls.verify = false")));
    // Files are checked by load / check_files, not by parsing.
    assert_eq!(
        c.check_files()[0],
        "syslog[0] \"t\": tls.ca_file \"/nonexistent/ca.pem\": no such file"
    );
    assert_eq!(
        err("[[syslog]]\nname = \"t\"\nprotocol = \"tls\"\naddress = \"siem:6514\"\n[syslog.tls]\nserver_name = \"a b\"\n"),
        "syslog[0] \"t\": tls.server_name \"a b\": not a DNS name or IP address"
    );
    assert_eq!(
        err("[[syslog]]\nname = \"t\"\nprotocol = \"tls\"\naddress = \"siem:6514\"\n[syslog.tls]\ncert_file = \"c.pem\"\n"),
        "syslog[0] \"t\": tls.cert_file: needs tls.key_file too (mutual TLS)"
    );
}

#[test]
fn tls_min_version_is_1_2_or_1_3() {
    let tls = |extra: &str| {
        format!("[[syslog]]\nname = \"t\"\nprotocol = \"tls\"\naddress = \"siem:6514\"\n[syslog.tls]\n{extra}")
    };
    let v = |extra: &str| ok(&tls(extra)).syslog[0].tls.as_ref().unwrap().min_version;
    assert_eq!(v(""), crate::config::TlsVersion::V1_2);
    assert_eq!(
        v("min_version = \"1.2\"\n"),
        crate::config::TlsVersion::V1_2
    );
    assert_eq!(
        v("min_version = \"1.3\"\n"),
        crate::config::TlsVersion::V1_3
    );
    assert_eq!(
        err(&tls("min_version = \"1.1\"\n")),
        "syslog[0] \"t\": tls.min_version \"1.1\": expected \"1.2\" or \"1.3\""
    );
}

#[test]
fn load_checks_named_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.toml");
    std::fs::write(
        &p,
        "[compliance]\nmapping_file = \"/nonexistent/m.toml\"\n[[syslog]]\nname = \"t\"\nprotocol = \"tls\"\naddress = \"siem:6514\"\n[syslog.tls]\ncert_file = \"/nonexistent/c\"\nkey_file = \"/nonexistent/k\"\n[[ticket]]\nname = \"m\"\nsystem = \"mantisbt\"\nurl = \"https://m\"\nproject = 1\nauth_key_file = \"/nonexistent/key\"\n",
    )
    .unwrap();
    let e = load(&p).unwrap_err().0;
    assert_eq!(
        e,
        [
            "syslog[0] \"t\": tls.cert_file \"/nonexistent/c\": no such file",
            "syslog[0] \"t\": tls.key_file \"/nonexistent/k\": no such file",
            "ticket[0] \"m\": auth_key_file \"/nonexistent/key\": no such file",
            "compliance: mapping_file \"/nonexistent/m.toml\": no such file",
        ]
    );
    // Reload re-reads the same file; a fixed file replaces the config.
    let good = dir.path().join("g.toml");
    std::fs::write(
        &good,
        format!(
            "[compliance]\nmapping_file = {:?}\n{DEST}",
            p.display().to_string()
        ),
    )
    .unwrap();
    let c = load(&good).unwrap();
    std::fs::write(
        &good,
        format!(
            "[compliance]\nmapping_file = {:?}\n{DEST}[[syslog]]\nname = \"x\"\naddress = \"h\"\n",
            p.display().to_string()
        ),
    )
    .unwrap();
    assert_eq!(
        c.reload().unwrap_err().0,
        ["syslog[1] \"x\": address \"h\": missing port"]
    );
    assert!(ok(DEST).reload().is_err());
    let missing = dir.path().join("nope.toml");
    assert!(load(&missing)
        .unwrap_err()
        .to_string()
        .contains("nope.toml: cannot read"));
}

#[test]
fn kafka_checks() {
    let c = ok(&format!("[kafka]\nbrokers = \"embedded\"\n[kafka.topic_log_types]\n\"plura.detect\" = \"detect\"\n\"other\" = \"usage\"\n[kafka.properties]\n\"fetch.min.bytes\" = 1\n\"enable.idempotence\" = true\n\"security.protocol\" = \"ssl\"\n\"enable.auto.commit\" = \"false\"\n{DEST}"));
    assert!(c.kafka.is_embedded());
    for b in ["SSL://k1:9093,k2", "[::1]:9092, [::1], k3.example"] {
        ok(&format!("[kafka]\nbrokers = {b:?}\n{DEST}"));
    }
    assert_eq!(c.kafka.properties["fetch.min.bytes"], "1");
    assert_eq!(c.kafka.properties["enable.idempotence"], "true");
    let w = c.warnings();
    assert!(w
        .iter()
        .any(|w| w.starts_with("kafka: brokers = \"embedded\"")));
    assert!(w
        .iter()
        .any(|w| w
            == "kafka.topic_log_types: \"other\" is not in kafka.topics; the binding is unused"));
    assert!(w.iter().any(|w| w
        == "kafka.properties: \"enable.auto.commit\" is ignored; at-least-once delivery sets it"));
    let bad = [
        ("brokers = \"\"", "kafka: brokers: must not be empty (host:port list, or \"embedded\")"),
        ("brokers = \"a:9092,b:0\"", "kafka: brokers: \"b:0\": port 0 is out of range 1..65535"),
        ("group_id = \" \"", "kafka: group_id: must not be empty"),
        ("topics = [\"a b\"]", "kafka: topics: \"a b\": not a valid Kafka topic name (1 to 249 of letters, digits, '.', '_', '-')"),
        ("topics = [\"a\", \"a\"]", "kafka: topics: \"a\": listed twice"),
        ("dead_letter_topic = \"plura.detect\"", "kafka: dead_letter_topic: \"plura.detect\" is also a consumed topic; the forwarder would read its own output"),
        ("retry_topic = \"\"", "kafka: retry_topic: \"\": not a valid Kafka topic name (1 to 249 of letters, digits, '.', '_', '-')"),
        ("[kafka.topic_log_types]\nt = \"detection\"", "kafka.topic_log_types: \"t\": \"detection\" is not a log type (detect, defense, usage)"),
        ("[kafka.properties]\n\"group.id\" = \"g\"", "kafka.properties: \"group.id\": set kafka.group_id instead"),
        ("[kafka.properties]\n\"a\" = [1]", "kafka.properties: \"a\": expected a string, number or boolean, got array"),
    ];
    for (k, want) in bad {
        assert_eq!(err(&format!("[kafka]\n{k}\n{DEST}")), want);
    }
}

#[test]
fn forwarder_admin_compliance_checks() {
    let bad = [
        ("[forwarder]\nbatch_max_events = 0", "forwarder: batch_max_events: must be at least 1, got 0"),
        ("[forwarder]\nbatch_max_bytes = -5", "forwarder: batch_max_bytes: must be at least 1, got -5"),
        ("[forwarder]\ncommit_interval_ms = 0", "forwarder: commit_interval_ms: must be at least 1, got 0"),
        ("[forwarder]\npark_after_ms = 0", "forwarder: park_after_ms: must be at least 1, got 0"),
        ("[forwarder]\napp_name = \"\"", "forwarder: app_name: must not be empty"),
        ("[forwarder]\nhostname = \"a b\"", "forwarder: hostname \"a b\": must not hold spaces or control characters"),
        ("[admin]\nlisten = \"localhost:9464\"", "admin: listen \"localhost:9464\": not a socket address (IP:port, e.g. \"127.0.0.1:9464\" or \"[::1]:9464\")"),
        ("[admin]\ntoken_env = \"A-B\"", "admin: token_env \"A-B\": not an environment variable name (letters, digits, '_')"),
        ("[compliance]\nmapping_file = \"\"", "compliance: mapping_file: must not be empty"),
    ];
    for (k, want) in bad {
        assert_eq!(err(&format!("{k}\n{DEST}")), want);
    }
    let c = ok(&format!("[forwarder]\nbatch_linger_ms = 0\nshutdown_grace_s = 0\n[admin]\nlisten = \"[::1]:9\"\ntoken_env = \"\"\n[compliance]\nmode = \"all\"\n{DEST}"));
    assert_eq!(c.admin.listen_addr().port(), 9);
    assert_eq!(c.compliance.mode, ComplianceMode::All);
    assert!(c
        .warnings()
        .contains(&"admin: token_env is empty: /api is off".to_owned()));
    assert_eq!(
        err(""),
        "config: no [[syslog]] or [[ticket]] table: there is nothing to forward to"
    );
}

#[test]
fn ticket_checks() {
    let t = |body: &str| format!("[[ticket]]\nname = \"t\"\n{body}\n");
    let jira = "system = \"jira\"\nversion = \"cloud\"\nurl = \"https://x\"\nproject = \"SEC\"\nauth_key_env = \"K\"\nuser = \"u@x\"";
    ok(&t(jira));
    let bad = [
        ("", vec!["ticket[0] \"t\": system: missing (\"jira\", \"mantisbt\" or \"redmine\")", "ticket[0] \"t\": url: missing", "ticket[0] \"t\": project: missing", "ticket[0] \"t\": auth_key_env: missing (or auth_key_file); secrets never sit in the config file"]),
        ("system = \"gitlab\"\nurl = \"https://x\"\nproject = \"p\"\nauth_key_env = \"K\"", vec!["ticket[0] \"t\": system \"gitlab\": expected \"jira\", \"mantisbt\" or \"redmine\""]),
        ("system = \"jira\"\nurl = \"https://x\"\nproject = \"p\"\nauth_key_env = \"K\"", vec!["ticket[0] \"t\": version: required for jira (\"cloud\" or \"server\")"]),
        ("system = \"jira\"\nversion = \"9\"\nurl = \"https://x\"\nproject = \"p\"\nauth_key_env = \"K\"", vec!["ticket[0] \"t\": version \"9\": jira is \"cloud\" or \"server\" (Server and Data Center)"]),
        ("system = \"redmine\"\nversion = 3\nurl = \"https://x\"\nproject = \"p\"\nauth_key_env = \"K\"", vec!["ticket[0] \"t\": version \"3\": redmine is \"4\" or \"5\""]),
        ("system = \"mantisbt\"\nversion = \"1\"\nurl = \"https://x\"\nproject = \"p\"\nauth_key_env = \"K\"", vec!["ticket[0] \"t\": version \"1\": mantisbt is \"2\""]),
        ("system = \"jira\"\nversion = \"cloud\"\nurl = \"https://x\"\nproject = \"p\"\nauth_key_env = \"K\"", vec!["ticket[0] \"t\": user: required for jira cloud (the account e-mail that owns the API token)"]),
        ("system = \"jira\"\nversion = \"server\"\nurl = \"https://x\"\nproject = \"p\"\nauth_key_env = \"K\"\nuser = \"u\"", vec!["ticket[0] \"t\": user: only for jira cloud (basic auth with an API token); this system authenticates with the key alone"]),
        ("system = \"redmine\"\nurl = \"ftp://x\"\nproject = \"p\"\nauth_key_env = \"K\"", vec!["ticket[0] \"t\": url \"ftp://x\": must start with http:// or https://"]),
        ("system = \"redmine\"\nurl = \"https://\"\nproject = \"p\"\nauth_key_env = \"K\"", vec!["ticket[0] \"t\": url \"https://\": missing host"]),
        ("system = \"redmine\"\nurl = \"https://u:p@x\"\nproject = \"p\"\nauth_key_env = \"K\"", vec!["ticket[0] \"t\": url \"https://u:p@x\": must not hold credentials (use auth_key_env / auth_key_file)"]),
        ("system = \"redmine\"\nurl = \"https://x:0\"\nproject = \"p\"\nauth_key_env = \"K\"", vec!["ticket[0] \"t\": url \"https://x:0\": port 0 is out of range 1..65535"]),
        ("system = \"redmine\"\nurl = \"https://x\"\nproject = \"\"\nauth_key_env = \"K\"", vec!["ticket[0] \"t\": project: expected a non-empty string or id, got \"\""]),
        ("system = \"redmine\"\nurl = \"https://x\"\nproject = \"p\"\nauth_key_env = \"K\"\nauth_key_file = \"f\"", vec!["ticket[0] \"t\": auth_key_env, auth_key_file: set one of them, not both"]),
        ("system = \"redmine\"\nurl = \"https://x\"\nproject = \"p\"\nauth_key_env = \"my key\"", vec!["ticket[0] \"t\": auth_key_env \"my key\": not an environment variable name (letters, digits, '_')"]),
        ("system = \"redmine\"\nurl = \"https://x\"\nproject = \"p\"\nauth_key_env = \"K\"\nrate_per_minute = 0\nburst = 0", vec!["ticket[0] \"t\": rate_per_minute: must be at least 1, got 0", "ticket[0] \"t\": burst: must be at least 1, got 0"]),
        ("system = \"redmine\"\nurl = \"https://x\"\nproject = \"p\"\nauth_key_env = \"K\"\ndedup_key = [\"filterID\", \"nope\"]", vec!["ticket[0] \"t\": dedup_key: \"filterID\" is not an event field (event.md); did you mean \"filterId\"?", "ticket[0] \"t\": dedup_key: \"nope\" is not an event field (event.md)"]),
        ("system = \"redmine\"\nurl = \"https://x\"\nproject = \"p\"\nauth_key_env = \"K\"\ndedup_key = []", vec!["ticket[0] \"t\": dedup_key: empty; name event fields (e.g. [\"filterId\", \"serverIp\"]) or set dedup_window_s = 0"]),
        ("system = \"redmine\"\nurl = \"https://x\"\nproject = \"p\"\nauth_key_env = \"K\"\n[ticket.when]\ndefense = [\"mitre_attack\"]\nmin_risk = 12", vec!["ticket[0] \"t\": when.defense: unknown category \"mitre_attack\" for defense logs (expected correlation, host, web, network, account_takeover, data_leak, waf, host_security)", "ticket[0] \"t\": when.min_risk: 12 is out of range 0..10"]),
    ];
    for (body, want) in bad {
        assert_eq!(errs(&t(body)), want, "{body}");
    }
    ok(&t("system = \"redmine\"\nurl = \"https://x\"\nproject = \"p\"\nauth_key_env = \"K\"\ndedup_key = []\ndedup_window_s = 0"));
    let dup = format!("{}{}", t(jira), t(jira));
    assert_eq!(
        errs(&dup),
        ["ticket[1] \"t\": name: already used by ticket[0]"]
    );
    let c = ok(&t("system = \"mantisbt\"\nurl = \"http://mantis.example\"\nproject = 3\nauth_key_env = \"PLURA_TEST_UNSET_VAR\""));
    let w = c.warnings();
    assert!(
        w.contains(&"ticket[0] \"t\": url is http://: the auth key travels unencrypted".to_owned())
    );
    assert!(w.contains(&"ticket[0] \"t\": auth_key_env: PLURA_TEST_UNSET_VAR is not set; tickets will fail until it is".to_owned()));
}

#[test]
fn secret_sources_read() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k");
    std::fs::write(&p, "s3cret\n").unwrap();
    assert_eq!(SecretSource::File(p.clone()).read().unwrap(), "s3cret");
    std::fs::write(&p, "\n").unwrap();
    assert!(SecretSource::File(p)
        .read()
        .unwrap_err()
        .ends_with("is empty"));
    assert_eq!(
        SecretSource::Env("PLURA_TEST_UNSET_VAR".into())
            .read()
            .unwrap_err(),
        "environment variable PLURA_TEST_UNSET_VAR is not set"
    );
}

#[test]
fn summary_lists_everything() {
    let mut c = ok(DEFAULT_TOML);
    c.path = Some("config/forwarder.toml".into());
    let s = c.summary();
    for want in [
        "config: config/forwarder.toml",
        "kafka: brokers 127.0.0.1:9092 group plura-forwarder topics [plura.detect, plura.defense, plura.usage]",
        "destinations: 2",
        "  soc-siem: representative, tcp rfc5424 to 127.0.0.1:5514 (framing octet-counting, max 8192 bytes",
        "    select: detect=all defense=all usage=all",
        "    filter: none",
        "  acme-cef: group acme, udp cef to 127.0.0.1:5515 (framing datagram, max 1024 bytes",
        "    select: detect=all defense=web,waf usage=none",
        "tickets: 0",
    ] {
        assert!(s.contains(want), "summary lacks {want:?}:\n{s}");
    }
    let c = ok("[[ticket]]\nname = \"j\"\nsystem = \"jira\"\nversion = \"server\"\nurl = \"https://jira\"\nproject = \"SEC\"\nauth_key_file = \"/k\"\n[ticket.when]\nmin_risk = 7\n");
    let s = c.summary();
    assert!(s.contains("  j: jira server at https://jira project SEC issue type Task (auth file /k), 30/min burst 10, dedup 3600 s on [filterId, serverIp]"), "{s}");
    assert!(
        s.contains("    when: detect=all defense=all usage=all filter: min_risk=7"),
        "{s}"
    );
    assert!(s.contains("warnings:"), "{s}");
}

mod robustness {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Arbitrary text never panics the loader (spans, char boundaries, table lookup).
        #[test]
        fn arbitrary_text_never_panics(src in "\\PC{0,200}") {
            let _ = from_toml_str(&src);
        }

        /// The documented example with one line removed or one character inserted either loads
        /// or gives errors that each name a table.
        #[test]
        fn damaged_example_gives_named_errors(line in 0usize..200, at in 0usize..9000, c in "[\\[\\]=\"a-z0-9 .#\\n]") {
            let lines: Vec<&str> = DEFAULT_TOML.lines().collect();
            let cut = line % lines.len();
            let removed: String = lines.iter().enumerate().filter(|(i, _)| *i != cut).map(|(_, l)| format!("{l}\n")).collect();
            let mut inserted = DEFAULT_TOML.to_owned();
            let mut at = at % inserted.len();
            while !inserted.is_char_boundary(at) { at -= 1; }
            inserted.insert_str(at, &c);
            for src in [removed, inserted] {
                if let Err(e) = from_toml_str(&src) {
                    prop_assert!(!e.0.is_empty());
                    for m in &e.0 {
                        let head = m.split(':').next().unwrap_or("");
                        let named = ["config", "kafka", "forwarder", "admin", "compliance", "syslog", "ticket"]
                            .iter()
                            .any(|t| head.starts_with(t));
                        prop_assert!(named, "error without a table: {}", m);
                        prop_assert!(!m.contains('\n'), "multi-line error: {}", m);
                    }
                }
            }
        }
    }
}
