//! The one error of this crate: why a camera (or a probe) is not streaming.
//!
//! An [`Error`] is said in our own words: its [`ErrorKind`], the limit that was hit, the
//! camera and its URL without credentials. A camera URL can point anywhere, so whatever the
//! peer answered (retina's framing errors quote up to 128 bytes of it, GStreamer quotes the
//! server) is kept apart in [`Error::detail`], for the debug log only: it never reaches the
//! API, a status topic or a metric label.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What went wrong, coarse enough to be a metric label ([`ErrorKind::label`]) and to decide
/// between reconnecting and giving up ([`ErrorKind::is_permanent`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// 401: wrong user or password.
    Unauthorized,
    /// 403: this user may not view the stream.
    Forbidden,
    /// 404: no stream at this path.
    NotFound,
    /// Another RTSP error status.
    Status(u16),
    /// The stream has no video track.
    NoVideo,
    /// The video is not H.264 or H.265: the encodings the camera offered, sanitised.
    Unsupported(Vec<String>),
    /// The camera refused the TCP connection.
    Refused,
    /// The host could not be reached (name, route, network).
    Unreachable,
    /// DESCRIBE, SETUP and PLAY did not finish within this limit.
    ConnectTimeout(Duration),
    /// No video frame for this long.
    Stall(Duration),
    /// The server ended the stream.
    ServerEnded,
    /// The connection broke mid-stream (a read or write failed).
    ConnectionLost,
    /// The RTSP exchange did not make sense (framing, an unexpected answer).
    Protocol,
    /// A malformed, partial, missing or reordered RTP packet: the access unit it belonged to
    /// is lost, and what refers to it waits for the next keyframe. The session goes on.
    Corrupt,
    /// No decoder for the stream could be started.
    Decode,
    /// No keyframe arrived within this long (a probe).
    NoKeyframe(Duration),
    /// The URL names a secret that is not available (the field and variable, never a value).
    Secret(String),
    /// Something on this machine (GStreamer, a file) is missing or broken.
    Local,
    /// sharpeyes itself failed while reading the camera (a panic: a bug, whatever the
    /// camera sent); the connection was dropped and is made again.
    Internal,
}

impl ErrorKind {
    /// A short, fixed label: the `reason` of `sharpeyes_camera_reconnects_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Unauthorized | Self::Forbidden => "auth",
            Self::NotFound => "not_found",
            Self::Status(_) => "status",
            Self::NoVideo => "no_video",
            Self::Unsupported(_) => "unsupported",
            Self::Refused => "refused",
            Self::Unreachable => "unreachable",
            Self::ConnectTimeout(_) => "timeout",
            Self::Stall(_) => "stall",
            Self::ServerEnded => "ended",
            Self::ConnectionLost => "lost",
            Self::Protocol => "protocol",
            Self::Corrupt => "corrupt",
            Self::Decode => "decode",
            Self::NoKeyframe(_) => "no_keyframe",
            Self::Secret(_) => "secret",
            Self::Local => "local",
            Self::Internal => "internal",
        }
    }

    /// Retrying will not help until someone changes the camera or its configuration.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::Unauthorized
                | Self::Forbidden
                | Self::NotFound
                | Self::NoVideo
                | Self::Unsupported(_)
                | Self::Decode
                | Self::Secret(_)
                | Self::Local
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unauthorized => f.write_str("401 Unauthorized: wrong user or password"),
            Self::Forbidden => f.write_str("403 Forbidden: this user may not view the stream"),
            Self::NotFound => f.write_str("404 Not Found: no stream at this path"),
            Self::Status(code) => write!(f, "the camera answered RTSP status {code}"),
            Self::NoVideo => f.write_str("no video track in the stream"),
            Self::Unsupported(codecs) => write!(
                f,
                "unsupported video codec {}: sharpeyes decodes H.264 and H.265",
                codecs.join(", ")
            ),
            Self::Refused => f.write_str("connection refused"),
            Self::Unreachable => f.write_str("the host cannot be reached"),
            Self::ConnectTimeout(d) => write!(f, "no answer within {} (connect timeout)", secs(*d)),
            Self::Stall(d) => write!(f, "no frame for {} (stall)", secs(*d)),
            Self::ServerEnded => f.write_str("the server ended the stream"),
            Self::ConnectionLost => f.write_str("the connection was lost"),
            Self::Protocol => f.write_str("the camera's RTSP did not make sense"),
            Self::Corrupt => f.write_str("malformed or missing RTP packets"),
            Self::Decode => f.write_str("the video could not be decoded"),
            Self::NoKeyframe(d) => write!(f, "no keyframe within {}", secs(*d)),
            Self::Secret(why) => f.write_str(why),
            Self::Local => f.write_str("a local part (GStreamer, a file) failed"),
            Self::Internal => {
                f.write_str("sharpeyes failed while reading the camera (a bug): reconnecting")
            }
        }
    }
}

