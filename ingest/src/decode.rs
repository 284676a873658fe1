//! Access units in, RGB frames at the detection size out.
//!
//! Three ways, first that starts wins: a hardware decoder through GStreamer when one is
//! present (and the camera allows it); libavcodec directly ([`crate::libav`]), which can
//! skip the loop filter on keyframes nothing refers to; GStreamer's `avdec_*` in
//! `appsrc ! parse ! decoder ! videoscale ! caps ! videoconvert ! RGB ! appsink`.
//! Software decoders run one thread per camera (many cameras share the cores; a thread per
//! camera per core would only add contention), and scale straight to the size analytics needs.
//! `SHARPEYES_DECODER=gstreamer` skips libavcodec (for comparison, or a library that
//! misbehaves).

use std::collections::VecDeque;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::cpu::Stage;
use crate::error::{Error, ErrorKind};
use crate::frame::Frame;

/// Video codecs the decoder takes, in Annex B byte-stream form (one access unit per push).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    H264,
    H265,
}

impl Codec {
    /// From an RTP/SDP encoding name (`h264`, `H265`...).
    pub fn from_encoding(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "h264" => Some(Self::H264),
            "h265" | "hevc" => Some(Self::H265),
            _ => None,
        }
    }

    fn caps(self) -> &'static str {
        match self {
            Self::H264 => "video/x-h264,stream-format=byte-stream,alignment=au",
            Self::H265 => "video/x-h265,stream-format=byte-stream,alignment=au",
        }
    }

    fn parser(self) -> &'static str {
        match self {
            Self::H264 => "h264parse",
            Self::H265 => "h265parse",
        }
    }

    /// Decoders by preference: hardware first, software last.
    fn decoders(self) -> &'static [&'static str] {
        match self {
            Self::H264 => &[
                "nvh264dec",
                "vah264dec",
                "vaapih264dec",
                "v4l2h264dec",
                "avdec_h264",
            ],
            Self::H265 => &[
                "nvh265dec",
                "vah265dec",
                "vaapih265dec",
                "v4l2h265dec",
                "avdec_h265",
            ],
        }
    }
}

/// The frame size to decode to: the stream's aspect kept, the longer side at most `side`,
/// width a multiple of 4 so RGB rows carry no padding.
pub fn output_size(width: u32, height: u32, side: u32) -> (u32, u32) {
    let scale = (f64::from(side) / f64::from(width.max(height))).min(1.0);
    let w = ((f64::from(width) * scale / 4.0).round() as u32 * 4).max(4);
    let h = ((f64::from(height) * scale / 2.0).round() as u32 * 2).max(2);
    (w, h)
}

pub(crate) fn init() -> Result<(), Error> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| gst::init().map_err(|e| format!("GStreamer does not start: {e}")))
        .clone()
        .map_err(|e| Error::with_detail(ErrorKind::Local, e))
}

/// Counters a decoder keeps, for metrics.
#[derive(Debug, Default)]
pub struct DecodeCounters {
    /// Access units given to the decoder: every one of them is decoded.
    pub pushed: AtomicU64,
    /// Of those, decoded only as references for later frames, never handed on.
    pub decode_only: AtomicU64,
    /// Frames handed on, scaled to RGB.
    pub decoded: AtomicU64,
    pub errors: AtomicU64,
}

/// The software decoders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Software {
    /// libavcodec called directly (the default).
    Libav,
    /// GStreamer's `avdec_*` in a pipeline.
    Gstreamer,
}

/// One camera's decoder. Dropping it stops it.
pub struct Decoder {
    inner: Inner,
    counters: Arc<DecodeCounters>,
    /// Frames pushed from now on are marked [`Frame::verifying`].
    verifying: bool,
    /// Keyframes pushed from now on are the only units decoded (see [`Decoder::set_intra_only`]).
    intra_only: bool,
}

enum Inner {
    Gst(GstDecoder),
    Libav(crate::libav::Decoder),
}

