//! The GStreamer-native backend: an `rtspsrc` pipeline for cameras retina cannot handle,
//! and a looping file source (raw H.264/H.265 or MP4) for replay and tests. Frames come out
//! in the same [`Frame`] and [`CameraHandle`] as the retina backend's.
//!
//! `source ! parsebin ! decodebin ! videoscale ! width=side ! videoconvert ! RGB ! appsink`.
//! In `keyframes` mode a probe on parsebin's output drops every delta unit before the
//! decoder, so here too only keyframes are decoded. `fps = N` decodes everything and keeps
//! N frames a second (the retina backend skips disposable frames before decoding instead).
//! Verify mode ([`FrameSlot::set_verify`]) lets every frame through from the next keyframe,
//! as on the retina backend.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use sharpeyes_config::Sampling;
use tokio::sync::watch;
use url::Url;

use crate::camera::{
    CameraCounters, CameraHandle, CameraState, Ended, Timeouts, ended, split_credentials, supervise,
};
use crate::error::{Error, ErrorKind};
use crate::frame::{Frame, FrameSlot};

/// Keyframe timestamps remembered for the sink to recognise them (a few GOPs' worth).
const KEYFRAMES_NOTED: usize = 16;

/// Where a GStreamer source reads from.
#[derive(Debug, Clone)]
pub enum GstInput {
    /// An RTSP URL; credentials in its user-info are passed to `rtspsrc` as properties.
    Rtsp { url: Url, udp: bool },
    /// A recording, replayed in a loop at its own pace.
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct GstSourceConfig {
    pub camera: Arc<str>,
    pub input: GstInput,
    pub sampling: Sampling,
    /// Width of decoded frames (the height keeps the aspect ratio).
    pub detect_side: u32,
    pub timeouts: Timeouts,
}

/// Starts a GStreamer camera task on the current tokio runtime.
pub fn spawn_gst(config: GstSourceConfig, shutdown: watch::Receiver<bool>) -> CameraHandle {
    let (state_tx, state) = watch::channel(CameraState::Connecting);
    let counters = Arc::new(CameraCounters::default());
    let frames = Arc::new(FrameSlot::default());
    let (c, f) = (counters.clone(), frames.clone());
    let span = tracing::info_span!("camera", id = %config.camera, backend = "gstreamer");
    let task = tokio::spawn(tracing::Instrument::instrument(
        run(config, state_tx, c, f, shutdown),
        span,
    ));
    CameraHandle {
        state,
        counters,
        frames,
        task,
    }
}

impl GstInput {
    /// The input as a URL, for errors (a recording as `file://`).
    fn url(&self) -> Url {
        match self {
            Self::Rtsp { url, .. } => url.clone(),
            Self::File(path) => std::path::absolute(path)
                .ok()
                .and_then(|p| Url::from_file_path(p).ok())
                .unwrap_or_else(|| Url::parse("file:///").expect("a URL")),
        }
    }
}

async fn run(
    config: GstSourceConfig,
    state: watch::Sender<CameraState>,
    counters: Arc<CameraCounters>,
    frames: Arc<FrameSlot>,
    shutdown: watch::Receiver<bool>,
) {
    let run_once = || run_once(&config, &state, &counters, &frames);
    supervise(
        &config.camera,
        &config.input.url(),
        config.timeouts,
        &state,
        &counters,
        shutdown,
        run_once,
    )
    .await;
}

/// Runs one pipeline until it ends.
async fn run_once(
    config: &GstSourceConfig,
    state: &watch::Sender<CameraState>,
    counters: &Arc<CameraCounters>,
    frames: &Arc<FrameSlot>,
) -> Ended {
    if let Err(e) = crate::decode::init() {
        return ended(e, false);
    }
    let last_frame = Arc::new(AtomicU64::new(0));
    let streaming = Arc::new(AtomicBool::new(false));
    let pipeline = match build(config, counters, frames, &last_frame, &streaming) {
        Ok(p) => Running(p),
        Err(e) => return ended(e, false),
    };
    let pipeline = &pipeline.0;
    let Some(bus) = pipeline.bus() else {
        return ended(local("pipeline without a bus"), false);
    };
    let mut messages = bus.stream();
    if let Err(e) = pipeline.set_state(gst::State::Playing) {
        let error =
            Error::with_detail(ErrorKind::Protocol, format!("pipeline does not start: {e}"));
        return ended(error, false);
    }
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            msg = messages.next() => {
                let Some(msg) = msg else { break ended(local("the pipeline's bus closed"), false) };
                match msg.view() {
                    gst::MessageView::Error(e) => {
                        let err = e.error();
                        let streamed = streaming.load(Ordering::Relaxed);
                        let kind = if err.matches(gst::ResourceError::NotAuthorized) {
                            ErrorKind::Unauthorized
                        } else if err.matches(gst::ResourceError::NotFound) {
                            ErrorKind::NotFound
                        } else if err.matches(gst::ResourceError::OpenRead) || err.matches(gst::ResourceError::OpenReadWrite) {
                            ErrorKind::Unreachable
                        } else {
                            ErrorKind::Protocol
                        };
                        // GStreamer's text quotes the server: the detail, for the debug log.
                        break ended(Error::with_detail(kind, format!("{err} ({:?})", e.debug())), streamed);
                    }
                    gst::MessageView::Eos(_) => {
                        if matches!(config.input, GstInput::File(_)) {
                            // Replay: back to the start.
                            let _ = pipeline.seek_simple(gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT, gst::ClockTime::ZERO);
                        } else {
                            break ended(ErrorKind::ServerEnded.into(), streaming.load(Ordering::Relaxed));
                        }
                    }
                    _ => {}
                }
            }
            _ = tick.tick() => {
                if streaming.load(Ordering::Relaxed) && *state.borrow() != CameraState::Streaming {
                    state.send_replace(CameraState::Streaming);
                }
                let last = last_frame.load(Ordering::Relaxed);
                let since = started.elapsed().saturating_sub(Duration::from_millis(last));
                let limit = if streaming.load(Ordering::Relaxed) { config.timeouts.stall } else { config.timeouts.connect + config.timeouts.stall };
                if since > limit {
                    break ended(ErrorKind::Stall(limit).into(), streaming.load(Ordering::Relaxed));
                }
            }
        }
    }
}

