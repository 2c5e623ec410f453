//! Realistic sample events of every (log type, category), for `demo`, tests and the load
//! harness. Deterministic for a given sequence number.

use serde_json::{json, Map, Value};

use crate::event::{Category, LogType, ALL_PAIRS};

const GROUPS: [&str; 3] = ["acme", "globex", "initech"];
const SERVERS: [(&str, &str); 4] = [
    ("172.16.12.40", "Harry-LP-L"),
    ("172.16.12.41", "Harry-SP-L"),
    ("172.16.12.57", "CentOS7"),
    ("172.16.12.37", "IIS-01"),
];
const ATTACKERS: [&str; 4] = [
    "172.16.20.192",
    "203.0.113.7",
    "198.51.100.23",
    "2001:db8::7",
];

/// The group a sample event with this sequence number belongs to.
pub fn group_of(seq: u64) -> &'static str {
    GROUPS[(seq % GROUPS.len() as u64) as usize]
}

/// One sample event as a JSON object. `seq` varies the values; `pad` adds that many bytes of
/// raw log so that sizes can be controlled (the load harness uses 300–1500 B events).
pub fn event(log_type: LogType, category: Category, seq: u64, pad: usize) -> Value {
    let (server_ip, server_name) = SERVERS[(seq % 4) as usize];
    let attacker = ATTACKERS[((seq / 3) % 4) as usize];
    let minute = (seq / 60) % 60;
    let second = seq % 60;
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_owned(), v);
    };
    put("logType", json!(log_type.name()));
    put("category", json!(category.name()));
    put("groupId", json!(group_of(seq)));
    put("eventId", json!(format!("e-{seq:08}")));
    put(
        "registerDate",
        json!(format!("2022-06-16T12:{minute:02}:{second:02}+09:00")),
    );
    put("serviceName", json!(category.display_name(log_type)));
    put("eventName", json!(log_type.default_event_name()));
    match log_type {
        LogType::Usage => {
            let (group, name) = match category {
                Category::Member => ("멤버", "로그인"),
                Category::Filter => ("필터", "필터 수정"),
                Category::Host => ("호스트", "에이전트 등록"),
                Category::Defense => ("방어", "차단 해제"),
                Category::Support => ("고객지원", "문의 등록"),
                _ => ("기타", "설정 변경"),
            };
            put("userActionCategoryGroupName", json!(group));
            put("userActionCategoryName", json!(name));
            put(
                "userName",
                json!(["MIKE", "HARRY", "ETHAN"][(seq % 3) as usize]),
            );
            put("detectDescription", json!(name));
        }
        _ => {
            put("serverIp", json!(server_ip));
            put("serverName", json!(server_name));
            put("detectIp", json!(attacker));
            put("filterId", json!(format!("F-{:04}", 1000 + seq % 50)));
            put("filterRiskLevel", json!((seq % 11) as i64));
            let (cat, name) = match category {
                Category::Web | Category::Waf | Category::DataLeak => {
                    ("SQL 인젝션", "컬럼 데이터 탈취")
                }
                Category::AccountTakeover => ("계정 탈취", "무차별 대입 로그인"),
                Category::MitreAttack => ("마이터 어택", "SSH"),
                Category::Correlation => ("상관분석", "Mike-생성삭제"),
                Category::Network => ("etc.", "JunOS - harry"),
                Category::Application => ("원본", "QA-ceelog"),
                _ => ("로그온/로그오프", "로그인 성공-Harry-Syslog"),
            };
            put("filterCategoryName", json!(cat));
            put("filterName", json!(name));
            match category {
                Category::Web | Category::Waf | Category::DataLeak => {
                    put("detectDescription", json!("/wordpress/index.php"));
                    put("logUri", json!("/wordpress/index.php"));
                    put("logQuery", json!(format!("id=1%20AND%20{seq}={seq}")));
                    put(
                        "logMethod",
                        json!(if seq % 2 == 0 { "GET" } else { "POST" }),
                    );
                    put("logHost", json!(server_ip));
                    put("logStatus", json!("200"));
                    put(
                        "logUserAgent",
                        json!("Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/102.0.0.0"),
                    );
                    put(
                        "logBlocked",
                        json!(if log_type == LogType::Defense {
                            "1"
                        } else {
                            "0"
                        }),
                    );
                    put("logRequestContentLength", json!("0"));
                    put(
                        "logResponseContentLength",
                        json!(format!("{}", 75 + seq % 1000)),
                    );
                }
                Category::AccountTakeover => put("detectPath", json!("/wp-login.php")),
                Category::Correlation => put("detectRatio", json!(50 + seq % 50)),
                Category::Application => put(
                    "logConfigPath",
                    json!("/var/log/plura/ceelog-127.0.0.1.log"),
                ),
                Category::MitreAttack => {
                    put("mitreTechniqueId", json!("T1021"));
                    put("mitreTechniqueSubId", json!("004"));
                    put("mitrePlatformName", json!("macOS,Linux"));
                    put("mitreTacticsId", json!("TA0008"));
                    put("mitreTacticsName", json!("측면 이동"));
                    put("mitreTechniqueName", json!("SSH"));
                }
                _ => {}
            }
        }
    }
    let mut origin = format!(
        "{{\"Host\":\"{server_ip}\",\"Remote-addr\":\"{attacker}\",\"Request\":\"GET /wordpress/?id={seq} HTTP/1.1\"}}"
    );
    while origin.len() < pad {
        origin.push_str(" 원본 로그 패딩 padding");
    }
    put("logOrigin", json!(origin));
    Value::Object(m)
}