/// The decoder libavcodec's absence or refusal sent to GStreamer, said once per process.
fn libav_unavailable(why: &str) {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        tracing::info!(
            reason = why,
            "decoding through GStreamer's avdec, not libavcodec directly"
        );
    });
}

/// Whether `SHARPEYES_DECODER=gstreamer` asks to leave libavcodec alone.
fn libav_wanted() -> bool {
    static WANTED: OnceLock<bool> = OnceLock::new();
    *WANTED.get_or_init(|| {
        std::env::var("SHARPEYES_DECODER").map_or(true, |v| !v.eq_ignore_ascii_case("gstreamer"))
    })
}

impl Decoder {
    /// Starts a decoder for `codec` scaling to `out_size` RGB; each frame goes to `on_frame`
    /// (on the decoder's thread). `hardware: false` forces software.
    pub fn new(
        camera: Arc<str>,
        codec: Codec,
        out_size: (u32, u32),
        hardware: bool,
        counters: Arc<DecodeCounters>,
        on_frame: impl Fn(Frame) + Send + Sync + 'static,
    ) -> Result<Self, Error> {
        let software = if libav_wanted() {
            Software::Libav
        } else {
            Software::Gstreamer
        };
        Self::start(
            camera, codec, out_size, hardware, software, counters, on_frame,
        )
    }

    /// A software decoder of the kind asked for: for benchmarks and tests that compare them.
    /// Falls back to GStreamer's when libavcodec is not there.
    pub fn software(
        camera: Arc<str>,
        codec: Codec,
        out_size: (u32, u32),
        software: Software,
        counters: Arc<DecodeCounters>,
        on_frame: impl Fn(Frame) + Send + Sync + 'static,
    ) -> Result<Self, Error> {
        Self::start(camera, codec, out_size, false, software, counters, on_frame)
    }

    fn start(
        camera: Arc<str>,
        codec: Codec,
        out_size: (u32, u32),
        hardware: bool,
        software: Software,
        counters: Arc<DecodeCounters>,
        on_frame: impl Fn(Frame) + Send + Sync + 'static,
    ) -> Result<Self, Error> {
        let on_frame: Arc<dyn Fn(Frame) + Send + Sync> = Arc::new(on_frame);
        let inner = |inner| Self {
            inner,
            counters: counters.clone(),
            verifying: false,
            intra_only: false,
        };
        let start_gst = |elements: fn(&str) -> bool| {
            GstDecoder::new(
                camera.clone(),
                codec,
                out_size,
                elements,
                counters.clone(),
                on_frame.clone(),
            )
        };
        if hardware && let Ok(d) = start_gst(|e| !e.starts_with("avdec")) {
            return Ok(inner(Inner::Gst(d)));
        }
        if software == Software::Libav {
            match crate::libav::Decoder::new(
                camera.clone(),
                codec,
                out_size,
                counters.clone(),
                on_frame.clone(),
            ) {
                Ok(d) => return Ok(inner(Inner::Libav(d))),
                Err(e) => libav_unavailable(&e),
            }
        }
        start_gst(|e| e.starts_with("avdec")).map(|d| inner(Inner::Gst(d)))
    }

    /// Marks the frames pushed from now on as decoded in verify mode.
    pub fn set_verifying(&mut self, on: bool) {
        self.verifying = on;
    }

    /// From now on only keyframes are pushed, each on its own (keyframe sampling): nothing
    /// refers to them, so libavcodec skips their loop filter and hands each frame on before
    /// the next unit arrives, where a stream with B-frames would have it held back.
    pub fn set_intra_only(&mut self, on: bool) {
        self.intra_only = on;
    }

    /// The decoder in use (`libavcodec h264`, `avdec_h264`, `nvh264dec`...).
    pub fn element(&self) -> &str {
        match &self.inner {
            Inner::Gst(d) => &d.element,
            Inner::Libav(d) => d.name(),
        }
    }

