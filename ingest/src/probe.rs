//! `sharpeyes probe`: what an integrator needs to know about a camera before adding it.
//!
//! Connects like a camera task would (TCP interleaved), watches the stream for up to a
//! bounded time, and reports codec and profile, resolution, frame rate, GOP length, bitrate,
//! time to first keyframe and RTSP quirks, with a decoded snapshot of the first keyframe.
//! Failures say what went wrong and what to check, never echoing the credentials.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use retina::codec::{CodecItem, ParametersRef};
use url::Url;

use crate::camera::{Opened, open};
use crate::decode::{Codec, Decoder, output_size};
use crate::error::{Error, ErrorKind};
use crate::frame::Frame;

/// What a probe found.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    pub codec: Codec,
    /// RFC 6381 codec string, e.g. `avc1.64001F`.
    pub codec_string: String,
    pub width: u32,
    pub height: u32,
    /// From the stream's parameters, when it says.
    pub declared_fps: Option<f64>,
    pub measured_fps: f64,
    /// Frames from one keyframe to the next; `None` if only one keyframe was seen.
    pub gop_frames: Option<u32>,
    pub bitrate_bps: f64,
    pub time_to_first_keyframe: Duration,
    pub quirks: Vec<String>,
    /// The first keyframe, decoded at the stream's resolution.
    pub snapshot: Option<Frame>,
}

/// What to check, for an integrator who saw `error` from `probe`.
pub fn probe_hint(error: &Error) -> &'static str {
    match error.kind() {
        ErrorKind::Refused | ErrorKind::Unreachable | ErrorKind::ConnectTimeout(_) => {
            "check the host, the port, and that RTSP is enabled on the camera"
        }
        ErrorKind::Unauthorized | ErrorKind::Forbidden => {
            "check the user name and password in the URL, or the ${VAR} it names"
        }
        ErrorKind::NotFound => {
            "check the path, e.g. /Streaming/Channels/101 (Hikvision) or /cam/realmonitor?channel=1&subtype=0 (Dahua)"
        }
        ErrorKind::Unsupported(_) => {
            "switch the camera's encoder (or its sub-stream) to H.264 or H.265"
        }
        ErrorKind::NoKeyframe(_) => {
            "the camera's GOP is longer than the time watched (raise --watch), or the stream carries no video frames"
        }
        _ => "run with --log debug for what the camera answered",
    }
}

