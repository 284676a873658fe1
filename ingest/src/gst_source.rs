//! The GStreamer-native backend: an `rtspsrc` pipeline for cameras retina cannot handle,
//! and a looping file source (raw H.264/H.265 or MP4) for replay and tests. Frames come out
//! in the same [`Frame`] and [`CameraHandle`] as the retina backend's.
//!
//! `source ! parsebin ! decodebin ! videoscale ! width=side ! videoconvert ! RGB ! appsink`.
//! In `keyframes` mode a probe on parsebin's output drops every delta unit before the
//! decoder, so here too only keyframes are decoded. `fps = N` decodes everything and keeps
//! N frames a second (the retina backend skips disposable frames before decoding instead).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use sharpeyes_config::Sampling;
use tokio::sync::watch;
use url::Url;

use crate::camera::{
    CameraCounters, CameraHandle, CameraState, Ended, Timeouts, retry, split_credentials, supervise,
};
use crate::frame::{Frame, FrameSlot};

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
        full_rate: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        task,
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
        return Ended::Failed(e.0);
    }
    let last_frame = Arc::new(AtomicU64::new(0));
    let streaming = Arc::new(AtomicBool::new(false));
    let pipeline = match build(config, counters, frames, &last_frame, &streaming) {
        Ok(p) => Running(p),
        Err(reason) => return Ended::Failed(reason),
    };
    let pipeline = &pipeline.0;
    let bus = pipeline
        .bus()
        .ok_or_else(|| "pipeline without a bus".to_owned());
    let bus = match bus {
        Ok(b) => b,
        Err(reason) => return Ended::Failed(reason),
    };
    let mut messages = bus.stream();
    if let Err(e) = pipeline.set_state(gst::State::Playing) {
        return retry(format!("pipeline does not start: {e}"), false);
    }
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            msg = messages.next() => {
                let Some(msg) = msg else { break retry("the pipeline's bus closed".into(), false) };
                match msg.view() {
                    gst::MessageView::Error(e) => {
                        let err = e.error();
                        let streamed = streaming.load(Ordering::Relaxed);
                        if err.matches(gst::ResourceError::NotAuthorized) {
                            break Ended::Failed("401 Unauthorized: wrong user or password".into());
                        } else if err.matches(gst::ResourceError::NotFound) {
                            break Ended::Failed(format!("not found: {err}"));
                        }
                        break retry(format!("{err}"), streamed);
                    }
                    gst::MessageView::Eos(_) => {
                        if matches!(config.input, GstInput::File(_)) {
                            // Replay: back to the start.
                            let _ = pipeline.seek_simple(gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT, gst::ClockTime::ZERO);
                        } else {
                            break retry("the server ended the stream".into(), streaming.load(Ordering::Relaxed));
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
                    break retry(format!("no frame for {since:?} (stall)"), streaming.load(Ordering::Relaxed));
                }
            }
        }
    }
}

/// A pipeline that is stopped however its task ends: shutdown cancels `run_once` at any
/// await, and a pipeline dropped while PLAYING makes GStreamer abort the process.
struct Running(gst::Pipeline);

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
) -> Result<gst::Pipeline, String> {
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
        .map_err(|e| format!("building the pipeline: {e}"))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| "not a pipeline".to_owned())?;
    let src = pipeline.by_name("src").ok_or("no source")?;
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
                return Err(format!("file {} does not exist", path.display()));
            }
            src.set_property("location", path.to_string_lossy().as_ref());
        }
    }
    if config.sampling == Sampling::Keyframes {
        let parse = pipeline.by_name("parse").ok_or("no parsebin")?;
        let skipped = counters.clone();
        parse.connect_pad_added(move |_, pad| {
            let skipped = skipped.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                match info.buffer() {
                    Some(b) if b.flags().contains(gst::BufferFlags::DELTA_UNIT) => {
                        skipped.skipped.fetch_add(1, Ordering::Relaxed);
                        gst::PadProbeReturn::Drop
                    }
                    _ => gst::PadProbeReturn::Ok,
                }
            });
        });
    }
    let sink = pipeline
        .by_name("sink")
        .and_then(|s| s.downcast::<gst_app::AppSink>().ok())
        .ok_or("no appsink")?;
    let (camera, frames, counters) = (config.camera.clone(), frames.clone(), counters.clone());
    let (last_frame, streaming) = (last_frame.clone(), streaming.clone());
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
                if now < next_due {
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
                frames.put(Frame {
                    camera: camera.clone(),
                    width: w as u32,
                    height: h as u32,
                    rgb,
                    received_at: SystemTime::now(),
                    keyframe: keyframes_only
                        || !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
                });
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    Ok(pipeline)
}
