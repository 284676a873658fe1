//! One camera: RTSP in with retina, sampled before decoding, decoded frames into its slot.
//!
//! The task is `run()` retrying `run_once()` with exponential backoff and jitter, every
//! await raced against shutdown. A camera that cannot work until someone changes something
//! (wrong credentials, wrong path, no video, unsupported codec) ends in `Failed` with the
//! reason instead of hammering the camera; anything else (refused connection, timeouts,
//! "timestamp jumped", framing errors, a stalled stream) is a reconnect with a logged reason.
//! One camera's task never waits on another's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures::{FutureExt, StreamExt};
use retina::client::{
    Credentials, Demuxed, PlayOptions, Session, SessionOptions, SetupOptions, TcpTransportOptions,
    Transport, UdpTransportOptions,
};
use retina::codec::{CodecItem, FrameFormat, ParametersRef};
use sharpeyes_config::Sampling;
use tokio::sync::watch;
use url::Url;

use crate::decode::{Codec, DecodeCounters, Decoder, output_size};
use crate::error::{Error, ErrorKind, sanitised_codecs};
use crate::frame::FrameSlot;
use crate::quiet::QuietGops;

/// Limits of one camera's connection, with the defaults documented on each.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    /// DESCRIBE, SETUP and PLAY together (default 10 s).
    pub connect: Duration,
    /// No video frame for this long is a stall: reconnect (default 10 s).
    pub stall: Duration,
    /// First retry delay, doubled per failure up to `backoff_max` (defaults 1 s, 60 s).
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            stall: Duration::from_secs(10),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
        }
    }
}

/// What one camera task needs.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub camera: Arc<str>,
    /// The expanded URL (credentials in its user-info, never logged).
    pub url: Url,
    pub udp: bool,
    pub sampling: Sampling,
    /// With keyframe sampling: skip keyframes whose bitstream says nothing changed since the
    /// last one decoded, decoding one at least this often (`[motion] forced_interval`).
    pub skip_quiet: Option<Duration>,
    /// Longer side of decoded frames: the largest model input the camera feeds.
    pub detect_side: u32,
    pub hardware_decoding: bool,
    pub timeouts: Timeouts,
}

/// Where a camera is, for metrics and the retained status topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CameraState {
    Connecting,
    Streaming,
    /// Waiting to reconnect after `error`.
    Backoff {
        error: Error,
        retry_in: Duration,
    },
    /// Will not work until its configuration changes.
    Failed {
        error: Error,
    },
    Stopped,
}

/// Counters of one camera, for metrics.
#[derive(Debug, Default)]
pub struct CameraCounters {
    /// Access units received.
    pub received: AtomicU64,
    /// Access units skipped by sampling, never decoded.
    pub skipped: AtomicU64,
    /// Keyframes not decoded because nothing changed since the last one decoded
    /// ([`SourceConfig::skip_quiet`]).
    pub quiet: AtomicU64,
    /// Access units lost to malformed, missing or reordered packets, and those skipped after
    /// them until the next keyframe (what they refer to is gone).
    pub corrupt: AtomicU64,
    pub reconnects: AtomicU64,
    pub decode: Arc<DecodeCounters>,
}