/// A pipeline that is stopped however its task ends: shutdown cancels `run_once` at any
/// await, and a pipeline dropped while PLAYING makes GStreamer abort the process.
struct Running(gst::Pipeline);

fn local(what: &str) -> Error {
    Error::with_detail(ErrorKind::Local, what)
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

fn build(
    config: &GstSourceConfig,
    counters: &Arc<CameraCounters>,
    frames: &Arc<FrameSlot>,
    last_frame: &Arc<AtomicU64>,
    streaming: &Arc<AtomicBool>,
) -> Result<gst::Pipeline, Error> {
    let (source, sync) = match &config.input {
        GstInput::Rtsp { udp, .. } => (
            format!(
                "rtspsrc name=src latency=200 protocols={}",
                if *udp { "udp" } else { "tcp" }
            ),
            false,
        ),
        GstInput::File(_) => ("filesrc name=src".to_owned(), true),
    };
    let launch = format!(
        "{source} ! parsebin name=parse ! decodebin ! videoscale ! video/x-raw,width={},pixel-aspect-ratio=1/1 ! videoconvert ! video/x-raw,format=RGB ! appsink name=sink sync={sync} max-buffers=2 drop=true",
        config.detect_side / 4 * 4
    );
    let pipeline = gst::parse::launch(&launch)
        .map_err(|e| Error::with_detail(ErrorKind::Decode, format!("building the pipeline: {e}")))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| local("not a pipeline"))?;
    let src = pipeline.by_name("src").ok_or_else(|| local("no source"))?;
    match &config.input {
        GstInput::Rtsp { url, .. } => {
            let (bare, creds) = split_credentials(url);
            src.set_property("location", bare.as_str());
            if let Some(c) = creds {
                src.set_property("user-id", c.username);
                src.set_property("user-pw", c.password);
            }
        }
        GstInput::File(path) => {
            if !path.is_file() {
                return Err(Error::with_detail(
                    ErrorKind::NotFound,
                    format!("file {} does not exist", path.display()),
                ));
            }
            src.set_property("location", path.to_string_lossy().as_ref());
        }
    }
    // Verify mode as of the last keyframe (switching mid-GOP would decode frames whose
    // references were dropped): in `keyframes` mode delta units then pass the probe. Decoded
    // frames do not reliably say whether they were keyframes, so the probe notes the
    // keyframes' timestamps for the sink.
    let verify_latched = Arc::new(AtomicBool::new(false));
    let keyframe_pts: Arc<Mutex<VecDeque<u64>>> = Arc::default();
    if config.sampling == Sampling::Keyframes {
        let parse = pipeline
            .by_name("parse")
            .ok_or_else(|| local("no parsebin"))?;
        let (skipped, asked, latched, keys) = (
            counters.clone(),
            frames.clone(),
            verify_latched.clone(),
            keyframe_pts.clone(),
        );
        parse.connect_pad_added(move |_, pad| {
            let (skipped, asked, latched, keys) = (
                skipped.clone(),
                asked.clone(),
                latched.clone(),
                keys.clone(),
            );
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                let Some(b) = info.buffer() else {
                    return gst::PadProbeReturn::Ok;
                };
                if !b.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                    latched.store(asked.verify_asked(), Ordering::Relaxed);
                    if let Some(pts) = b.pts() {
                        let mut keys = keys.lock().unwrap_or_else(|e| e.into_inner());
                        if keys.len() == KEYFRAMES_NOTED {
                            keys.pop_front();
                        }
                        keys.push_back(pts.nseconds());
                    }
                    gst::PadProbeReturn::Ok
                } else if latched.load(Ordering::Relaxed) {
                    gst::PadProbeReturn::Ok
                } else {
                    skipped.skipped.fetch_add(1, Ordering::Relaxed);
                    gst::PadProbeReturn::Drop
                }
            });
        });
    }
    let sink = pipeline
        .by_name("sink")
        .and_then(|s| s.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| local("no appsink"))?;
    let (camera, frames, counters) = (config.camera.clone(), frames.clone(), counters.clone());
    let (last_frame, streaming) = (last_frame.clone(), streaming.clone());
    let (latched, keys) = (verify_latched.clone(), keyframe_pts.clone());
    let every = match config.sampling {
        Sampling::Fps(fps) => Duration::from_secs_f64(1.0 / fps),
        _ => Duration::ZERO,
    };
    let keyframes_only = config.sampling == Sampling::Keyframes;
    let started = Instant::now();
    let mut next_due = Duration::ZERO;
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let now = started.elapsed();
                last_frame.store(now.as_millis() as u64, Ordering::Relaxed);
                streaming.store(true, Ordering::Relaxed);
                let verifying = if keyframes_only {
                    latched.load(Ordering::Relaxed)
                } else {
                    frames.verify_asked()
                };
                if now < next_due && !verifying {
                    return Ok(gst::FlowSuccess::Ok);
                }
                next_due = now + every;
                let (Some(buffer), Some(caps)) = (sample.buffer(), sample.caps()) else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let s = caps.structure(0).ok_or(gst::FlowError::NotNegotiated)?;
                let (w, h) = (
                    s.get::<i32>("width").unwrap_or(0) as usize,
                    s.get::<i32>("height").unwrap_or(0) as usize,
                );
                let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                let stride = (w * 3).div_ceil(4) * 4;
                if w == 0 || h == 0 || map.len() < stride * h {
                    counters.decode.errors.fetch_add(1, Ordering::Relaxed);
                    return Ok(gst::FlowSuccess::Ok);
                }
                let rgb: Vec<u8> = map
                    .chunks(stride)
                    .take(h)
                    .flat_map(|row| &row[..w * 3])
                    .copied()
                    .collect();
                counters.decode.decoded.fetch_add(1, Ordering::Relaxed);
                let keyframe = match (keyframes_only, verifying) {
                    (true, false) => true,
                    (true, true) => buffer.pts().is_some_and(|pts| {
                        keys.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .contains(&pts.nseconds())
                    }),
                    (false, _) => !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
                };
                frames.put(Frame {
                    camera: camera.clone(),
                    width: w as u32,
                    height: h as u32,
                    rgb,
                    received_at: SystemTime::now(),
                    keyframe,
                    verifying,
                });
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    Ok(pipeline)
}