/// Probes `url` for at most `watch` after connecting (`connect` bounds the handshake).
pub async fn probe(url: &Url, connect: Duration, watch: Duration) -> Result<ProbeReport, Error> {
    let started = Instant::now();
    let Opened {
        mut stream,
        index,
        codec,
        in_band_only,
    } = tokio::time::timeout(connect, open(url, false, "sharpeyes-probe"))
        .await
        .map_err(|_| Error::new(ErrorKind::ConnectTimeout(connect)))??;
    let playing_at = Instant::now();

    let mut quirks = Vec::new();
    if in_band_only {
        quirks.push("parameters (SPS/PPS) only in-band, not in the SDP".to_owned());
    }
    let mut first_key: Option<Instant> = None;
    let (mut frames, mut bytes, mut keyframes, mut since_key) = (0u32, 0u64, 0u32, 0u32);
    let mut gop_frames = None;
    let mut skipped_before_key = 0u32;
    let (mut lost, mut damaged) = (0u64, 0u64);
    let snapshot: Arc<Mutex<Option<Frame>>> = Arc::default();
    let mut decoder: Option<Decoder> = None;
    let deadline = playing_at + watch;
    while let Ok(Some(item)) = tokio::time::timeout_at(deadline.into(), stream.next()).await {
        let item = match item {
            Ok(item) => item,
            Err(e) => {
                let e = Error::from_retina(&e);
                if e.kind() == &ErrorKind::Corrupt {
                    // As the camera task does: the access unit is lost, the session goes on.
                    damaged += 1;
                    continue;
                }
                tracing::debug!(detail = e.detail().unwrap_or(""), "probe: stream error");
                quirks.push(format!(
                    "stream error after {:.1} s: {}",
                    started.elapsed().as_secs_f64(),
                    e.kind()
                ));
                break;
            }
        };
        let CodecItem::VideoFrame(frame) = item else {
            continue;
        };
        if frame.stream_id() != index {
            continue;
        }
        lost += u64::from(frame.loss());
        let key = frame.is_random_access_point();
        if first_key.is_none() && !key {
            skipped_before_key += 1;
            continue;
        }
        frames += 1;
        bytes += frame.data().len() as u64;
        if key {
            keyframes += 1;
            if keyframes == 2 {
                gop_frames = Some(since_key);
            }
            since_key = 0;
        }
        since_key += 1;
        if first_key.is_none() {
            first_key = Some(Instant::now());
            if let Some(ParametersRef::Video(p)) = stream.streams()[index].parameters() {
                let (w, h) = p.pixel_dimensions();
                let slot = snapshot.clone();
                decoder = Decoder::new(
                    "probe".into(),
                    codec,
                    output_size(w, h, w.max(h)),
                    false,
                    Arc::default(),
                    move |f| {
                        slot.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert(f);
                    },
                )
                .ok();
                if let Some(d) = decoder.as_mut() {
                    d.set_intra_only(true); // one keyframe, wanted now
                }
            }
            if let Some(d) = decoder.as_mut() {
                let _ = d.push(frame.into_data(), SystemTime::now(), true);
            }
        }
        if keyframes >= 3 {
            break;
        }
    }
    let Some(first_key) = first_key else {
        return Err(ErrorKind::NoKeyframe(watch).into());
    };
    if skipped_before_key > 0 {
        quirks.push(format!(
            "joined mid-GOP: {skipped_before_key} frame(s) before the first keyframe"
        ));
    }
    if lost > 0 {
        quirks.push(format!("{lost} RTP packet(s) lost"));
    }
    if damaged > 0 {
        quirks.push(format!(
            "{damaged} malformed or out-of-order RTP packet(s): the frames they were in were lost (joined mid-fragment, or a lossy link)"
        ));
    }
    let params = match stream.streams()[index].parameters() {
        Some(ParametersRef::Video(p)) => p.clone(),
        _ => {
            return Err(Error::with_detail(
                ErrorKind::Protocol,
                "no video parameters after the first keyframe",
            ));
        }
    };
    let (width, height) = params.pixel_dimensions();
    let elapsed = first_key.elapsed().as_secs_f64().max(1e-3);
    // Let the decoder hand over the snapshot (bounded).
    for _ in 0..100 {
        if snapshot.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(decoder);
    let snapshot = snapshot.lock().unwrap_or_else(|e| e.into_inner()).take();
    Ok(ProbeReport {
        codec,
        codec_string: params.rfc6381_codec().to_owned(),
        width,
        height,
        declared_fps: params
            .frame_rate()
            .map(|(num, den)| f64::from(den) / f64::from(num)),
        measured_fps: f64::from(frames.saturating_sub(1)) / elapsed,
        gop_frames,
        bitrate_bps: bytes as f64 * 8.0 / elapsed,
        time_to_first_keyframe: first_key.duration_since(playing_at),
        quirks,
        snapshot,
    })
}

/// `avc1.64001F` -> "High"; `hvc1.1...` -> "Main".
pub fn profile_name(codec_string: &str) -> &'static str {
    if let Some(hex) = codec_string.strip_prefix("avc1.").and_then(|s| s.get(..2)) {
        return match u8::from_str_radix(hex, 16).unwrap_or(0) {
            66 => "Baseline",
            77 => "Main",
            88 => "Extended",
            100 => "High",
            110 => "High 10",
            122 => "High 4:2:2",
            244 => "High 4:4:4",
            _ => "unknown",
        };
    }
    match codec_string.split('.').nth(1) {
        Some("1") => "Main",
        Some("2") => "Main 10",
        Some("3") => "Main Still Picture",
        _ => "unknown",
    }
}

impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let codec = match self.codec {
            Codec::H264 => "H.264",
            Codec::H265 => "H.265",
        };
        writeln!(
            f,
            "codec:          {codec} ({}, {} profile)",
            self.codec_string,
            profile_name(&self.codec_string)
        )?;
        writeln!(f, "resolution:     {}x{}", self.width, self.height)?;
        match self.declared_fps {
            Some(d) => writeln!(
                f,
                "frame rate:     {d:.2} fps declared, {:.2} measured",
                self.measured_fps
            )?,
            None => writeln!(
                f,
                "frame rate:     {:.2} fps measured (the stream declares none)",
                self.measured_fps
            )?,
        }
        match self.gop_frames {
            Some(g) => writeln!(
                f,
                "GOP:            {g} frames ({:.1} s)",
                f64::from(g) / self.measured_fps.max(1e-3)
            )?,
            None => writeln!(f, "GOP:            longer than the time watched")?,
        }
        writeln!(f, "bitrate:        {:.2} Mbit/s", self.bitrate_bps / 1e6)?;
        writeln!(
            f,
            "first keyframe: {:.2} s after PLAY",
            self.time_to_first_keyframe.as_secs_f64()
        )?;
        if self.quirks.is_empty() {
            write!(f, "quirks:         none seen")
        } else {
            write!(f, "quirks:         {}", self.quirks.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_from_codec_strings() {
        assert_eq!(profile_name("avc1.64001F"), "High");
        assert_eq!(profile_name("avc1.42C01E"), "Baseline");
        assert_eq!(profile_name("avc1.4D0028"), "Main");
        assert_eq!(profile_name("hvc1.1.6.L93.B0"), "Main");
        assert_eq!(profile_name("mp4v.20"), "unknown");
    }
}