/// What a caught panic said (its `&str` or `String` payload), for the log line that reports
/// it: every task that catches panics tells them the same way.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// See the module docs. Cheap to clone; compares by what it says, so a camera state that
/// repeats is not published twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    camera: Option<Arc<str>>,
    /// Without user-info or query.
    url: Option<String>,
    /// The underlying error's own text, which may quote the peer: the debug log only.
    detail: Option<String>,
}

impl Error {
    pub fn new(kind: ErrorKind) -> Self {
        Self {
            kind,
            camera: None,
            url: None,
            detail: None,
        }
    }

    /// With the underlying error's text (debug log only).
    pub(crate) fn with_detail(kind: ErrorKind, detail: impl fmt::Display) -> Self {
        Self {
            detail: Some(detail.to_string()),
            ..Self::new(kind)
        }
    }

    /// Names the camera and its URL (shown without credentials or query).
    pub(crate) fn at(mut self, camera: &Arc<str>, url: &url::Url) -> Self {
        self.camera = Some(camera.clone());
        self.url = Some(shown_url(url));
        self
    }

    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    pub fn camera(&self) -> Option<&str> {
        self.camera.as_deref()
    }

    /// What the peer or a library said, for a debug log line; never publish it.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// Classifies a retina error. retina's error is opaque apart from its status code, so the
    /// rest is told by the fixed words retina starts each message with (its own, not the
    /// peer's); the full text goes to `detail`.
    pub(crate) fn from_retina(e: &retina::Error) -> Self {
        let kind = match e.status_code() {
            Some(401) => ErrorKind::Unauthorized,
            Some(403) => ErrorKind::Forbidden,
            Some(404) => ErrorKind::NotFound,
            Some(code) => ErrorKind::Status(code),
            None => {
                let text = e.to_string();
                if let Some(io) = text.strip_prefix("Unable to connect to RTSP server: ") {
                    if io.contains("refused") {
                        ErrorKind::Refused
                    } else {
                        ErrorKind::Unreachable
                    }
                } else if text.starts_with("Error reading from RTSP peer")
                    || text.starts_with("Error writing to RTSP peer")
                    || text.starts_with("Error receiving UDP packet")
                    || text == "Timeout"
                {
                    ErrorKind::ConnectionLost
                } else if text.contains("\nstream: ") && text.contains("\npkt: ") {
                    // One packet's trouble (retina's packet errors name the stream and the
                    // packet): the depacketizer drops what it had and carries on.
                    ErrorKind::Corrupt
                } else {
                    ErrorKind::Protocol
                }
            }
        };
        Self::with_detail(kind, e)
    }
}

/// `rtsp://host:port/path`: the URL without user-info, query or fragment.
fn shown_url(url: &url::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

impl fmt::Display for Error {
    /// `camera 3213...0001 (rtsp://10.1.2.3:554/ch1): connection refused`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.camera, &self.url) {
            (Some(c), Some(u)) => write!(f, "camera {c} ({u}): {}", self.kind),
            (Some(c), None) => write!(f, "camera {c}: {}", self.kind),
            (None, Some(u)) => write!(f, "{u}: {}", self.kind),
            (None, None) => write!(f, "{}", self.kind),
        }
    }
}

impl std::error::Error for Error {}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Self {
        Self::new(kind)
    }
}

/// Codec names as a camera's SDP gave them, made safe to show: at most 4, each at most 16
/// characters of `[A-Za-z0-9._-]`.
pub(crate) fn sanitised_codecs<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    names
        .take(4)
        .map(|n| {
            n.chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                .take(16)
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_camera_and_url_but_no_credentials() {
        let url = url::Url::parse("rtsp://admin:s3cret@10.1.2.3:554/ch1?password=s3cret").unwrap();
        let e =
            Error::with_detail(ErrorKind::Refused, "peer said: s3cret").at(&"cam1".into(), &url);
        let shown = e.to_string();
        assert_eq!(
            shown,
            "camera cam1 (rtsp://10.1.2.3:554/ch1): connection refused"
        );
        assert!(!e.kind().to_string().contains("s3cret"));
        assert_eq!(e.detail(), Some("peer said: s3cret"));
    }

    #[test]
    fn codec_names_from_a_camera_are_cut_to_safe_words() {
        let names = [
            "MP4V-ES",
            "<script>alert(1)</script>",
            "a-very-long-codec-name-indeed",
            "x",
            "y",
        ];
        assert_eq!(
            sanitised_codecs(names.into_iter()),
            ["MP4V-ES", "scriptalert1scri", "a-very-long-code", "x"]
        );
    }

    #[test]
    fn labels_are_few_and_fixed() {
        assert_eq!(ErrorKind::Stall(Duration::from_secs(10)).label(), "stall");
        assert_eq!(ErrorKind::Unauthorized.label(), "auth");
        assert!(ErrorKind::NotFound.is_permanent());
        assert!(!ErrorKind::Refused.is_permanent());
        assert_eq!(
            ErrorKind::ConnectTimeout(Duration::from_millis(2500)).to_string(),
            "no answer within 2.5 s (connect timeout)"
        );
    }
}