/// A running camera task.
pub struct CameraHandle {
    pub state: watch::Receiver<CameraState>,
    pub counters: Arc<CameraCounters>,
    /// Its newest frame for analytics, its latest frame for snapshots, and verify mode
    /// ([`FrameSlot::set_verify`]): what others hold of a camera.
    pub frames: Arc<FrameSlot>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts a camera task on the current tokio runtime; it stops when `shutdown` turns true.
pub fn spawn(config: SourceConfig, shutdown: watch::Receiver<bool>) -> CameraHandle {
    let (state_tx, state) = watch::channel(CameraState::Connecting);
    let counters = Arc::new(CameraCounters::default());
    let frames = Arc::new(FrameSlot::default());
    let task = Camera {
        config,
        state: state_tx,
        counters: counters.clone(),
        frames: frames.clone(),
    };
    let camera = task.config.camera.clone();
    let task = tokio::spawn(tracing::Instrument::instrument(
        crate::cpu::Measured::new(crate::cpu::Stage::Receive, task.run(shutdown)),
        tracing::info_span!("camera", id = %camera),
    ));
    CameraHandle {
        state,
        counters,
        frames,
        task,
    }
}

/// Why one connection ended.
#[derive(Debug)]
pub(crate) enum Ended {
    Shutdown,
    /// Retry after a backoff, or give up when the error's kind is permanent; `streamed` when
    /// frames flowed (the backoff starts over).
    Error {
        error: Error,
        streamed: bool,
    },
}

/// The reconnect policy every backend shares: run `run_once` until shutdown; after a
/// retryable end wait an exponential backoff with jitter (starting over once frames
/// flowed), after a permanent one stay `Failed` until shutdown. Every wait is raced against
/// shutdown. Errors are told with the camera and its URL (`url`, shown without credentials).
pub(crate) async fn supervise<Fut: Future<Output = Ended>>(
    camera: &Arc<str>,
    url: &Url,
    timeouts: Timeouts,
    state: &watch::Sender<CameraState>,
    counters: &CameraCounters,
    mut shutdown: watch::Receiver<bool>,
    mut run_once: impl FnMut() -> Fut,
) {
    let mut backoff = timeouts.backoff_min;
    let mut jitter = Jitter::new(camera);
    loop {
        state.send_replace(CameraState::Connecting);
        // A panic while reading the camera (a bug, whatever the camera sent) ends this
        // connection only: it is told and counted like any error, and the camera reconnects.
        let once = std::panic::AssertUnwindSafe(run_once()).catch_unwind();
        let ended = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => Ended::Shutdown,
            e = once => e.unwrap_or_else(|panic| {
                let what = crate::error::panic_message(panic.as_ref());
                Ended::Error {
                    error: Error::with_detail(ErrorKind::Internal, format!("panic: {what}")),
                    streamed: false,
                }
            }),
        };
        let error = match ended {
            Ended::Shutdown => break,
            Ended::Error { error, streamed } => {
                if streamed {
                    backoff = timeouts.backoff_min;
                }
                error.at(camera, url)
            }
        };
        if let Some(detail) = error.detail() {
            // What the peer or the library said: the debug log only (it may quote the peer).
            tracing::debug!(%detail, kind = error.kind().label(), "camera error detail");
        }
        if error.kind().is_permanent() {
            tracing::error!(error = %error, "camera failed; fix its configuration");
            state.send_replace(CameraState::Failed { error });
            let _ = shutdown.wait_for(|s| *s).await;
            break;
        }
        if *error.kind() == ErrorKind::Internal {
            tracing::error!(
                detail = error.detail().unwrap_or(""),
                "a panic while reading the camera (a bug; please report it): this connection is dropped, the camera reconnects"
            );
        }
        counters.reconnects.fetch_add(1, Ordering::Relaxed);
        let delay = jitter.apply(backoff);
        tracing::warn!(error = %error, retry_in = ?delay, "camera disconnected");
        state.send_replace(CameraState::Backoff {
            error,
            retry_in: delay,
        });
        backoff = (backoff * 2).min(timeouts.backoff_max);
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    state.send_replace(CameraState::Stopped);
}

struct Camera {
    config: SourceConfig,
    state: watch::Sender<CameraState>,
    counters: Arc<CameraCounters>,
    frames: Arc<FrameSlot>,
}

impl Camera {
    async fn run(self, shutdown: watch::Receiver<bool>) {
        let cfg = &self.config;
        supervise(
            &cfg.camera,
            &cfg.url,
            cfg.timeouts,
            &self.state,
            &self.counters,
            shutdown,
            || self.run_once(),
        )
        .await;
    }

