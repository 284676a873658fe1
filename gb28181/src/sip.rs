//! SIP messages on the wire, parsed and printed with `ezk-sip-types`: only what a GB/T
//! 28181 device says and hears (REGISTER and MESSAGE out; responses and MESSAGE in).

use bytes::Bytes;
use bytesstr::BytesStr;
use sip_types::header::typed::{CSeq, CallID, ContentLength};
use sip_types::msg::{Line, MessageLine, PullParser, RequestLine, StatusLine};
use sip_types::parse::Parse;
use sip_types::print::AppendCtx;
use sip_types::{Headers, Method, Name};

/// The largest datagram taken: a platform's Catalog query is well under 2 KB.
pub const MAX_DATAGRAM: usize = 64 * 1024;

/// A parsed message from the platform.
#[derive(Debug)]
pub struct Incoming {
    pub line: MessageLine,
    pub headers: Headers,
    pub body: Bytes,
}

/// Why a datagram was not taken; never echoes its bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl Incoming {
    /// Parses one datagram. Hostile input gets an error, never a panic.
    pub fn parse(datagram: &[u8]) -> Result<Self, Malformed> {
        let buffer = Bytes::copy_from_slice(datagram);
        let mut parser = PullParser::new(&buffer, 0);
        let mut line = None;
        let mut headers = Headers::new();
        for item in &mut parser {
            let text = item.map_err(|_| Malformed("an incomplete message head"))?;
            let text =
                std::str::from_utf8(text).map_err(|_| Malformed("a head that is not UTF-8"))?;
            if line.is_none() {
                let (_, parsed) = MessageLine::parse(&buffer)(text)
                    .map_err(|_| Malformed("no request or status line"))?;
                line = Some(parsed);
            } else {
                let (_, parsed) =
                    Line::parse(&buffer, text).map_err(|_| Malformed("a malformed header line"))?;
                headers.insert(parsed.name, parsed.value);
            }
        }
        let line = line.ok_or(Malformed("an empty message"))?;
        let head_end = parser.head_end();
        let body = match headers.get_named::<ContentLength>() {
            Ok(ContentLength(0)) => Bytes::new(),
            Ok(ContentLength(n)) if buffer.len() >= head_end.saturating_add(n) => {
                buffer.slice(head_end..head_end + n)
            }
            Ok(_) => return Err(Malformed("a body shorter than its Content-Length")),
            Err(_) => buffer.slice(head_end.min(buffer.len())..),
        };
        Ok(Self {
            line,
            headers,
            body,
        })
    }

    /// (Call-ID, CSeq number): which of our requests a response answers.
    pub fn transaction(&self) -> Option<(String, u32)> {
        let call = self.headers.get_named::<CallID>().ok()?;
        let cseq = self.headers.get_named::<CSeq>().ok()?;
        Some((call.0.to_string(), cseq.cseq))
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        match &self.line {
            MessageLine::Response(StatusLine { code, .. }) => Some(code.into_u16()),
            MessageLine::Request(_) => None,
        }
    }
}

/// A request this device sends: its line and headers as `ezk-sip-types` keeps them (so the
/// Digest authenticator can read and sign them) and its body.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub line: RequestLine,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// Where the device is and whom it talks to.
#[derive(Debug, Clone)]
pub struct Parties {
    /// This device's id.
    pub device: String,
    /// The platform's id and realm.
    pub server: String,
    pub domain: String,
    /// The address the platform reaches this device at (`host:port`).
    pub local: String,
    /// The platform's `host:port`.
    pub remote: String,
    /// `UDP` or `TCP`, for the Via header.
    pub transport: &'static str,
}

impl Outgoing {
    /// A request from this device to the platform: `method` in dialog-less transaction
    /// `call_id`/`cseq`, with a fresh branch.
    pub fn new(
        parties: &Parties,
        method: Method,
        call_id: &str,
        cseq: u32,
        from_tag: &str,
    ) -> Self {
        let uri = format!("sip:{}@{}", parties.server, parties.remote);
        let line = RequestLine {
            method: method.clone(),
            uri: uri
                .parse()
                .expect("a SIP URI from digits and an address parses"),
        };
        let mut headers = Headers::new();
        let raw = |v: String| BytesStr::from(v);
        headers.insert(Name::VIA, via(parties));
        headers.insert(
            Name::FROM,
            raw(format!(
                "<sip:{}@{}>;tag={from_tag}",
                parties.device, parties.domain
            )),
        );
        let to = if method == Method::REGISTER {
            format!("<sip:{}@{}>", parties.device, parties.domain)
        } else {
            format!("<sip:{}@{}>", parties.server, parties.domain)
        };
        headers.insert(Name::TO, raw(to));
        headers.insert(Name::CALL_ID, raw(call_id.to_owned()));
        headers.insert(Name::CSEQ, raw(format!("{cseq} {method}")));
        headers.insert(Name::MAX_FORWARDS, raw("70".to_owned()));
        headers.insert(Name::USER_AGENT, raw("sharpeyes".to_owned()));
        Self {
            line,
            headers,
            body: Vec::new(),
        }
    }

