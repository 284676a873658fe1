//! MANSCDP XML bodies (GB/T 28181-2016, appendix A): what a device notifies, in the
//! platform's charset.

use std::fmt::Write as _;

use crate::Channel;

/// The charset of the bodies: GB2312 (the standard's, and what WVP decodes by default) or
/// UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    Gb2312,
    Utf8,
}

impl Charset {
    fn label(self) -> &'static str {
        match self {
            Self::Gb2312 => "GB2312",
            Self::Utf8 => "UTF-8",
        }
    }

    /// `xml` in this charset. GB2312 is written as GBK, its superset; a character outside
    /// it becomes a numeric character reference, which XML reads back as the same character.
    pub fn encode(self, xml: &str) -> Vec<u8> {
        match self {
            Self::Utf8 => xml.as_bytes().to_vec(),
            Self::Gb2312 => encoding_rs::GBK.encode(xml).0.into_owned(),
        }
    }

    /// Decodes a body in this charset (for the test platform and received queries).
    pub fn decode(self, bytes: &[u8]) -> String {
        match self {
            Self::Utf8 => String::from_utf8_lossy(bytes).into_owned(),
            Self::Gb2312 => encoding_rs::GBK.decode(bytes).0.into_owned(),
        }
    }
}

/// An alarm as GB/T 28181 carries it (A.2.5, `CmdType` Alarm).
#[derive(Debug, Clone, PartialEq)]
pub struct Alarm {
    /// The alert's id: for logs and for telling repeats apart; not sent.
    pub alert_id: String,
    /// The channel that raised it: the camera's 20-digit id, or the device's.
    pub device_id: String,
    /// 1 (first level, most urgent) to 4.
    pub priority: u8,
    /// 2 device alarm, 5 video alarm, ...
    pub method: u8,
    /// `YYYY-MM-DDTHH:MM:SS`, the platform's local time.
    pub time: String,
    pub description: String,
    /// `Info/AlarmType`; none: the method's default type.
    pub alarm_type: Option<u8>,
    /// `Info/AlarmTypeParam/EventType` (1 entering, 2 leaving, for intrusion).
    pub event_type: Option<u8>,
    /// (longitude, latitude) in degrees.
    pub location: Option<(f64, f64)>,
}

/// Text for an XML element: the five special characters escaped, control characters
/// dropped (XML 1.0 cannot carry them).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

fn prolog(charset: Charset) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"{}\"?>\r\n",
        charset.label()
    )
}

/// `Keepalive`: the device is alive and well.
pub fn keepalive(charset: Charset, sn: u32, device: &str) -> Vec<u8> {
    let xml = format!(
        "{}<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{}</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n",
        prolog(charset),
        escape(device)
    );
    charset.encode(&xml)
}

/// `Alarm`, with `AlarmType` inside `Info`, where WVP reads it.
pub fn alarm(charset: Charset, sn: u32, alarm: &Alarm) -> Vec<u8> {
    let mut xml = prolog(charset);
    let _ = write!(
        xml,
        "<Notify>\r\n<CmdType>Alarm</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{}</DeviceID>\r\n<AlarmPriority>{}</AlarmPriority>\r\n<AlarmMethod>{}</AlarmMethod>\r\n<AlarmTime>{}</AlarmTime>\r\n<AlarmDescription>{}</AlarmDescription>\r\n",
        escape(&alarm.device_id),
        alarm.priority,
        alarm.method,
        escape(&alarm.time),
        escape(&alarm.description),
    );
    if let Some((lon, lat)) = alarm.location {
        let _ = write!(
            xml,
            "<Longitude>{lon:.6}</Longitude>\r\n<Latitude>{lat:.6}</Latitude>\r\n"
        );
    }
    if alarm.alarm_type.is_some() || alarm.event_type.is_some() {
        xml.push_str("<Info>\r\n");
        if let Some(t) = alarm.alarm_type {
            let _ = write!(xml, "<AlarmType>{t}</AlarmType>\r\n");
        }
        if let Some(e) = alarm.event_type {
            let _ = write!(
                xml,
                "<AlarmTypeParam>\r\n<EventType>{e}</EventType>\r\n</AlarmTypeParam>\r\n"
            );
        }
        xml.push_str("</Info>\r\n");
    }
    xml.push_str("</Notify>\r\n");
    charset.encode(&xml)
}

