//! Classification: log type and category, with the vendor's display names.

/// The three PLURA log types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LogType {
    /// 탐지: a detection.
    Detect,
    /// 방어: a block.
    Defense,
    /// 사용: an operator's action (audit).
    Usage,
}

impl LogType {
    /// All log types, in the vendor's order.
    pub const ALL: [LogType; 3] = [LogType::Detect, LogType::Defense, LogType::Usage];

    /// The config / event name (`detect`, `defense`, `usage`).
    pub const fn name(self) -> &'static str {
        match self {
            LogType::Detect => "detect",
            LogType::Defense => "defense",
            LogType::Usage => "usage",
        }
    }

    /// Parses a config / event name.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "detect" => Some(LogType::Detect),
            "defense" => Some(LogType::Defense),
            "usage" => Some(LogType::Usage),
            _ => None,
        }
    }

    /// eventName when the event has none.
    pub const fn default_event_name(self) -> &'static str {
        match self {
            LogType::Detect => "탐지",
            LogType::Defense => "방어",
            LogType::Usage => "사용로그",
        }
    }

    /// The categories valid for this log type (event.md table order).
    pub const fn categories(self) -> &'static [Category] {
        use Category::*;
        match self {
            LogType::Detect => &[
                Correlation,
                Host,
                Web,
                Network,
                AccountTakeover,
                DataLeak,
                MitreAttack,
                Waf,
                Application,
                HostSecurity,
            ],
            LogType::Defense => &[
                Correlation,
                Host,
                Web,
                Network,
                AccountTakeover,
                DataLeak,
                Waf,
                HostSecurity,
            ],
            LogType::Usage => &[Member, Filter, Host, Defense, Support, Other],
        }
    }
}

/// Every category name of event.md (some are valid for several log types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)]
pub enum Category {
    Correlation,
    Host,
    Web,
    Network,
    AccountTakeover,
    DataLeak,
    MitreAttack,
    Waf,
    Application,
    HostSecurity,
    Member,
    Filter,
    Defense,
    Support,
    Other,
}

impl Category {
    /// Number of distinct category names.
    pub const COUNT: usize = 15;

    /// The config / event name.
    pub const fn name(self) -> &'static str {
        use Category::*;
        match self {
            Correlation => "correlation",
            Host => "host",
            Web => "web",
            Network => "network",
            AccountTakeover => "account_takeover",
            DataLeak => "data_leak",
            MitreAttack => "mitre_attack",
            Waf => "waf",
            Application => "application",
            HostSecurity => "host_security",
            Member => "member",
            Filter => "filter",
            Defense => "defense",
            Support => "support",
            Other => "other",
        }
    }

    /// Parses a name, without checking it against a log type.
    pub fn from_name(s: &str) -> Option<Self> {
        use Category::*;
        Some(match s {
            "correlation" => Correlation,
            "host" => Host,
            "web" => Web,
            "network" => Network,
            "account_takeover" => AccountTakeover,
            "data_leak" => DataLeak,
            "mitre_attack" => MitreAttack,
            "waf" => Waf,
            "application" => Application,
            "host_security" => HostSecurity,
            "member" => Member,
            "filter" => Filter,
            "defense" => Defense,
            "support" => Support,
            "other" => Other,
            _ => return None,
        })
    }

    /// Parses a name valid for `log_type`.
    pub fn for_log_type(log_type: LogType, s: &str) -> Option<Self> {
        Self::from_name(s).filter(|c| log_type.categories().contains(c))
    }

    /// The vendor's Korean display name: the default `serviceName`.
    pub const fn display_name(self, log_type: LogType) -> &'static str {
        use Category::*;
        match (self, log_type) {
            (Host, LogType::Usage) => "호스트",
            (Correlation, _) => "상관분석",
            (Host, _) => "호스트",
            (Web, _) => "웹",
            (Network, _) => "네트워크",
            (AccountTakeover, _) => "계정탈취",
            (DataLeak, _) => "데이터 유출",
            (MitreAttack, _) => "마이터",
            (Waf, _) => "웹방화벽",
            (Application, _) => "응용프로그램",
            (HostSecurity, _) => "호스트 보안",
            (Member, _) => "멤버",
            (Filter, _) => "필터",
            (Defense, _) => "방어",
            (Support, _) => "고객지원",
            (Other, _) => "기타",
        }
    }

    /// A bit for category sets (`1 << index`).
    pub const fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// All 24 valid (log type, category) pairs.
pub const ALL_PAIRS: [(LogType, Category); 24] = {
    use Category as C;
    use LogType as T;
    [
        (T::Detect, C::Correlation),
        (T::Detect, C::Host),
        (T::Detect, C::Web),
        (T::Detect, C::Network),
        (T::Detect, C::AccountTakeover),
        (T::Detect, C::DataLeak),
        (T::Detect, C::MitreAttack),
        (T::Detect, C::Waf),
        (T::Detect, C::Application),
        (T::Detect, C::HostSecurity),
        (T::Defense, C::Correlation),
        (T::Defense, C::Host),
        (T::Defense, C::Web),
        (T::Defense, C::Network),
        (T::Defense, C::AccountTakeover),
        (T::Defense, C::DataLeak),
        (T::Defense, C::Waf),
        (T::Defense, C::HostSecurity),
        (T::Usage, C::Member),
        (T::Usage, C::Filter),
        (T::Usage, C::Host),
        (T::Usage, C::Defense),
        (T::Usage, C::Support),
        (T::Usage, C::Other),
    ]
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_match_the_per_type_tables() {
        let n: usize = LogType::ALL.iter().map(|t| t.categories().len()).sum();
        assert_eq!(n, ALL_PAIRS.len());
        for (t, c) in ALL_PAIRS {
            assert_eq!(Category::for_log_type(t, c.name()), Some(c));
        }
        assert_eq!(
            Category::for_log_type(LogType::Defense, "mitre_attack"),
            None
        );
        assert_eq!(Category::for_log_type(LogType::Usage, "web"), None);
    }
}