    /// Sets the body and its type.
    pub fn with_body(mut self, content_type: &str, body: Vec<u8>) -> Self {
        self.headers
            .insert(Name::CONTENT_TYPE, BytesStr::from(content_type.to_owned()));
        self.body = body;
        self
    }

    pub fn header(mut self, name: Name, value: String) -> Self {
        self.headers.insert(name, BytesStr::from(value));
        self
    }

    /// The bytes of the datagram.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "{}\r\n{}Content-Length: {}\r\n\r\n",
            self.line.default_print_ctx(),
            self.headers,
            self.body.len()
        )
        .into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// This device's Via header, with a fresh branch: every new transaction has its own.
pub fn via(parties: &Parties) -> BytesStr {
    BytesStr::from(format!(
        "SIP/2.0/{} {};rport;branch=z9hG4bK{}",
        parties.transport,
        parties.local,
        ulid::Ulid::new()
    ))
}

/// A response to `request` from the platform, e.g. `200 OK` to its MESSAGE: its Via, From,
/// To, Call-ID and CSeq copied back (To with a tag of ours).
pub fn response(request: &Incoming, code: u16, reason: &str, tag: &str) -> Vec<u8> {
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    for name in [Name::VIA, Name::FROM, Name::TO, Name::CALL_ID, Name::CSEQ] {
        for value in request.headers.get_raw(&name) {
            let value = if name == Name::TO && !value.contains("tag=") {
                format!("{value};tag={tag}")
            } else {
                value.to_string()
            };
            out.push_str(&format!("{}: {value}\r\n", name.as_print_str()));
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parties() -> Parties {
        Parties {
            device: "32132200001180000001".into(),
            server: "32132200002000000001".into(),
            domain: "3213220000".into(),
            local: "127.0.0.1:5061".into(),
            remote: "127.0.0.1:5060".into(),
            transport: "UDP",
        }
    }

    #[test]
    fn a_request_prints_and_parses_back() {
        let out = Outgoing::new(&parties(), Method::MESSAGE, "call-1", 7, "tag-1")
            .with_body("Application/MANSCDP+xml", b"<Notify/>".to_vec());
        let text = out.to_bytes();
        let back = Incoming::parse(&text).unwrap();
        assert_eq!(back.transaction(), Some(("call-1".into(), 7)));
        assert_eq!(&back.body[..], b"<Notify/>");
        let printed = String::from_utf8(text).unwrap();
        let tcp = Parties {
            transport: "TCP",
            ..parties()
        };
        let over_tcp = Outgoing::new(&tcp, Method::REGISTER, "call-2", 1, "tag-2").to_bytes();
        assert!(
            String::from_utf8(over_tcp)
                .unwrap()
                .contains("\r\nVia: SIP/2.0/TCP 127.0.0.1:5061;rport;branch=z9hG4bK"),
            "the Via names the transport"
        );
        assert!(
            printed.starts_with("MESSAGE sip:32132200002000000001@127.0.0.1:5060 SIP/2.0\r\n"),
            "{printed}"
        );
    }

    #[test]
    fn hostile_datagrams_are_refused_without_a_panic() {
        let cases: [&[u8]; 7] = [
            b"",
            b"\r\n\r\n",
            b"garbage\r\n\r\n",
            b"SIP/2.0 200 OK\r\nContent-Length: 99\r\n\r\nshort",
            b"SIP/2.0 200 OK\r\nCSeq: x\r\n",
            &[0xff, 0xfe, b'\r', b'\n', b'\r', b'\n'],
            b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 18446744073709551615\r\n\r\nx",
        ];
        for case in cases {
            if let Ok(m) = Incoming::parse(case) {
                // Whatever parses is only read through checked accessors.
                let _ = (m.transaction(), m.status());
            }
        }
        assert!(Incoming::parse(b"garbage\r\n\r\n").is_err());
    }
}