    /// Queues one access unit. An error from the decoder (a corrupt bitstream it could not
    /// get past, or a decoder that cannot keep up) comes back here; the caller builds a new
    /// decoder and resumes at a keyframe.
    pub fn push(
        &mut self,
        access_unit: Vec<u8>,
        received_at: SystemTime,
        keyframe: bool,
    ) -> Result<(), Error> {
        self.push_flagged(access_unit, Some(received_at), keyframe)
    }

    /// Queues one access unit that later frames refer to but nobody wants to see: it is
    /// decoded, then dropped before scaling and conversion. `fps` sampling decodes the
    /// frames between its samples this way.
    pub fn push_decode_only(&mut self, access_unit: Vec<u8>, keyframe: bool) -> Result<(), Error> {
        self.push_flagged(access_unit, None, keyframe)
    }

    fn push_flagged(
        &mut self,
        access_unit: Vec<u8>,
        received_at: Option<SystemTime>,
        keyframe: bool,
    ) -> Result<(), Error> {
        if received_at.is_none() {
            self.counters.decode_only.fetch_add(1, Ordering::Relaxed);
        }
        self.counters.pushed.fetch_add(1, Ordering::Relaxed);
        let verifying = self.verifying;
        match &mut self.inner {
            Inner::Gst(d) => d.push_flagged(access_unit, received_at, keyframe, verifying),
            Inner::Libav(d) => {
                let wanted = received_at.map(|received_at| crate::libav::Wanted {
                    received_at,
                    keyframe,
                    verifying,
                });
                d.push(access_unit, wanted, keyframe && self.intra_only)
                    .map_err(|e| {
                        self.counters.errors.fetch_add(1, Ordering::Relaxed);
                        decode_error(format!("{}: {e}", d.name()))
                    })
            }
        }
    }
}

/// One camera's GStreamer decoding pipeline. Dropping it stops the pipeline.
struct GstDecoder {
    pipeline: gst::Pipeline,
    appsrc: gst_app::AppSrc,
    element: String,
    pending: Arc<Mutex<VecDeque<Pending>>>,
    /// Timestamps of frames pushed decode-only, oldest first.
    decode_only: Arc<Mutex<VecDeque<u64>>>,
    counters: Arc<DecodeCounters>,
    next_pts: u64,
}

/// A unit pushed to be handed on, waiting for its frame: what the frame will carry.
#[derive(Debug, Clone, Copy)]
struct Pending {
    pts: u64,
    received_at: SystemTime,
    keyframe: bool,
    verifying: bool,
}

/// How many pushed access units' arrival times (and decode-only marks) are remembered for
/// their frames: a decoder that falls behind must not lose them, or decode-only frames
/// would leak out and cost the scaling they exist to avoid.
const PENDING: usize = 1024;

