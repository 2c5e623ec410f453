//! The 12 message layouts of formats.md §2.2 and the map from all 24 (logType, category)
//! pairs onto them; pairs without a vendor template use the nearest layout (D14).

use crate::event::{Category, LogType};

/// One PLURA message layout (formats.md §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    Correlation,
    Host,
    Web,
    Network,
    AccountTakeover,
    DataLeak,
    Mitre,
    Waf,
    Application,
    Defense,
    DefenseWaf,
    Usage,
}

impl Layout {
    pub(crate) fn of(log_type: LogType, category: Category) -> Layout {
        use Category as C;
        match log_type {
            LogType::Detect => match category {
                C::Correlation => Layout::Correlation,
                C::Host | C::HostSecurity => Layout::Host,
                C::Web => Layout::Web,
                C::Network => Layout::Network,
                C::AccountTakeover => Layout::AccountTakeover,
                C::DataLeak => Layout::DataLeak,
                C::MitreAttack => Layout::Mitre,
                C::Waf => Layout::Waf,
                C::Application => Layout::Application,
                // Not detect categories (decode refuses them); nearest layout by name.
                C::Member | C::Filter | C::Support | C::Other => Layout::Usage,
                C::Defense => Layout::Defense,
            },
            LogType::Defense => match category {
                C::Waf | C::Web => Layout::DefenseWaf,
                _ => Layout::Defense,
            },
            LogType::Usage => Layout::Usage,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ALL_PAIRS;

    #[test]
    fn every_pair_has_the_spec_layout() {
        let want = [
            Layout::Correlation,
            Layout::Host,
            Layout::Web,
            Layout::Network,
            Layout::AccountTakeover,
            Layout::DataLeak,
            Layout::Mitre,
            Layout::Waf,
            Layout::Application,
            Layout::Host,
            Layout::Defense,
            Layout::Defense,
            Layout::DefenseWaf,
            Layout::Defense,
            Layout::Defense,
            Layout::Defense,
            Layout::DefenseWaf,
            Layout::Defense,
            Layout::Usage,
            Layout::Usage,
            Layout::Usage,
            Layout::Usage,
            Layout::Usage,
            Layout::Usage,
        ];
        for ((t, c), w) in ALL_PAIRS.iter().zip(want) {
            assert_eq!(Layout::of(*t, *c), w, "{t:?}/{c:?}");
        }
    }
}
