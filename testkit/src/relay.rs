//! An RTSP relay that impairs the video on its way to the client, as a lossy or congested
//! link does: RTSP over TCP passes through, and of the RTP packets interleaved on channel 0
//! it drops or swaps some, at even spacing so that a test's outcome does not hang on luck.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What happens to the RTP packets of the video channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Impairment {
    /// Drop one packet in this many (333: 0.3 %, 33: 3 %).
    pub drop_one_in: Option<u64>,
    /// Swap one packet in this many with the packet after it.
    pub swap_one_in: Option<u64>,
    /// The client's first packet is the middle of a fragmented NAL unit (H.264 FU-A or
    /// H.265 FU without the start bit), as when joining a camera another client already
    /// watches: the packets before one are held back, and `RTP-Info` is left out of the
    /// responses (many cameras send none), so nothing tells the client it missed anything.
    pub start_mid_fragment: bool,
}

/// An RTSP head without its `RTP-Info` line.
fn without_rtp_info(head: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    text.split_inclusive("\r\n")
        .filter(|line| !line.to_ascii_lowercase().starts_with("rtp-info:"))
        .collect::<String>()
        .into_bytes()
}

/// Whether an RTP packet carries a fragment of a NAL unit other than its first.
fn continues_a_fragment(rtp: &[u8]) -> bool {
    let Some(&first) = rtp.first() else {
        return false;
    };
    // Past the fixed header and any CSRCs (extensions are not used by the simulator).
    let payload = 12 + 4 * usize::from(first & 0x0f);
    match (rtp.get(payload), rtp.get(payload + 1), rtp.get(payload + 2)) {
        (Some(h), Some(fu), _) if h & 0x1f == 28 => fu & 0x80 == 0,
        (Some(h), _, Some(fu)) if (h >> 1) & 0x3f == 49 => fu & 0x80 == 0,
        _ => false,
    }
}

/// See the module docs.
pub struct RtspRelay {
    pub port: u16,
    /// RTP packets dropped and swapped so far, all connections together.
    pub dropped: Arc<AtomicU64>,
    pub swapped: Arc<AtomicU64>,
    accept: JoinHandle<()>,
}

impl RtspRelay {
    /// Listens on a free loopback port and relays to the RTSP server on loopback `upstream`.
    pub async fn start(upstream: u16, impairment: Impairment) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let port = listener.local_addr().expect("bound").port();
        let dropped = Arc::new(AtomicU64::new(0));
        let swapped = Arc::new(AtomicU64::new(0));
        let (d, s) = (dropped.clone(), swapped.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, mut sw) = server.into_split();
                let (d, s) = (d.clone(), s.clone());
                tokio::spawn(async move {
                    let mut cr = cr;
                    let up = tokio::io::copy(&mut cr, &mut sw);
                    let down = relay_down(sr, cw, impairment, d, s);
                    tokio::select! { _ = up => {}, _ = down => {} }
                });
            }
        });
        Self {
            port,
            dropped,
            swapped,
            accept,
        }
    }
}