impl GstDecoder {
    /// Builds and starts a pipeline decoding `codec` to `out_size` RGB with the first of
    /// `elements` that starts; each frame goes to `on_frame` (on a GStreamer thread).
    fn new(
        camera: Arc<str>,
        codec: Codec,
        out_size: (u32, u32),
        elements: fn(&str) -> bool,
        counters: Arc<DecodeCounters>,
        on_frame: Arc<dyn Fn(Frame) + Send + Sync>,
    ) -> Result<Self, Error> {
        init()?;
        let mut last = decode_error("no decoder found");
        for element in codec.decoders().iter().filter(|d| elements(d)) {
            if gst::ElementFactory::find(element).is_none() {
                continue;
            }
            match Self::build(
                camera.clone(),
                codec,
                element,
                out_size,
                counters.clone(),
                on_frame.clone(),
            ) {
                Ok(d) => return Ok(d),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn build(
        camera: Arc<str>,
        codec: Codec,
        element: &str,
        (w, h): (u32, u32),
        counters: Arc<DecodeCounters>,
        on_frame: Arc<dyn Fn(Frame) + Send + Sync>,
    ) -> Result<Self, Error> {
        let threads = if element.starts_with("avdec") {
            " max-threads=1"
        } else {
            ""
        };
        let launch = format!(
            "appsrc name=src format=time ! {} ! {element} name=dec{threads} ! videoscale ! video/x-raw,width={w},height={h} ! videoconvert ! video/x-raw,format=RGB ! appsink name=sink sync=false",
            codec.parser()
        );
        let err =
            |what: &str, e: &dyn std::fmt::Display| decode_error(format!("{element}: {what}: {e}"));
        let pipeline = gst::parse::launch(&launch)
            .map_err(|e| err("building the pipeline", &e))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| decode_error("not a pipeline"))?;
        let by_name = |n: &str| {
            pipeline
                .by_name(n)
                .ok_or_else(|| decode_error(format!("no `{n}` in pipeline")))
        };
        let appsrc = by_name("src")?
            .downcast::<gst_app::AppSrc>()
            .map_err(|_| decode_error("src is not an appsrc"))?;
        appsrc.set_caps(Some(
            &gst::Caps::from_str(codec.caps()).map_err(|e| err("caps", &e))?,
        ));
        let appsink = by_name("sink")?
            .downcast::<gst_app::AppSink>()
            .map_err(|_| decode_error("sink is not an appsink"))?;

        // Decode-only frames leave right after the decoder, before scaling and conversion.
        // Decoders are meant to drop them themselves (`DECODE_ONLY`), but the flag does not
        // survive h264parse, so they are dropped here by their timestamps.
        let decode_only: Arc<Mutex<VecDeque<u64>>> = Arc::default();
        let d = decode_only.clone();
        // The streaming thread's CPU clock at the last stage boundary: what it spent up to the
        // decoder's output is decoding, from there to the appsink scaling and conversion.
        let mark: Arc<CpuMark> = Arc::default();
        let (m, sink_mark) = (mark.clone(), mark.clone());
        by_name("dec")?
            .static_pad("src")
            .ok_or_else(|| decode_error(format!("{element} has no src pad")))?
            .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                cpu_mark(&m, Stage::Decode);
                let Some(pts) = info.buffer().and_then(|b| b.pts()) else {
                    return gst::PadProbeReturn::Ok;
                };
                let mut d = d.lock().unwrap_or_else(|e| e.into_inner());
                while d.front().is_some_and(|t| *t < pts.nseconds()) {
                    d.pop_front();
                }
                if d.front() == Some(&pts.nseconds()) {
                    d.pop_front();
                    gst::PadProbeReturn::Drop
                } else {
                    gst::PadProbeReturn::Ok
                }
            });
        let pending: Arc<Mutex<VecDeque<Pending>>> = Arc::default();
        let (p, c) = (pending.clone(), counters.clone());
        appsink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let _scaled = MarkOnDrop(&sink_mark, Stage::Scale);
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let Some(buffer) = sample.buffer() else {
                        return Ok(gst::FlowSuccess::Ok);
                    };
                    let pts = buffer.pts().map_or(0, gst::ClockTime::nseconds);
                    let Pending {
                        received_at,
                        keyframe,
                        verifying,
                        ..
                    } = {
                        let mut p = p.lock().unwrap_or_else(|e| e.into_inner());
                        while p.front().is_some_and(|u| u.pts < pts) {
                            p.pop_front();
                        }
                        p.front()
                            .filter(|u| u.pts == pts)
                            .copied()
                            .unwrap_or(Pending {
                                pts,
                                received_at: SystemTime::now(),
                                keyframe: false,
                                verifying: false,
                            })
                    };
                    let Ok(map) = buffer.map_readable() else {
                        return Ok(gst::FlowSuccess::Ok);
                    };
                    if map.len() != (w * h * 3) as usize {
                        c.errors.fetch_add(1, Ordering::Relaxed);
                        return Ok(gst::FlowSuccess::Ok);
                    }
                    c.decoded.fetch_add(1, Ordering::Relaxed);
                    on_frame(Frame {
                        camera: camera.clone(),
                        width: w,
                        height: h,
                        rgb: map.to_vec(),
                        received_at,
                        keyframe,
                        verifying,
                    });
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| err("starting", &e))?;
        Ok(Self {
            pipeline,
            appsrc,
            element: element.to_owned(),
            pending,
            decode_only,
            counters,
            next_pts: 0,
        })
    }

    /// `received_at: None` marks the unit decode-only (GStreamer's `DECODE_ONLY`).
    fn push_flagged(
        &mut self,
        access_unit: Vec<u8>,
        received_at: Option<SystemTime>,
        keyframe: bool,
        verifying: bool,
    ) -> Result<(), Error> {
        if let Some(msg) = self
            .pipeline
            .bus()
            .and_then(|b| b.pop_filtered(&[gst::MessageType::Error]))
        {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            if let gst::MessageView::Error(e) = msg.view() {
                return Err(decode_error(format!("{}: {}", self.element, e.error())));
            }
        }
        // Timestamps only identify frames here: consecutive, 40 ms apart.
        self.next_pts += Duration::from_millis(40).as_nanos() as u64;
        let mut flags = gst::BufferFlags::empty();
        if !keyframe {
            flags |= gst::BufferFlags::DELTA_UNIT;
        }
        match received_at {
            Some(received_at) => {
                let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                if p.len() == PENDING {
                    p.pop_front();
                }
                p.push_back(Pending {
                    pts: self.next_pts,
                    received_at,
                    keyframe,
                    verifying,
                });
            }
            None => {
                flags |= gst::BufferFlags::DECODE_ONLY;
                let mut d = self.decode_only.lock().unwrap_or_else(|e| e.into_inner());
                if d.len() == PENDING {
                    d.pop_front();
                }
                d.push_back(self.next_pts);
            }
        }
        let mut buffer = gst::Buffer::from_mut_slice(access_unit);
        if let Some(b) = buffer.get_mut() {
            b.set_pts(gst::ClockTime::from_nseconds(self.next_pts));
            b.set_flags(flags);
        }
        self.appsrc
            .push_buffer(buffer)
            .map(|_| ())
            .map_err(|e| decode_error(format!("{}: pushing a frame: {e:?}", self.element)))
    }
}