/// The Catalog answer: every channel, [`crate::CATALOG_PAGE`] to a message, each saying how many
/// there are in all (`SumNum`) and how many it holds (`DeviceList Num`).
pub(crate) fn catalog(
    charset: Charset,
    sn: u64,
    device: &str,
    channels: &[Channel],
) -> Vec<Vec<u8>> {
    let pages: Vec<&[Channel]> = if channels.is_empty() {
        vec![&[]]
    } else {
        channels.chunks(crate::CATALOG_PAGE).collect()
    };
    pages
        .into_iter()
        .map(|page| {
            let mut xml = format!(
                "{}<Response>\r\n<CmdType>Catalog</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{}</DeviceID>\r\n<SumNum>{}</SumNum>\r\n<DeviceList Num=\"{}\">\r\n",
                prolog(charset),
                escape(device),
                channels.len(),
                page.len()
            );
            for c in page {
                xml.push_str(&format!(
                    "<Item>\r\n<DeviceID>{}</DeviceID>\r\n<Name>{}</Name>\r\n<Manufacturer>sharpeyes</Manufacturer>\r\n<Model>sharpeyes</Model>\r\n<Owner>sharpeyes</Owner>\r\n<CivilCode>{}</CivilCode>\r\n<Address></Address>\r\n<Parental>0</Parental>\r\n<ParentID>{}</ParentID>\r\n<SafetyWay>0</SafetyWay>\r\n<RegisterWay>1</RegisterWay>\r\n<Secrecy>0</Secrecy>\r\n<Status>{}</Status>\r\n",
                    escape(&c.id),
                    escape(&c.name),
                    escape(&c.civil_code),
                    escape(device),
                    if c.online { "ON" } else { "OFF" }
                ));
                if let Some((lon, lat)) = c.location {
                    xml.push_str(&format!(
                        "<Longitude>{lon:.6}</Longitude>\r\n<Latitude>{lat:.6}</Latitude>\r\n"
                    ));
                }
                xml.push_str("</Item>\r\n");
            }
            xml.push_str("</DeviceList>\r\n</Response>\r\n");
            charset.encode(&xml)
        })
        .collect()
}

pub(crate) fn device_info(charset: Charset, sn: u64, device: &str, channels: usize) -> Vec<u8> {
    let xml = format!(
        "{}<Response>\r\n<CmdType>DeviceInfo</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{}</DeviceID>\r\n<Result>OK</Result>\r\n<DeviceName>sharpeyes</DeviceName>\r\n<Manufacturer>sharpeyes</Manufacturer>\r\n<Model>sharpeyes</Model>\r\n<Firmware>{}</Firmware>\r\n<Channel>{channels}</Channel>\r\n</Response>\r\n",
        prolog(charset),
        escape(device),
        env!("CARGO_PKG_VERSION")
    );
    charset.encode(&xml)
}

pub(crate) fn device_status(charset: Charset, sn: u64, device: &str, online: bool) -> Vec<u8> {
    let xml = format!(
        "{}<Response>\r\n<CmdType>DeviceStatus</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{}</DeviceID>\r\n<Result>OK</Result>\r\n<Online>{}</Online>\r\n<Status>OK</Status>\r\n</Response>\r\n",
        prolog(charset),
        escape(device),
        if online { "ONLINE" } else { "OFFLINE" }
    );
    charset.encode(&xml)
}

/// The text of the first `<tag>` element of `xml`, unescaped; `None` when absent. Enough for
/// the flat MANSCDP queries a platform sends (`CmdType`, `SN`, `DeviceID`).
pub fn element(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&close)?;
    Some(
        xml[start..start + len]
            .trim()
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fire() -> Alarm {
        Alarm {
            alert_id: "01J".into(),
            device_id: "32132200001320000001".into(),
            priority: 1,
            method: 5,
            time: "2026-12-03T15:04:05".into(),
            description: "fire: 东元超市门口 <沭阳县/第七网格> & more".into(),
            alarm_type: Some(11),
            event_type: None,
            location: Some((118.771, 34.129)),
        }
    }

    #[test]
    fn an_alarm_in_gb2312_reads_back_with_its_chinese_and_escapes() {
        let body = alarm(Charset::Gb2312, 9, &fire());
        assert!(std::str::from_utf8(&body).is_err(), "GB2312, not UTF-8");
        let xml = Charset::Gb2312.decode(&body);
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"GB2312\"?>"));
        assert_eq!(element(&xml, "SN").as_deref(), Some("9"));
        assert_eq!(
            element(&xml, "AlarmDescription").as_deref(),
            Some("fire: 东元超市门口 <沭阳县/第七网格> & more")
        );
        assert_eq!(
            element(&xml, "AlarmTime").as_deref(),
            Some("2026-12-03T15:04:05")
        );
        let info = element(&xml, "Info").unwrap();
        assert_eq!(element(&info, "AlarmType").as_deref(), Some("11"));
        assert_eq!(element(&xml, "Longitude").as_deref(), Some("118.771000"));
    }

    #[test]
    fn an_intrusion_carries_its_event_type_and_a_keepalive_its_status() {
        let mut a = fire();
        a.alarm_type = Some(6);
        a.event_type = Some(1);
        a.location = None;
        let xml = Charset::Utf8.decode(&alarm(Charset::Utf8, 1, &a));
        assert!(xml.contains("<AlarmTypeParam>\r\n<EventType>1</EventType>"));
        assert!(!xml.contains("Longitude"));
        let k = Charset::Utf8.decode(&keepalive(Charset::Utf8, 3, "32132200001180000001"));
        assert_eq!(element(&k, "CmdType").as_deref(), Some("Keepalive"));
        assert_eq!(element(&k, "Status").as_deref(), Some("OK"));
    }

    #[test]
    fn control_characters_and_markup_cannot_break_out_of_an_element() {
        let text = escape("a</AlarmDescription><AlarmType>1</AlarmType>\u{0}\u{1b}b");
        assert!(!text.contains('<') && !text.contains('\u{0}') && !text.contains('\u{1b}'));
    }
}