impl Drop for RtspRelay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Server to client: RTSP messages whole, interleaved frames one by one, impaired.
async fn relay_down(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    impairment: Impairment,
    dropped: Arc<AtomicU64>,
    swapped: Arc<AtomicU64>,
) -> std::io::Result<()> {
    let mut rtp_seen = 0u64;
    let mut held: Option<Vec<u8>> = None;
    let mut joined = !impairment.start_mid_fragment;
    loop {
        let first = from.read_u8().await?;
        if first == b'$' {
            let channel = from.read_u8().await?;
            let len = from.read_u16().await?;
            let mut frame = vec![b'$', channel];
            frame.extend_from_slice(&len.to_be_bytes());
            let start = frame.len();
            frame.resize(start + usize::from(len), 0);
            from.read_exact(&mut frame[start..]).await?;
            if channel != 0 {
                to.write_all(&frame).await?;
                continue;
            }
            if !joined {
                if !continues_a_fragment(&frame[start..]) {
                    continue;
                }
                joined = true;
            }
            rtp_seen += 1;
            if impairment.drop_one_in.is_some_and(|n| rtp_seen % n == 0) {
                dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if let Some(earlier) = held.take() {
                // The swapped packet goes out after the one that followed it.
                to.write_all(&frame).await?;
                to.write_all(&earlier).await?;
                continue;
            }
            if impairment.swap_one_in.is_some_and(|n| rtp_seen % n == 0) {
                swapped.fetch_add(1, Ordering::Relaxed);
                held = Some(frame);
                continue;
            }
            to.write_all(&frame).await?;
        } else {
            // An RTSP response: its head to the blank line, then Content-Length bytes.
            let mut head = vec![first];
            while !head.ends_with(b"\r\n\r\n") {
                head.push(from.read_u8().await?);
                if head.len() > 64 * 1024 {
                    return Err(std::io::Error::other("an RTSP head over 64 KiB"));
                }
            }
            let length = String::from_utf8_lossy(&head)
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.trim()
                        .eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            let mut body = vec![0u8; length];
            from.read_exact(&mut body).await?;
            if impairment.start_mid_fragment {
                head = without_rtp_info(&head);
            }
            to.write_all(&head).await?;
            to.write_all(&body).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One RTSP response, then six RTP packets on channel 0 and one on channel 1.
    fn server_bytes() -> Vec<u8> {
        let mut out = b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nContent-Length: 4\r\n\r\nbody".to_vec();
        for i in 1..=6u8 {
            out.extend_from_slice(&[b'$', 0, 0, 2, i, i]);
        }
        out.extend_from_slice(&[b'$', 1, 0, 1, 99]);
        out
    }

    async fn relayed(impairment: Impairment) -> (Vec<u8>, u64, u64) {
        let (dropped, swapped) = (Arc::default(), Arc::default());
        let mut out = Vec::new();
        let result = relay_down(
            &server_bytes()[..],
            &mut out,
            impairment,
            Arc::clone(&dropped),
            Arc::clone(&swapped),
        )
        .await;
        assert!(result.is_err(), "ends at the end of the input");
        (
            out,
            dropped.load(Ordering::Relaxed),
            swapped.load(Ordering::Relaxed),
        )
    }

    fn rtp_payloads(bytes: &[u8]) -> Vec<u8> {
        let start = bytes.windows(4).position(|w| w == b"body").unwrap() + 4;
        bytes[start..]
            .chunks(6)
            .filter(|c| c.len() == 6 && c[1] == 0)
            .map(|c| c[4])
            .collect()
    }

    #[tokio::test]
    async fn responses_pass_whole_and_rtp_is_dropped_or_swapped_at_even_spacing() {
        let (clean, ..) = relayed(Impairment::default()).await;
        assert_eq!(clean, server_bytes());
        let (lossy, dropped, _) = relayed(Impairment {
            drop_one_in: Some(3),
            ..Impairment::default()
        })
        .await;
        assert_eq!(rtp_payloads(&lossy), [1, 2, 4, 5]);
        assert_eq!(dropped, 2);
        assert!(
            lossy.ends_with(&[b'$', 1, 0, 1, 99]),
            "other channels untouched"
        );
        let (swapped_bytes, _, swapped) = relayed(Impairment {
            swap_one_in: Some(2),
            ..Impairment::default()
        })
        .await;
        // 6 is held for a packet that never comes.
        assert_eq!(rtp_payloads(&swapped_bytes), [1, 3, 2, 5, 4]);
        assert_eq!(swapped, 3);
    }

    #[test]
    fn rtp_info_is_left_out_and_the_rest_of_the_head_kept() {
        let head = b"RTSP/1.0 200 OK\r\nCSeq: 5\r\nRTP-Info: url=rtsp://h/cam1;seq=7;rtptime=0\r\nSession: 42\r\n\r\n";
        assert_eq!(
            without_rtp_info(head),
            b"RTSP/1.0 200 OK\r\nCSeq: 5\r\nSession: 42\r\n\r\n".to_vec()
        );
    }

    #[test]
    fn fragments_that_continue_a_nal_unit_are_told_apart() {
        let rtp =
            |payload: &[u8]| [&[0x80u8, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1][..], payload].concat();
        assert!(
            continues_a_fragment(&rtp(&[0x7c, 0x05])),
            "H.264 FU-A, middle"
        );
        assert!(
            !continues_a_fragment(&rtp(&[0x7c, 0x85])),
            "H.264 FU-A, start"
        );
        assert!(
            !continues_a_fragment(&rtp(&[0x65, 0x88])),
            "H.264 single NAL"
        );
        assert!(
            continues_a_fragment(&rtp(&[0x62, 0x01, 0x13])),
            "H.265 FU, middle"
        );
        assert!(
            !continues_a_fragment(&rtp(&[0x62, 0x01, 0x93])),
            "H.265 FU, start"
        );
    }
}
