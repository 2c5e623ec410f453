//! RFC 5424 STRUCTURED-DATA (formats.md §1.3, §2.3): one `[sd_id name="value" ...]` element
//! holding the event fields present, in the layout's order, named as in event.md.

use bytes::{BufMut, BytesMut};

use super::escape::{put, SD};
use super::layout::Layout;
use crate::event::{Event, Field};

use Field as F;

/// Fields after `logType, category, eventName, serviceName`, per layout.
fn params(layout: Layout) -> &'static [Field] {
    match layout {
        Layout::Correlation => &[
            F::ServerIp,
            F::ServerName,
            F::FilterName,
            F::DetectRatio,
            F::RegisterDate,
            F::FilterCategoryName,
            F::DetectIp,
            F::FilterRiskLevel,
        ],
        Layout::Host | Layout::Network => &[
            F::ServerIp,
            F::ServerName,
            F::FilterName,
            F::RegisterDate,
            F::FilterCategoryName,
            F::DetectIp,
            F::FilterRiskLevel,
        ],
        Layout::Web | Layout::Waf => &[
            F::ServerIp,
            F::ServerName,
            F::FilterCategoryName,
            F::FilterName,
            F::DetectDescription,
            F::RegisterDate,
            F::LogQuery,
            F::LogUri,
            F::LogReferer,
            F::LogRequestBody,
            F::DetectIp,
            F::LogHost,
            F::LogMethod,
            F::LogCookie,
            F::LogUserAgent,
            F::LogStatus,
            F::LogRequestContentType,
            F::LogXForwardedFor,
            F::LogBlocked,
            F::LogRequestContentLength,
            F::LogResponseContentLength,
            F::FilterRiskLevel,
        ],
        Layout::DataLeak => &[
            F::ServerIp,
            F::LogUri,
            F::FilterCategoryName,
            F::FilterName,
            F::DetectIp,
            F::RegisterDate,
            F::LogQuery,
            F::LogReferer,
            F::LogRequestBody,
            F::ServerName,
            F::LogHost,
            F::LogMethod,
            F::LogCookie,
            F::LogUserAgent,
            F::LogStatus,
            F::LogRequestContentType,
            F::LogXForwardedFor,
            F::LogBlocked,
            F::LogRequestContentLength,
            F::LogResponseContentLength,
            F::FilterRiskLevel,
        ],
        Layout::AccountTakeover => &[
            F::DetectPath,
            F::FilterCategoryName,
            F::FilterName,
            F::DetectIp,
            F::RegisterDate,
            F::ServerIp,
            F::ServerName,
            F::FilterRiskLevel,
        ],
        Layout::Mitre => &[
            F::MitreTechniqueId,
            F::MitreTechniqueSubId,
            F::MitrePlatformName,
            F::MitreTacticsName,
            F::MitreTechniqueName,
            F::RegisterDate,
            F::FilterCategoryName,
            F::DetectIp,
            F::ServerIp,
            F::ServerName,
            F::FilterRiskLevel,
        ],
        Layout::Application => &[
            F::ServerIp,
            F::ServerName,
            F::FilterName,
            F::LogConfigPath,
            F::RegisterDate,
            F::FilterCategoryName,
            F::DetectIp,
            F::FilterRiskLevel,
        ],
        Layout::Defense => &[
            F::ServerIp,
            F::ServerName,
            F::FilterName,
            F::DetectIp,
            F::RegisterDate,
            F::FilterCategoryName,
            F::FilterRiskLevel,
        ],
        Layout::DefenseWaf => &[
            F::ServerIp,
            F::ServerName,
            F::FilterCategoryName,
            F::FilterName,
            F::DetectIp,
            F::RegisterDate,
            F::FilterRiskLevel,
        ],
        Layout::Usage => &[
            F::EventType,
            F::UserActionCategoryGroupName,
            F::UserActionCategoryName,
            F::UserName,
            F::DetectDescription,
            F::RegisterDate,
        ],
    }
}

fn param(dst: &mut BytesMut, name: &str, value: &str) {
    dst.put_u8(b' ');
    dst.put_slice(name.as_bytes());
    dst.put_slice(b"=\"");
    put::<SD>(dst, value);
    dst.put_u8(b'"');
}

/// Appends the SD-ELEMENT. `logType` and `category` are the classification (always known,
/// even for a topic-bound log type); serviceName and eventName take their event.md defaults.
pub(crate) fn put_sd(
    dst: &mut BytesMut,
    sd_id: &str,
    ev: &Event<'_>,
    layout: Layout,
    raw_log: bool,
) {
    dst.put_u8(b'[');
    dst.put_slice(sd_id.as_bytes());
    param(dst, "logType", ev.log_type.name());
    param(dst, "category", ev.category.name());
    param(dst, "eventName", ev.event_name());
    if layout != Layout::Usage {
        param(dst, "serviceName", ev.service_name());
    }
    for &f in params(layout) {
        if let Some(v) = ev.text(f) {
            param(dst, f.name(), v);
        }
    }
    if raw_log && layout != Layout::Usage {
        if let Some(v) = ev.text(F::LogOrigin) {
            param(dst, "logOrigin", v);
        }
    }
    dst.put_u8(b']');
}