    async fn run_once(&self) -> Ended {
        let cfg = &self.config;
        let opened =
            tokio::time::timeout(cfg.timeouts.connect, open(&cfg.url, cfg.udp, "sharpeyes")).await;
        let Opened {
            mut stream,
            index,
            codec,
            ..
        } = match opened {
            Err(_) => {
                return ended(
                    ErrorKind::ConnectTimeout(cfg.timeouts.connect).into(),
                    false,
                );
            }
            Ok(Err(e)) => return ended(e, false),
            Ok(Ok(o)) => o,
        };

        // Over TCP the connection's reads are coalesced while this lives (`pacing`).
        let _paced = match cfg.udp {
            false => Some(crate::pacing::register(&cfg.url).await),
            true => None,
        };
        let mut decoder: Option<Decoder> = None;
        // A keyframe came on this connection: it is streaming.
        let mut streaming = false;
        // Nothing decodes until the next keyframe: joined mid-GOP, or what later frames
        // refer to was lost.
        let mut need_keyframe = true;
        // Packet trouble keeps items coming; the stall limit runs from the last good frame.
        let mut last_frame = Instant::now();
        let mut corrupt_log = Quiet::default();
        let mut sampler = Sampler::new(cfg.sampling);
        let mut quiet = cfg
            .skip_quiet
            .filter(|_| cfg.sampling == Sampling::Keyframes)
            .map(QuietGops::new);
        // Verify mode as of the last keyframe: switching mid-GOP would decode frames whose
        // references were skipped.
        let mut full_rate = false;
        loop {
            let stall = ErrorKind::Stall(cfg.timeouts.stall);
            let item = match tokio::time::timeout(cfg.timeouts.stall, stream.next()).await {
                Err(_) => return ended(stall.into(), streaming),
                Ok(None) => return ended(ErrorKind::ServerEnded.into(), streaming),
                Ok(Some(Err(e))) => {
                    let error = Error::from_retina(&e);
                    if error.kind() != &ErrorKind::Corrupt {
                        return ended(error, streaming);
                    }
                    // A keyframe repairs it: count it, say so now and then, and go on.
                    self.counters.corrupt.fetch_add(1, Ordering::Relaxed);
                    need_keyframe = true;
                    corrupt_log.note(&error);
                    if last_frame.elapsed() > cfg.timeouts.stall {
                        return ended(stall.into(), streaming);
                    }
                    continue;
                }
                Ok(Some(Ok(item))) => item,
            };
            let CodecItem::VideoFrame(frame) = item else {
                continue;
            };
            if frame.stream_id() != index {
                continue;
            }
            last_frame = Instant::now();
            self.counters.received.fetch_add(1, Ordering::Relaxed);
            let keyframe = frame.is_random_access_point();
            if frame.loss() > 0 {
                // Packets before this frame were lost, and retina dropped the access unit
                // they were in: count it; what refers to it waits for the next keyframe.
                self.counters.corrupt.fetch_add(1, Ordering::Relaxed);
                need_keyframe |= !keyframe;
            }
            if need_keyframe && !keyframe {
                // Joined mid-GOP (skipped), or after damage (corrupt) where sampling would
                // have decoded it.
                let damaged = streaming && cfg.sampling != Sampling::Keyframes;
                let counter = if damaged {
                    &self.counters.corrupt
                } else {
                    &self.counters.skipped
                };
                counter.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            need_keyframe = false;
            if !streaming {
                streaming = true;
                self.state.send_replace(CameraState::Streaming);
            }
            if frame.has_new_parameters() || decoder.is_none() {
                let Some(ParametersRef::Video(params)) = stream.streams()[index].parameters()
                else {
                    continue;
                };
                let size = output_size(
                    params.pixel_dimensions().0,
                    params.pixel_dimensions().1,
                    cfg.detect_side,
                );
                let slot = self.frames.clone();
                match Decoder::new(
                    cfg.camera.clone(),
                    codec,
                    size,
                    cfg.hardware_decoding,
                    self.counters.decode.clone(),
                    move |f| {
                        slot.put(f);
                    },
                ) {
                    Ok(d) => {
                        tracing::info!(
                            decoder = d.element(),
                            width = size.0,
                            height = size.1,
                            "decoding"
                        );
                        decoder = Some(d);
                    }
                    Err(e) => return ended(e, streaming),
                }
            }
            if keyframe {
                full_rate = self.frames.verify_asked();
                if let Some(d) = decoder.as_mut() {
                    d.set_verifying(full_rate);
                    d.set_intra_only(cfg.sampling == Sampling::Keyframes && !full_rate);
                }
            }
            let take = if full_rate {
                Take::Emit
            } else {
                sampler.take(keyframe, frame.is_disposable(), Instant::now())
            };
            if let Some(q) = quiet.as_mut().filter(|_| !full_rate) {
                let size = frame.data().len();
                if !keyframe {
                    q.delta(size);
                } else if !q.keyframe(size, Instant::now(), self.frames.attention_asked()) {
                    self.counters.quiet.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
            let pushed = match (take, decoder.as_mut()) {
                (Take::Skip, _) => {
                    self.counters.skipped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                (_, None) => Ok(()),
                (Take::Emit, Some(d)) => d.push(frame.into_data(), SystemTime::now(), keyframe),
                (Take::DecodeOnly, Some(d)) => d.push_decode_only(frame.into_data(), keyframe),
            };
            if let Err(e) = pushed {
                // A bitstream the decoder could not get past: start over at the next keyframe.
                tracing::warn!(error = %e, detail = e.detail().unwrap_or(""), "decoder error; resuming at the next keyframe");
                decoder = None;
                need_keyframe = true;
                if let Some(q) = quiet.as_mut() {
                    q.forget();
                }
            }
        }
    }
}

pub(crate) fn ended(error: Error, streamed: bool) -> Ended {
    Ended::Error { error, streamed }
}

/// How often a camera's packet trouble is logged: a lossy link would otherwise fill the log.
const CORRUPT_LOG_EVERY: Duration = Duration::from_secs(60);

/// Logs packet trouble at most once per [`CORRUPT_LOG_EVERY`], with how much was not logged.
#[derive(Default)]
pub(crate) struct Quiet {
    last: Option<Instant>,
    unlogged: u64,
}

impl Quiet {
    pub(crate) fn note(&mut self, error: &Error) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < CORRUPT_LOG_EVERY)
        {
            self.unlogged += 1;
            return;
        }
        tracing::warn!(
            error = %error.kind(),
            more_since_last_said = self.unlogged,
            "damaged packets: frames are lost up to the next keyframe; the session goes on"
        );
        tracing::debug!(
            detail = error.detail().unwrap_or(""),
            "what the packet error said"
        );
        self.last = Some(now);
        self.unlogged = 0;
    }
}

/// A stream that is playing.
pub(crate) struct Opened {
    pub stream: Demuxed,
    pub index: usize,
    pub codec: Codec,
    /// The SDP carried no parameters: they come with the first keyframe.
    pub in_band_only: bool,
}

/// DESCRIBE, SETUP (TCP interleaved unless `udp`) and PLAY of the first H.264/H.265 video
/// stream; the credentials in `url`'s user-info go to retina apart from the URL.
pub(crate) async fn open(url: &Url, udp: bool, user_agent: &str) -> Result<Opened, Error> {
    let (bare, creds) = split_credentials(url);
    let options = SessionOptions::default()
        .creds(creds)
        .user_agent(user_agent.into());
    let rtsp = |e: retina::Error| Error::from_retina(&e);
    let mut session = Session::describe(bare, options).await.map_err(rtsp)?;
    let Some((index, codec)) = pick_video(session.streams()) else {
        let video = sanitised_codecs(
            session
                .streams()
                .iter()
                .filter(|s| s.media() == "video")
                .map(|s| s.encoding_name()),
        );
        return Err(if video.is_empty() {
            ErrorKind::NoVideo.into()
        } else {
            ErrorKind::Unsupported(video).into()
        });
    };
    let in_band_only = session.streams()[index].parameters().is_none();
    let transport = if udp {
        Transport::Udp(UdpTransportOptions::default())
    } else {
        Transport::Tcp(TcpTransportOptions::default())
    };
    session
        .setup(
            index,
            SetupOptions::default()
                .transport(transport)
                .frame_format(FrameFormat::SIMPLE),
        )
        .await
        .map_err(rtsp)?;
    let playing = session.play(PlayOptions::default()).await.map_err(rtsp)?;
    Ok(Opened {
        stream: playing.demuxed().map_err(rtsp)?,
        index,
        codec,
        in_band_only,
    })
}

/// The first H.264 or H.265 video stream.
fn pick_video(streams: &[retina::client::Stream]) -> Option<(usize, Codec)> {
    streams.iter().enumerate().find_map(|(i, s)| {
        (s.media() == "video")
            .then(|| Codec::from_encoding(s.encoding_name()).map(|c| (i, c)))
            .flatten()
    })
}

/// retina takes credentials apart from the URL.
pub(crate) fn split_credentials(url: &Url) -> (Url, Option<Credentials>) {
    let mut bare = url.clone();
    let _ = bare.set_username("");
    let _ = bare.set_password(None);
    let creds = (!url.username().is_empty()).then(|| Credentials {
        username: percent_decode(url.username()),
        password: percent_decode(url.password().unwrap_or_default()),
    });
    (bare, creds)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What to do with one access unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Take {
    /// Never decoded.
    Skip,
    /// Decoded because later frames refer to it, but not scaled or handed on.
    DecodeOnly,
    /// Decoded, scaled and handed to analytics.
    Emit,
}

/// Which access units to decode and which to hand on: sampling happens before decoding,
/// because decoding is the dominant CPU cost, and frames decoded only as references are
/// dropped by the decoder before scaling, the next largest.
#[derive(Debug)]
struct Sampler {
    mode: Sampling,
    next_due: Option<Instant>,
}

impl Sampler {
    fn new(mode: Sampling) -> Self {
        Self {
            mode,
            next_due: None,
        }
    }

    /// `keyframes`: only random-access points. `all`: everything. `fps = N`: N frames a
    /// second handed on; of the others, those later frames refer to are decoded only, and
    /// disposable ones skipped.
    fn take(&mut self, keyframe: bool, disposable: bool, now: Instant) -> Take {
        match self.mode {
            Sampling::Keyframes if keyframe => Take::Emit,
            Sampling::Keyframes => Take::Skip,
            Sampling::All => Take::Emit,
            Sampling::Fps(fps) => {
                let period = Duration::from_secs_f64(1.0 / fps);
                match self.next_due {
                    Some(due) if now < due => {
                        if keyframe || !disposable {
                            Take::DecodeOnly
                        } else {
                            Take::Skip
                        }
                    }
                    // On schedule: the next one is due a period after this one was, so the
                    // rate holds at N even when frames arrive a little late.
                    Some(due) if now < due + period => {
                        self.next_due = Some(due + period);
                        Take::Emit
                    }
                    _ => {
                        self.next_due = Some(now + period);
                        Take::Emit
                    }
                }
            }
        }
    }
}

/// Spreads reconnects of many cameras over time (0.5x to 1.5x the backoff) so that a
/// server restart is not met by every camera at the same instant.
struct Jitter(u64);

impl Jitter {
    fn new(seed: &str) -> Self {
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        Self(
            seed.bytes()
                .fold(u64::from(t) | 1, |h, b| h.rotate_left(5) ^ u64::from(b)),
        )
    }

    fn apply(&mut self, d: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        d.mul_f64(0.5 + (self.0 % 1000) as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic while reading one camera ends that connection, not the camera's task: it is
    /// told as an internal error, and the camera connects again.
    #[tokio::test(start_paused = true)]
    async fn a_panic_while_reading_a_camera_ends_only_that_connection() {
        let (state_tx, mut state_rx) = watch::channel(CameraState::Connecting);
        let seen = tokio::spawn(async move {
            let mut seen = Vec::new();
            while state_rx.changed().await.is_ok() {
                seen.push(state_rx.borrow_and_update().clone());
            }
            seen
        });
        let counters = CameraCounters::default();
        let (_stop, shutdown) = watch::channel(false);
        let calls = std::sync::atomic::AtomicU32::new(0);
        let url = Url::parse("rtsp://10.0.0.1/ch1").unwrap();
        supervise(
            &Arc::from("cam-1"),
            &url,
            Timeouts::default(),
            &state_tx,
            &counters,
            shutdown,
            || {
                let call = calls.fetch_add(1, Ordering::Relaxed);
                async move {
                    assert!(call > 0, "a malformed packet nobody foresaw");
                    Ended::Shutdown
                }
            },
        )
        .await;
        drop(state_tx);
        let seen = seen.await.unwrap();
        assert_eq!(calls.load(Ordering::Relaxed), 2, "connected again");
        assert_eq!(counters.reconnects.load(Ordering::Relaxed), 1);
        let backoff = seen
            .iter()
            .find_map(|s| match s {
                CameraState::Backoff { error, .. } => Some(error.clone()),
                _ => None,
            })
            .expect("a backoff after the panic");
        assert_eq!(*backoff.kind(), ErrorKind::Internal);
        assert_eq!(backoff.kind().label(), "internal");
        assert!(
            backoff
                .detail()
                .unwrap()
                .contains("a malformed packet nobody foresaw"),
            "{backoff:?}"
        );
        assert!(matches!(seen.last(), Some(CameraState::Stopped)));
    }

    #[test]
    fn credentials_leave_the_url_and_are_decoded() {
        let url = Url::parse("rtsp://admin:p%40ss@10.1.2.3:554/ch1").unwrap();
        let (bare, creds) = split_credentials(&url);
        assert_eq!(bare.as_str(), "rtsp://10.1.2.3:554/ch1");
        let c = creds.unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("admin", "p@ss")
        );
        assert!(
            split_credentials(&Url::parse("rtsp://h/x").unwrap())
                .1
                .is_none()
        );
    }

    #[test]
    fn keyframe_sampling_decodes_only_random_access_points() {
        let mut s = Sampler::new(Sampling::Keyframes);
        let now = Instant::now();
        assert_eq!(s.take(true, false, now), Take::Emit);
        assert_eq!(s.take(false, false, now), Take::Skip);
        assert_eq!(s.take(false, true, now), Take::Skip);
    }

    #[test]
    fn fps_sampling_hands_on_n_a_second_and_decodes_only_the_references_between() {
        let mut s = Sampler::new(Sampling::Fps(2.0));
        let t = Instant::now();
        let at = |ms| t + Duration::from_millis(ms);
        assert_eq!(s.take(false, true, t), Take::Emit, "the first frame is due");
        assert_eq!(s.take(false, true, at(100)), Take::Skip);
        assert_eq!(
            s.take(false, false, at(100)),
            Take::DecodeOnly,
            "reference frames are needed"
        );
        assert_eq!(s.take(true, false, at(200)), Take::DecodeOnly);
        assert_eq!(s.take(false, true, at(520)), Take::Emit);
        // 25 frames a second of P-frames for 10 s: 2 handed on a second, the rest decoded only.
        let mut s = Sampler::new(Sampling::Fps(2.0));
        let takes: Vec<Take> = (0..250)
            .map(|i| s.take(i % 50 == 0, false, at(i * 40)))
            .collect();
        assert_eq!(takes.iter().filter(|t| **t == Take::Emit).count(), 20);
        assert_eq!(
            takes.iter().filter(|t| **t == Take::DecodeOnly).count(),
            230
        );
    }

    /// The reconnect policy on tokio's paused clock: the backoff doubles up to its maximum,
    /// starts over once frames flowed, and a permanent error ends in `Failed` with no retry.
    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_to_its_limit_and_starts_over_after_streaming() {
        let camera: Arc<str> = Arc::from("cam");
        let url = Url::parse("rtsp://10.1.2.3/ch1").unwrap();
        let timeouts = Timeouts {
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(8),
            ..Timeouts::default()
        };
        let (state, mut states) = watch::channel(CameraState::Connecting);
        let counters = CameraCounters::default();
        let (stop, shutdown) = watch::channel(false);
        // Six refused connections, one that streamed, one more refused, then a 401.
        let script: Vec<(ErrorKind, bool)> = std::iter::repeat_n(ErrorKind::Refused, 6)
            .map(|k| (k, false))
            .chain([(ErrorKind::ServerEnded, true), (ErrorKind::Refused, false)])
            .chain([(ErrorKind::Unauthorized, false)])
            .collect();
        let script = std::sync::Mutex::new(script.into_iter());
        let delays = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = delays.clone();
        // Notes each wait; once the camera has failed for good, stops it as shutdown would.
        let watcher = tokio::spawn(async move {
            while states.changed().await.is_ok() {
                match &*states.borrow() {
                    CameraState::Backoff { retry_in, .. } => seen.lock().unwrap().push(*retry_in),
                    CameraState::Failed { error } => {
                        assert_eq!(error.kind(), &ErrorKind::Unauthorized);
                        let _ = stop.send(true);
                    }
                    _ => {}
                }
            }
        });
        let started = tokio::time::Instant::now();
        supervise(&camera, &url, timeouts, &state, &counters, shutdown, || {
            let (kind, streamed) = script.lock().unwrap().next().expect("scripted");
            async move {
                tokio::task::yield_now().await;
                ended(kind.into(), streamed)
            }
        })
        .await;
        let CameraState::Stopped = *state.borrow() else {
            panic!("{:?}", *state.borrow());
        };
        drop(state);
        watcher.await.unwrap();
        // Jitter spreads each wait over half to one and a half times the backoff.
        let delays = delays.lock().unwrap().clone();
        let nominal = [1, 2, 4, 8, 8, 8, 1, 2];
        assert_eq!(delays.len(), nominal.len(), "{delays:?}");
        for (d, n) in delays.iter().zip(nominal) {
            let n = Duration::from_secs(n);
            assert!(
                *d >= n / 2 && *d < n * 3 / 2,
                "{d:?} for a backoff of {n:?}"
            );
        }
        assert_eq!(counters.reconnects.load(Ordering::Relaxed), 8);
        // The paused clock advanced by exactly the waits: nothing slept for real.
        let waited: Duration = delays.iter().sum();
        assert!(started.elapsed() >= waited);
    }

    #[test]
    fn jitter_stays_within_half_and_one_and_a_half() {
        let mut j = Jitter::new("cam1");
        for _ in 0..1000 {
            let d = j.apply(Duration::from_secs(10));
            assert!(
                d >= Duration::from_secs(5) && d < Duration::from_secs(15),
                "{d:?}"
            );
        }
    }
}
