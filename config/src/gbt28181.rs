//! GB/T 28181 device IDs: the 20-digit codes Sharp Eyes and unit cameras are registered under.
//!
//! Layout (GB/T 28181-2016, appendix D), digits counted from 1:
//!
//! | digits | meaning                                                        |
//! |--------|----------------------------------------------------------------|
//! | 1-2    | province (GB/T 2260)                                           |
//! | 3-4    | city                                                           |
//! | 5-6    | county: 1-6 are the administrative region code                |
//! | 7-8    | grass-roots unit (police station, street office)               |
//! | 9-10   | industry: 00-03 public security, 04-07 traffic, 40-55 units... |
//! | 11-13  | device type: 131 camera, 132 IP camera, 118 NVR, 134 alarm in  |
//! | 14     | network: 0-4 surveillance private network, 7 Internet...       |
//! | 15-20  | serial number                                                  |

use std::fmt;

/// A decoded 20-digit GB/T 28181 device ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceId(String);

/// Why a string is not a GB/T 28181 device ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotADeviceId(pub String);

impl fmt::Display for NotADeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotADeviceId {}

/// What kind of equipment a device type code names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceCategory {
    /// A camera (131, 132): what `[[cameras]]` entries usually are.
    Camera,
    /// Recorders, encoders and servers with video channels (111-130).
    VideoSource,
    /// Alarm inputs and other peripherals (133-199).
    Peripheral,
    /// Platform servers, groups and users (200-499).
    Platform,
    Unknown,
}