/// The (log type, category) pair of event `seq`: all 24 in turn.
fn pair(seq: u64) -> (LogType, Category) {
    ALL_PAIRS[(seq % ALL_PAIRS.len() as u64) as usize]
}

/// `n` events cycling through all 24 (log type, category) pairs.
pub fn events(n: usize, pad: usize) -> impl Iterator<Item = (u64, Value)> {
    (0..n as u64).map(move |seq| {
        let (t, c) = pair(seq);
        (seq, event(t, c, seq, pad))
    })
}

/// Event `seq` of the load harness (`bench`), as JSON: it cycles through all pairs and spreads
/// raw-log sizes deterministically: 422 to 1,640 bytes, 945 on average. The criterion
/// benches decode the same events.
pub fn harness_event(seq: u64) -> Vec<u8> {
    let (t, c) = pair(seq);
    let pad = harness_pad(seq);
    // `Value`'s `Display` is its compact JSON, the same bytes as `serde_json::to_vec`, and
    // cannot fail: a `Value`'s map keys are always strings.
    event(t, c, seq, pad).to_string().into_bytes()
}

/// The raw-log padding of harness event `seq`: 0 to 899 bytes, spread deterministically.
fn harness_pad(seq: u64) -> usize {
    ((seq * 7919) % 900) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{decode, DecodeOptions};

    #[test]
    fn harness_events_are_compact_json_of_about_400_to_1700_bytes() {
        let mut sizes = Vec::new();
        for seq in 0..2400 {
            let bytes = harness_event(seq);
            let (t, c) = pair(seq);
            assert_eq!(
                bytes,
                serde_json::to_vec(&event(t, c, seq, harness_pad(seq))).unwrap()
            );
            sizes.push(bytes.len());
        }
        let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        let mean = sizes.iter().sum::<usize>() / sizes.len();
        assert!(*min >= 400 && *max <= 1700, "sizes {min}..{max}");
        assert!((900..1000).contains(&mean), "mean {mean}");
    }

    #[test]
    fn every_sample_decodes_to_its_pair() {
        for (seq, v) in events(48, 0) {
            let bytes = serde_json::to_vec(&v).unwrap();
            let ev = decode(&bytes, None, &DecodeOptions::default()).unwrap();
            let (t, c) = ALL_PAIRS[(seq % 24) as usize];
            assert_eq!((ev.log_type, ev.category), (t, c));
        }
    }
}