/// The decoder could not start or go on; GStreamer's words go to `detail`.
/// Where a streaming thread's CPU clock stood at the last stage boundary.
type CpuMark = Mutex<Option<(std::thread::ThreadId, Duration)>>;

/// Counts this thread's CPU since the last mark to `stage`, and marks now. The first mark on
/// a thread (or after the pipeline moved threads) counts nothing.
fn cpu_mark(mark: &CpuMark, stage: Stage) {
    let now = crate::cpu::thread_now();
    let me = std::thread::current().id();
    let mut m = mark.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((thread, then)) = *m {
        if thread == me {
            crate::cpu::add(stage, now.saturating_sub(then));
        }
    }
    *m = Some((me, now));
}

/// [`cpu_mark`] when the callback ends, whichever way it returns.
struct MarkOnDrop<'a>(&'a CpuMark, Stage);

impl Drop for MarkOnDrop<'_> {
    fn drop(&mut self) {
        cpu_mark(self.0, self.1);
    }
}

fn decode_error(detail: impl std::fmt::Display) -> Error {
    Error::with_detail(ErrorKind::Decode, detail)
}

impl Drop for GstDecoder {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_keeps_the_aspect_with_rows_unpadded() {
        assert_eq!(output_size(1920, 1080, 640), (640, 360));
        assert_eq!(output_size(1280, 720, 640), (640, 360));
        assert_eq!(output_size(704, 576, 640), (640, 524));
        assert_eq!(output_size(320, 240, 640), (320, 240), "never upscaled");
        assert_eq!(output_size(1080, 1920, 320).0 % 4, 0);
    }

    #[test]
    fn codecs_from_sdp_names() {
        assert_eq!(Codec::from_encoding("H264"), Some(Codec::H264));
        assert_eq!(Codec::from_encoding("h265"), Some(Codec::H265));
        assert_eq!(Codec::from_encoding("jpeg"), None);
    }
}