impl DeviceId {
    /// Decodes `s`; anything but exactly 20 ASCII digits is refused.
    pub fn parse(s: &str) -> Result<Self, NotADeviceId> {
        if s.len() != 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(NotADeviceId(format!(
                "`{s}` is not a GB/T 28181 device ID (20 digits)"
            )));
        }
        let id = Self(s.to_owned());
        if id.province_name().is_none() {
            return Err(NotADeviceId(format!(
                "`{s}` starts with {}, which is not a province code (GB/T 2260)",
                &s[..2]
            )));
        }
        Ok(id)
    }

    /// An id from its parts: `region` (8 digits: the county's code and a grass-roots unit),
    /// `industry` (digits 9-10), `device_type` (11-13, e.g. 132 for an IP camera), `network`
    /// (14) and `serial` (15-20, below 1,000,000).
    pub fn compose(
        region: &str,
        industry: u8,
        device_type: u16,
        network: u8,
        serial: u32,
    ) -> Result<Self, NotADeviceId> {
        if industry > 99 || device_type > 999 || network > 9 || serial > 999_999 {
            return Err(NotADeviceId(format!(
                "industry {industry}, type {device_type}, network {network} or serial {serial} does not fit its digits"
            )));
        }
        Self::parse(&format!(
            "{region}{industry:02}{device_type:03}{network}{serial:06}"
        ))
    }

    /// Whether `s` has the shape of a device ID (20 digits), whether or not it decodes.
    pub fn looks_like(s: &str) -> bool {
        s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Digits 1-8: the region code down to the grass-roots unit.
    pub fn region_code(&self) -> &str {
        &self.0[..8]
    }

    /// Digits 1-6: the county-level administrative division code (GB/T 2260).
    pub fn county_code(&self) -> &str {
        &self.0[..6]
    }

    /// Digits 1-4 padded to six: the city's division code, e.g. `321300`.
    pub fn city_code(&self) -> String {
        format!("{}00", &self.0[..4])
    }

    /// Digits 1-2 padded to six: the province's division code, e.g. `320000`.
    pub fn province_code(&self) -> String {
        format!("{}0000", &self.0[..2])
    }

    pub fn province_name(&self) -> Option<&'static str> {
        PROVINCES
            .iter()
            .find(|(code, _)| *code == &self.0[..2])
            .map(|(_, name)| *name)
    }

    /// Digits 9-10 and their meaning.
    pub fn industry(&self) -> (&str, &'static str) {
        let code = &self.0[8..10];
        let n: u8 = code.parse().unwrap_or(99);
        let name = match n {
            0 => "public security: roads and public areas",
            1 => "public security: communities",
            2 => "public security: internal",
            3 => "public security: other",
            4 => "traffic: roads",
            5 => "traffic: checkpoints",
            6 => "traffic: internal",
            7 => "traffic: other",
            8 => "city management",
            9 => "health and environment",
            10 => "inspection and customs",
            11 => "education",
            12..=39 => "government (reserved)",
            40 => "agriculture, forestry, fishery",
            41 => "mining",
            42 => "manufacturing",
            43 => "metallurgy",
            44 => "electric power",
            45 => "gas",
            46 => "construction",
            47 => "logistics",
            48 => "postal",
            49 => "information",
            50 => "hotels and catering",
            51 => "finance",
            52 => "real estate",
            53 => "business services",
            54 => "water",
            55 => "entertainment",
            56..=79 => "enterprise (reserved)",
            80..=89 => "residents' own",
            _ => "other",
        };
        (code, name)
    }

    /// Whether the industry code says an enterprise or resident connected the device
    /// (codes 40-99): social-unit cameras. Schools and hospitals use government codes.
    pub fn is_social_unit(&self) -> bool {
        matches!(self.0[8..10].parse::<u8>(), Ok(40..=99))
    }

    /// Whether the industry code is public-security access (00-03): Sharp Eyes cameras.
    pub fn is_public_security(&self) -> bool {
        matches!(self.0[8..10].parse::<u8>(), Ok(0..=3))
    }

    /// Digits 11-13 and their meaning.
    pub fn device_type(&self) -> (&str, &'static str) {
        let code = &self.0[10..13];
        let name = match code {
            "111" => "DVR",
            "112" => "video server",
            "113" => "encoder",
            "114" => "decoder",
            "115" => "video switching matrix",
            "116" => "audio switching matrix",
            "117" => "alarm controller",
            "118" => "NVR",
            "130" => "hybrid DVR",
            "131" => "camera",
            "132" => "IP camera",
            "133" => "display",
            "134" => "alarm input",
            "135" => "alarm output",
            "136" => "voice input",
            "137" => "voice output",
            "138" => "mobile transmission device",
            "139" => "other peripheral",
            "200" => "central signalling server",
            "201" => "web application server",
            "202" => "media distribution server",
            "203" => "proxy server",
            "204" => "security server",
            "205" => "alarm server",
            "206" => "database server",
            "207" => "GIS server",
            "208" => "management server",
            "209" => "access gateway",
            "210" => "media storage server",
            "211" => "signalling security routing gateway",
            "215" => "business group",
            "216" => "virtual organisation",
            "300" => "centre user",
            "400" => "terminal user",
            _ => "unknown type",
        };
        (code, name)
    }

    pub fn category(&self) -> DeviceCategory {
        match self.0[10..13].parse::<u16>().unwrap_or(0) {
            131 | 132 => DeviceCategory::Camera,
            111..=130 => DeviceCategory::VideoSource,
            133..=199 => DeviceCategory::Peripheral,
            200..=499 => DeviceCategory::Platform,
            _ => DeviceCategory::Unknown,
        }
    }

    /// Digit 14 and its meaning.
    pub fn network(&self) -> (&str, &'static str) {
        let code = &self.0[13..14];
        let name = match code {
            "0" | "1" | "2" | "3" | "4" => "surveillance private network",
            "5" => "public security network",
            "6" => "government network",
            "7" => "Internet",
            "8" => "social resources access network",
            _ => "reserved",
        };
        (code, name)
    }

    /// Digits 15-20.
    pub fn serial(&self) -> &str {
        &self.0[14..]
    }
}

impl fmt::Display for DeviceId {
    /// One line for people: `32132200001320000001: 江苏省, county 321322, IP camera (132), ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (tc, tn) = self.device_type();
        let (ic, iname) = self.industry();
        let (nc, nn) = self.network();
        write!(
            f,
            "{}: {} {}, county {}, unit {}, {tn} ({tc}), industry {iname} ({ic}), network {nn} ({nc}), serial {}",
            self.0,
            self.province_name().unwrap_or("?"),
            self.province_code(),
            self.county_code(),
            &self.0[6..8],
            self.serial()
        )
    }
}

