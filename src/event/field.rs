//! The event fields the forwarder knows, by their event.md (camelCase) names.

macro_rules! fields {
    ($($variant:ident => $name:literal,)*) => {
        /// A known event field. Unknown fields are kept separately on the [`super::Event`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[allow(missing_docs)]
        pub enum Field { $($variant,)* }

        impl Field {
            /// Every known field, in declaration order.
            pub const ALL: &'static [Field] = &[$(Field::$variant,)*];
            /// Number of known fields.
            pub const COUNT: usize = Field::ALL.len();

            /// The event.md name.
            pub const fn name(self) -> &'static str {
                match self { $(Field::$variant => $name,)* }
            }

            /// Looks a field up by its event.md name (case-sensitive).
            #[inline]
            pub fn from_name(name: &str) -> Option<Field> {
                match name { $($name => Some(Field::$variant),)* _ => None }
            }
        }
    };
}

fields! {
    LogType => "logType",
    Category => "category",
    GroupId => "groupId",
    EventId => "eventId",
    RegisterDate => "registerDate",
    ServiceName => "serviceName",
    EventName => "eventName",
    ServerIp => "serverIp",
    ServerName => "serverName",
    FilterId => "filterId",
    FilterName => "filterName",
    FilterCategoryName => "filterCategoryName",
    FilterRiskLevel => "filterRiskLevel",
    DetectIp => "detectIp",
    DetectDescription => "detectDescription",
    DetectRatio => "detectRatio",
    DetectPath => "detectPath",
    LogConfigPath => "logConfigPath",
    LogOrigin => "logOrigin",
    LogUri => "logUri",
    LogQuery => "logQuery",
    LogReferer => "logReferer",
    LogRequestBody => "logRequestBody",
    LogHost => "logHost",
    LogMethod => "logMethod",
    LogCookie => "logCookie",
    LogUserAgent => "logUserAgent",
    LogStatus => "logStatus",
    LogRequestContentType => "logRequestContentType",
    LogXForwardedFor => "logXForwardedFor",
    LogBlocked => "logBlocked",
    LogRequestContentLength => "logRequestContentLength",
    LogResponseContentLength => "logResponseContentLength",
    MitreTechniqueId => "mitreTechniqueId",
    MitreTechniqueSubId => "mitreTechniqueSubId",
    MitrePlatformName => "mitrePlatformName",
    MitreTacticsId => "mitreTacticsId",
    MitreTacticsName => "mitreTacticsName",
    MitreTechniqueName => "mitreTechniqueName",
    EventType => "eventType",
    UserActionCategoryGroupName => "userActionCategoryGroupName",
    UserActionCategoryName => "userActionCategoryName",
    UserName => "userName",
}

#[cfg(test)]
mod tests {
    use super::Field;

    #[test]
    fn names_round_trip() {
        for &f in Field::ALL {
            assert_eq!(Field::from_name(f.name()), Some(f));
        }
        assert_eq!(Field::COUNT, 43);
        assert_eq!(Field::from_name("nope"), None);
    }
}