/// Province-level division codes of GB/T 2260.
const PROVINCES: &[(&str, &str)] = &[
    ("11", "北京市"),
    ("12", "天津市"),
    ("13", "河北省"),
    ("14", "山西省"),
    ("15", "内蒙古自治区"),
    ("21", "辽宁省"),
    ("22", "吉林省"),
    ("23", "黑龙江省"),
    ("31", "上海市"),
    ("32", "江苏省"),
    ("33", "浙江省"),
    ("34", "安徽省"),
    ("35", "福建省"),
    ("36", "江西省"),
    ("37", "山东省"),
    ("41", "河南省"),
    ("42", "湖北省"),
    ("43", "湖南省"),
    ("44", "广东省"),
    ("45", "广西壮族自治区"),
    ("46", "海南省"),
    ("50", "重庆市"),
    ("51", "四川省"),
    ("52", "贵州省"),
    ("53", "云南省"),
    ("54", "西藏自治区"),
    ("61", "陕西省"),
    ("62", "甘肃省"),
    ("63", "青海省"),
    ("64", "宁夏回族自治区"),
    ("65", "新疆维吾尔自治区"),
    ("71", "台湾省"),
    ("81", "香港特别行政区"),
    ("82", "澳门特别行政区"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_composed_from_its_parts_decodes_to_them() {
        let id = DeviceId::compose("32132200", 53, 132, 0, 42).unwrap();
        assert_eq!(id.as_str(), "32132200531320000042");
        assert_eq!(id.county_code(), "321322");
        assert!(id.is_social_unit());
        assert_eq!(id.category(), DeviceCategory::Camera);
        assert!(DeviceId::compose("32132200", 53, 132, 0, 1_000_000).is_err());
        assert!(
            DeviceId::compose("3213220", 53, 132, 0, 1).is_err(),
            "7-digit region"
        );
        assert!(
            DeviceId::compose("99132200", 53, 132, 0, 1).is_err(),
            "no province 99"
        );
    }

    #[test]
    fn decodes_a_shuyang_ip_camera() {
        let id = DeviceId::parse("32132200001320000001").unwrap();
        assert_eq!(id.province_name(), Some("江苏省"));
        assert_eq!(id.province_code(), "320000");
        assert_eq!(id.city_code(), "321300");
        assert_eq!(id.county_code(), "321322");
        assert_eq!(id.region_code(), "32132200");
        assert_eq!(
            id.industry(),
            ("00", "public security: roads and public areas")
        );
        assert_eq!(id.device_type(), ("132", "IP camera"));
        assert_eq!(id.category(), DeviceCategory::Camera);
        assert_eq!(id.network(), ("0", "surveillance private network"));
        assert_eq!(id.serial(), "000001");
        assert!(!id.is_social_unit());
        assert!(id.is_public_security());
    }

    #[test]
    fn decodes_unit_devices_and_other_types() {
        // A bank's NVR on the social resources access network.
        let id = DeviceId::parse("44030501511188000042").unwrap();
        assert_eq!(id.province_name(), Some("广东省"));
        assert_eq!(id.industry().1, "finance");
        assert_eq!(id.device_type(), ("118", "NVR"));
        assert_eq!(id.category(), DeviceCategory::VideoSource);
        assert_eq!(id.network().1, "social resources access network");
        assert!(id.is_social_unit());

        let alarm = DeviceId::parse("32132200001340000001").unwrap();
        assert_eq!(alarm.device_type().1, "alarm input");
        assert_eq!(alarm.category(), DeviceCategory::Peripheral);
    }

    #[test]
    fn refuses_what_is_not_an_id() {
        assert!(DeviceId::parse("3213220000132000000").is_err()); // 19 digits
        assert!(DeviceId::parse("3213220000132000000A").is_err());
        let err = DeviceId::parse("99132200001320000001").unwrap_err();
        assert!(err.0.contains("not a province code"), "{err}");
        assert!(DeviceId::looks_like("99132200001320000001"));
        assert!(!DeviceId::looks_like("cam-1"));
    }

    #[test]
    fn describes_itself_in_one_line() {
        let s = DeviceId::parse("32132200001320000001").unwrap().to_string();
        assert!(
            s.contains("江苏省") && s.contains("county 321322") && s.contains("IP camera (132)"),
            "{s}"
        );
    }
}
