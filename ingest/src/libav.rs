//! Software decoding straight on libavcodec and libswscale, loaded at run time: the same
//! decoder `avdec_h264` wraps, without the GStreamer pipeline around it.
//!
//! Why: decoding one 1080p keyframe every GOP is the largest part of a camera's CPU
//! (README, "Where the CPU goes"). A keyframe that nothing refers to needs no in-loop
//! deblocking (its picture is scaled down six times for the detector), and libavcodec can
//! skip it (`skip_loop_filter`), which `avdec_h264` does not expose: 0.89x the decode CPU
//! on the simulator's noisy 1080p keyframes. Draining after each such keyframe also hands it
//! on at once where a stream with B-frames would make the decoder hold it back by its
//! reorder depth (two keyframes, seconds, on a B-frame camera).
//!
//! The libraries are the ones GStreamer's libav plugin already loads (FFmpeg 4.x to 6.x,
//! whose `AVPacket` and `AVFrame` start with the fields read here). Anything else, or a
//! layout check that fails at load, and the caller falls back to GStreamer's decoder.

// FFI to libavcodec: every call and every struct offset lives in this file.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::SystemTime;

use libloading::Library;

use crate::cpu::{self, Stage};
use crate::decode::{Codec, DecodeCounters};
use crate::frame::Frame;
use crate::turns;

/// FFmpeg releases whose leading `AVPacket`/`AVFrame` fields are laid out as below:
/// (libavcodec, libavutil, libswscale) major versions.
const RELEASES: [(u32, u32, u32); 3] = [(59, 57, 6), (60, 58, 7), (58, 56, 5)];

// Offsets into FFmpeg's structs, the same from 4.x to 6.x (x86-64 and other LP64 targets).
const PACKET_PTS: usize = 8;
const PACKET_DATA: usize = 24;
const PACKET_SIZE: usize = 32;
const FRAME_DATA: usize = 0;
const FRAME_LINESIZE: usize = 64;
const FRAME_WIDTH: usize = 104;
const FRAME_HEIGHT: usize = 108;
const FRAME_FORMAT: usize = 116;
const FRAME_PTS: usize = 136;

const AV_PIX_FMT_RGB24: c_int = 2;
/// A triangle filter widened to the scale factor, as GStreamer's `videoscale` uses: the
/// detectors were gated (`tests/precision.rs`) on pictures scaled this way. Area averaging
/// costs 0.2 ms less a keyframe but moved an INT8 fire box 4.1 px (at 320) from the float
/// model's, past the gate.
const SWS_BILINEAR: c_int = 0x2;
const AV_LOG_QUIET: c_int = -8;
// `AVColorSpace` values and the `SWS_CS_*` matrices they map to.
const AVCOL_SPC_BT709: i64 = 1;
const AVCOL_SPC_FCC: i64 = 4;
const AVCOL_SPC_BT470BG: i64 = 5;
const AVCOL_SPC_SMPTE170M: i64 = 6;
const AVCOL_SPC_SMPTE240M: i64 = 7;
const AVCOL_SPC_BT2020_NCL: i64 = 9;
const AVCOL_SPC_BT2020_CL: i64 = 10;
const AVCOL_RANGE_JPEG: i64 = 2;
const SWS_CS_ITU709: c_int = 1;
const SWS_CS_FCC: c_int = 4;
const SWS_CS_ITU601: c_int = 5;
const SWS_CS_SMPTE240M: c_int = 7;
const SWS_CS_BT2020: c_int = 9;
/// `yuvj420p`, `yuvj422p`, `yuvj444p`: full-range formats whatever the range field says.
const FULL_RANGE_FORMATS: [c_int; 3] = [12, 13, 14];

/// Access units waiting for the decoder thread. Past this the camera starts over at the next
/// keyframe rather than queueing without bound behind a decoder that cannot keep up.
const QUEUE: usize = 256;

type Ptr = *mut c_void;

/// The functions used, resolved once per process.
struct Api {
    find_decoder_by_name: unsafe extern "C" fn(*const c_char) -> *const c_void,
    alloc_context3: unsafe extern "C" fn(*const c_void) -> Ptr,
    free_context: unsafe extern "C" fn(*mut Ptr),
    open2: unsafe extern "C" fn(Ptr, *const c_void, *mut Ptr) -> c_int,
    send_packet: unsafe extern "C" fn(Ptr, *const c_void) -> c_int,
    receive_frame: unsafe extern "C" fn(Ptr, Ptr) -> c_int,
    flush_buffers: unsafe extern "C" fn(Ptr),
    packet_alloc: unsafe extern "C" fn() -> Ptr,
    packet_free: unsafe extern "C" fn(*mut Ptr),
    new_packet: unsafe extern "C" fn(Ptr, c_int) -> c_int,
    packet_unref: unsafe extern "C" fn(Ptr),
    frame_alloc: unsafe extern "C" fn() -> Ptr,
    frame_free: unsafe extern "C" fn(*mut Ptr),
    frame_unref: unsafe extern "C" fn(Ptr),
    opt_set: unsafe extern "C" fn(Ptr, *const c_char, *const c_char, c_int) -> c_int,
    sws_get_cached_context: unsafe extern "C" fn(
        Ptr,
        c_int,
        c_int,
        c_int,
        c_int,
        c_int,
        c_int,
        c_int,
        Ptr,
        Ptr,
        *const f64,
    ) -> Ptr,
    sws_scale: unsafe extern "C" fn(
        Ptr,
        *const *const u8,
        *const c_int,
        c_int,
        c_int,
        *const *mut u8,
        *const c_int,
    ) -> c_int,
    sws_free_context: unsafe extern "C" fn(Ptr),
    sws_get_coefficients: unsafe extern "C" fn(c_int) -> *const c_int,
    sws_set_colorspace_details: unsafe extern "C" fn(
        Ptr,
        *const c_int,
        c_int,
        *const c_int,
        c_int,
        c_int,
        c_int,
        c_int,
    ) -> c_int,
    opt_get_int: unsafe extern "C" fn(Ptr, *const c_char, c_int, *mut i64) -> c_int,
    /// Kept loaded for the life of the process: the function pointers above point into them.
    _libraries: [Library; 3],
}

/// The process's libavcodec, or why there is none (said once, in the decoder's log line).
fn api() -> Result<&'static Api, &'static str> {
    static API: OnceLock<Result<Api, String>> = OnceLock::new();
    API.get_or_init(load).as_ref().map_err(String::as_str)
}

fn load() -> Result<Api, String> {
    let mut tried = Vec::new();
    for (codec, util, scale) in RELEASES {
        let names = [
            format!("libavcodec.so.{codec}"),
            format!("libavutil.so.{util}"),
            format!("libswscale.so.{scale}"),
        ];
        // SAFETY: these are FFmpeg's own libraries, whose initialisers only register codecs.
        let opened: Result<Vec<Library>, _> =
            names.iter().map(|n| unsafe { Library::new(n) }).collect();
        match opened {
            Ok(libs) => return resolve(libs, (codec, util, scale)),
            Err(_) => tried.push(names[0].clone()),
        }
    }
    Err(format!("none of {} found", tried.join(", ")))
}

fn resolve(libs: Vec<Library>, (codec, util, scale): (u32, u32, u32)) -> Result<Api, String> {
    let [avcodec, avutil, swscale]: [Library; 3] = libs
        .try_into()
        .map_err(|_| "three libraries expected".to_owned())?;
    macro_rules! sym {
        ($lib:expr, $name:literal) => {
            // SAFETY: the type is the function's C signature in FFmpeg 4.x-6.x; the library
            // stays loaded in `Api` for as long as the pointer is used.
            *unsafe { $lib.get(concat!($name, "\0").as_bytes()) }
                .map_err(|e| format!("{}: {e}", $name))?
        };
    }
    let versions: [(unsafe extern "C" fn() -> u32, u32, &str); 3] = [
        (sym!(avcodec, "avcodec_version"), codec, "libavcodec"),
        (sym!(avutil, "avutil_version"), util, "libavutil"),
        (sym!(swscale, "swscale_version"), scale, "libswscale"),
    ];
    for (version, major, name) in versions {
        // SAFETY: takes nothing, returns a number.
        let found = unsafe { version() } >> 16;
        if found != major {
            return Err(format!(
                "{name} says major version {found}, expected {major}"
            ));
        }
    }
    let log_set_level: unsafe extern "C" fn(c_int) = sym!(avutil, "av_log_set_level");
    let api = Api {
        find_decoder_by_name: sym!(avcodec, "avcodec_find_decoder_by_name"),
        alloc_context3: sym!(avcodec, "avcodec_alloc_context3"),
        free_context: sym!(avcodec, "avcodec_free_context"),
        open2: sym!(avcodec, "avcodec_open2"),
        send_packet: sym!(avcodec, "avcodec_send_packet"),
        receive_frame: sym!(avcodec, "avcodec_receive_frame"),
        flush_buffers: sym!(avcodec, "avcodec_flush_buffers"),
        packet_alloc: sym!(avcodec, "av_packet_alloc"),
        packet_free: sym!(avcodec, "av_packet_free"),
        new_packet: sym!(avcodec, "av_new_packet"),
        packet_unref: sym!(avcodec, "av_packet_unref"),
        frame_alloc: sym!(avutil, "av_frame_alloc"),
        frame_free: sym!(avutil, "av_frame_free"),
        frame_unref: sym!(avutil, "av_frame_unref"),
        opt_set: sym!(avutil, "av_opt_set"),
        sws_get_cached_context: sym!(swscale, "sws_getCachedContext"),
        sws_scale: sym!(swscale, "sws_scale"),
        sws_free_context: sym!(swscale, "sws_freeContext"),
        sws_get_coefficients: sym!(swscale, "sws_getCoefficients"),
        sws_set_colorspace_details: sym!(swscale, "sws_setColorspaceDetails"),
        opt_get_int: sym!(avutil, "av_opt_get_int"),
        _libraries: [avcodec, avutil, swscale],
    };
    // A corrupt packet is counted, not printed: libav's own messages would go to stderr.
    // SAFETY: sets a global integer.
    unsafe { log_set_level(AV_LOG_QUIET) };
    api.check_packet_layout()?;
    Ok(api)
}

/// Reads a field of a C struct at a byte offset.
///
/// SAFETY: `base` points to a live struct with a `T` at `offset`.
unsafe fn field<T: Copy>(base: Ptr, offset: usize) -> T {
    unsafe { base.cast::<u8>().add(offset).cast::<T>().read_unaligned() }
}

impl Api {
    /// `av_new_packet` must leave the size and data where this file reads them.
    fn check_packet_layout(&self) -> Result<(), String> {
        const PROBE: c_int = 4321;
        // SAFETY: a packet this function allocates and frees; fields read at the offsets
        // checked here.
        unsafe {
            let mut pkt = (self.packet_alloc)();
            if pkt.is_null() {
                return Err("av_packet_alloc failed".into());
            }
            let ok = (self.new_packet)(pkt, PROBE) == 0
                && field::<c_int>(pkt, PACKET_SIZE) == PROBE
                && !field::<*mut u8>(pkt, PACKET_DATA).is_null();
            (self.packet_free)(&mut pkt);
            if ok {
                Ok(())
            } else {
                Err("AVPacket is not laid out as expected".into())
            }
        }
    }
}

/// Metadata of a unit whose frame is wanted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wanted {
    pub received_at: SystemTime,
    pub keyframe: bool,
    pub verifying: bool,
}

struct Unit {
    data: Vec<u8>,
    pts: i64,
    /// `None`: decode-only, a reference for later frames that nobody wants to see.
    wanted: Option<Wanted>,
    /// Nothing decoded later refers to this unit: skip the loop filter, hand it on at once.
    intra_only: bool,
}

/// One camera's decoder: a thread that owns the codec context and calls `on_frame`.
/// Dropping it ends the thread.
pub(crate) struct Decoder {
    units: Option<SyncSender<Unit>>,
    thread: Option<JoinHandle<()>>,
    next_pts: i64,
    name: &'static str,
}

impl Decoder {
    /// Opens libavcodec's decoder for `codec` (one thread), scaling to `out` RGB.
    pub(crate) fn new(
        camera: Arc<str>,
        codec: Codec,
        out: (u32, u32),
        counters: Arc<DecodeCounters>,
        on_frame: Arc<dyn Fn(Frame) + Send + Sync>,
    ) -> Result<Self, String> {
        let api = api().map_err(str::to_owned)?;
        let session = Session::open(api, codec, out)?;
        let name = match codec {
            Codec::H264 => "libavcodec h264",
            Codec::H265 => "libavcodec hevc",
        };
        let (tx, rx) = sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name(format!("decode {camera}"))
            .spawn(move || run(session, rx, camera, out, &counters, &*on_frame))
            .map_err(|e| format!("starting the decoder thread: {e}"))?;
        Ok(Self {
            units: Some(tx),
            thread: Some(thread),
            next_pts: 0,
            name,
        })
    }

    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    /// Queues one access unit; an error means the decoder thread is gone (it panicked) or
    /// cannot keep up, and the caller starts a new one at the next keyframe. A unit the
    /// decoder rejects is counted in `errors` on its thread, as GStreamer's avdec skips it.
    pub(crate) fn push(
        &mut self,
        data: Vec<u8>,
        wanted: Option<Wanted>,
        intra_only: bool,
    ) -> Result<(), String> {
        self.next_pts += 1;
        let unit = Unit {
            data,
            pts: self.next_pts,
            wanted,
            intra_only,
        };
        let units = self.units.as_ref().ok_or("the decoder has stopped")?;
        units.try_send(unit).map_err(|e| match e {
            TrySendError::Full(_) => format!("{QUEUE} access units wait: decoding cannot keep up"),
            TrySendError::Disconnected(_) => "the decoder thread has ended".to_owned(),
        })
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        self.units = None; // the thread sees the channel close and ends
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The decoder thread: units in, frames out, until the sender is dropped.
fn run(
    mut session: Session,
    units: Receiver<Unit>,
    camera: Arc<str>,
    (w, h): (u32, u32),
    counters: &DecodeCounters,
    on_frame: &(dyn Fn(Frame) + Send + Sync),
) {
    let mut wanted: VecDeque<(i64, Wanted)> = VecDeque::new();
    while let Ok(unit) = units.recv() {
        // Keyframes take turns across cameras (`turns`); a full-rate decoder runs freely.
        let _turn = unit.intra_only.then(turns::wait_for_turn).flatten();
        let start = cpu::thread_now();
        let mut scaling = std::time::Duration::ZERO;
        if let Some(w) = unit.wanted {
            if wanted.len() == QUEUE {
                wanted.pop_front(); // units that never made a frame
            }
            wanted.push_back((unit.pts, w));
        }
        session.set_intra_only(unit.intra_only);
        if session.send(&unit.data, unit.pts).is_err() {
            counters.errors.fetch_add(1, Ordering::Relaxed);
        }
        if unit.intra_only {
            session.drain();
        }
        while let Some(pts) = session.receive() {
            while wanted.front().is_some_and(|(p, _)| *p < pts) {
                wanted.pop_front();
            }
            let Some((_, meta)) = wanted.front().copied().filter(|(p, _)| *p == pts) else {
                continue; // decode-only, or a frame nobody asked for
            };
            wanted.pop_front();
            // Scaling and `on_frame` (analytics' hand-off, a slot put) count as `scale`, as
            // the GStreamer path counts its appsink callback.
            let scale_start = cpu::thread_now();
            match session.scale() {
                Some(rgb) => {
                    counters.decoded.fetch_add(1, Ordering::Relaxed);
                    on_frame(Frame {
                        camera: camera.clone(),
                        width: w,
                        height: h,
                        rgb,
                        received_at: meta.received_at,
                        keyframe: meta.keyframe,
                        verifying: meta.verifying,
                    });
                }
                None => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            scaling += cpu::thread_now().saturating_sub(scale_start);
        }
        if unit.intra_only {
            session.flush();
        }
        let total = cpu::thread_now().saturating_sub(start);
        cpu::add(Stage::Scale, scaling);
        cpu::add(Stage::Decode, total.saturating_sub(scaling));
    }
}

/// An open codec context with its packet, frame and scaler.
struct Session {
    api: &'static Api,
    ctx: Ptr,
    packet: Ptr,
    frame: Ptr,
    scaler: Ptr,
    /// The scaler and the (matrix, full range) its colour conversion was last set for.
    colour: (Ptr, c_int, bool),
    out: (c_int, c_int),
    intra_only: bool,
}

// SAFETY: the session's FFmpeg objects are used by one thread at a time (it moves to the
// decoder thread once and stays there); FFmpeg contexts are not tied to a thread.
unsafe impl Send for Session {}

impl Session {
    fn open(api: &'static Api, codec: Codec, (w, h): (u32, u32)) -> Result<Self, String> {
        let name: &CStr = match codec {
            Codec::H264 => c"h264",
            Codec::H265 => c"hevc",
        };
        let out = (
            c_int::try_from(w).map_err(|_| "output width")?,
            c_int::try_from(h).map_err(|_| "output height")?,
        );
        // SAFETY: FFmpeg allocation calls; each result is checked before use and owned by
        // the session, which frees it in `drop` (a null pointer is freed as a no-op).
        unsafe {
            let decoder = (api.find_decoder_by_name)(name.as_ptr());
            if decoder.is_null() {
                return Err(format!("libavcodec has no {name:?} decoder"));
            }
            let session = Self {
                api,
                ctx: (api.alloc_context3)(decoder),
                packet: (api.packet_alloc)(),
                frame: (api.frame_alloc)(),
                scaler: std::ptr::null_mut(),
                colour: (std::ptr::null_mut(), 0, false),
                out,
                intra_only: false,
            };
            if session.ctx.is_null() || session.packet.is_null() || session.frame.is_null() {
                return Err("libavcodec could not allocate a decoder".into());
            }
            // One thread: many cameras share the cores (see `decode`).
            if (api.opt_set)(session.ctx, c"threads".as_ptr(), c"1".as_ptr(), 0) != 0 {
                return Err("libavcodec refused threads=1".into());
            }
            let rc = (api.open2)(session.ctx, decoder, std::ptr::null_mut());
            if rc != 0 {
                return Err(format!("avcodec_open2 failed ({rc})"));
            }
            Ok(session)
        }
    }

    fn set_intra_only(&mut self, on: bool) {
        if on == self.intra_only {
            return;
        }
        let value = if on { c"all" } else { c"default" };
        // SAFETY: an option of the open context, read by the decoder at each slice.
        let rc = unsafe {
            (self.api.opt_set)(self.ctx, c"skip_loop_filter".as_ptr(), value.as_ptr(), 0)
        };
        if rc == 0 {
            self.intra_only = on;
        }
    }

    fn send(&mut self, data: &[u8], pts: i64) -> Result<(), c_int> {
        let len = c_int::try_from(data.len()).map_err(|_| -1)?;
        // SAFETY: `av_new_packet` sizes the packet's buffer to `len` (plus padding), the
        // bytes are copied into it at the checked offsets, and the packet is unreferenced
        // after the send whatever its result.
        unsafe {
            let rc = (self.api.new_packet)(self.packet, len);
            if rc != 0 {
                return Err(rc);
            }
            let dst: *mut u8 = field(self.packet, PACKET_DATA);
            std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len());
            self.packet
                .cast::<u8>()
                .add(PACKET_PTS)
                .cast::<i64>()
                .write_unaligned(pts);
            let rc = (self.api.send_packet)(self.ctx, self.packet);
            (self.api.packet_unref)(self.packet);
            if rc == 0 { Ok(()) } else { Err(rc) }
        }
    }

    /// Asks for every frame held back for reordering.
    fn drain(&mut self) {
        // SAFETY: a null packet is FFmpeg's end-of-stream signal.
        unsafe { (self.api.send_packet)(self.ctx, std::ptr::null()) };
    }

    /// Leaves draining mode (and drops the references): the next unit must be a keyframe.
    fn flush(&mut self) {
        // SAFETY: resets the open context.
        unsafe { (self.api.flush_buffers)(self.ctx) };
    }

    /// The next decoded frame's timestamp, the frame kept for [`Session::scale`].
    fn receive(&mut self) -> Option<i64> {
        // SAFETY: receive into the session's frame (unreferenced first); its pts is read at
        // the offset shared by FFmpeg 4.x-6.x.
        unsafe {
            (self.api.frame_unref)(self.frame);
            // Anything but 0 (EAGAIN: wants more input; EOF: drained; an error) is no frame.
            ((self.api.receive_frame)(self.ctx, self.frame) == 0)
                .then(|| field(self.frame, FRAME_PTS))
        }
    }

    /// The frame last received, scaled to the output size as packed RGB.
    fn scale(&mut self) -> Option<Vec<u8>> {
        let (ow, oh) = self.out;
        // SAFETY: the frame was just received, so its data, line sizes, size and format are
        // valid; they are checked for plausibility before the scaler reads them. The output
        // buffer holds exactly `ow * oh * 3` bytes, one plane, rows unpadded.
        unsafe {
            let width: c_int = field(self.frame, FRAME_WIDTH);
            let height: c_int = field(self.frame, FRAME_HEIGHT);
            let format: c_int = field(self.frame, FRAME_FORMAT);
            let data: [*const u8; 4] = field(self.frame, FRAME_DATA);
            let lines: [c_int; 4] = field(self.frame, FRAME_LINESIZE);
            if !(1..=16384).contains(&width)
                || !(1..=16384).contains(&height)
                || format < 0
                || data[0].is_null()
                || lines[0] < width
            {
                return None;
            }
            self.scaler = (self.api.sws_get_cached_context)(
                self.scaler,
                width,
                height,
                format,
                ow,
                oh,
                AV_PIX_FMT_RGB24,
                SWS_BILINEAR,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null(),
            );
            if self.scaler.is_null() {
                return None;
            }
            let (matrix, full_range) = self.colour_of_stream(height, format);
            if self.colour != (self.scaler, matrix, full_range) {
                let table = (self.api.sws_get_coefficients)(matrix);
                (self.api.sws_set_colorspace_details)(
                    self.scaler,
                    table,
                    c_int::from(full_range),
                    (self.api.sws_get_coefficients)(SWS_CS_ITU601),
                    1,
                    0,
                    1 << 16,
                    1 << 16,
                );
                self.colour = (self.scaler, matrix, full_range);
            }
            let mut rgb = vec![0u8; (ow * oh * 3) as usize];
            let dst = [
                rgb.as_mut_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            ];
            let dst_lines = [ow * 3, 0, 0, 0];
            let rows = (self.api.sws_scale)(
                self.scaler,
                data.as_ptr(),
                lines.as_ptr(),
                0,
                height,
                dst.as_ptr(),
                dst_lines.as_ptr(),
            );
            (rows == oh).then_some(rgb)
        }
    }
}

impl Session {
    /// The YUV matrix and range the stream says it uses (its VUI, as the decoder read it),
    /// or, when it says nothing, what GStreamer assumes: BT.709 from 720 lines up, else
    /// BT.601, limited range. libswscale alone would take BT.601 for everything, and HD
    /// reds would come out 235 instead of 255.
    fn colour_of_stream(&self, height: c_int, format: c_int) -> (c_int, bool) {
        let get = |name: &CStr| {
            let mut value = 0i64;
            // SAFETY: an integer option of the open codec context, written to `value`.
            let rc = unsafe { (self.api.opt_get_int)(self.ctx, name.as_ptr(), 0, &mut value) };
            (rc == 0).then_some(value)
        };
        let matrix = match get(c"colorspace") {
            Some(AVCOL_SPC_BT709) => SWS_CS_ITU709,
            Some(AVCOL_SPC_FCC) => SWS_CS_FCC,
            Some(AVCOL_SPC_BT470BG | AVCOL_SPC_SMPTE170M) => SWS_CS_ITU601,
            Some(AVCOL_SPC_SMPTE240M) => SWS_CS_SMPTE240M,
            Some(AVCOL_SPC_BT2020_NCL | AVCOL_SPC_BT2020_CL) => SWS_CS_BT2020,
            _ if height >= 720 => SWS_CS_ITU709,
            _ => SWS_CS_ITU601,
        };
        let full_range =
            get(c"color_range") == Some(AVCOL_RANGE_JPEG) || FULL_RANGE_FORMATS.contains(&format);
        (matrix, full_range)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // SAFETY: each object was allocated by FFmpeg for this session and is freed once.
        unsafe {
            (self.api.sws_free_context)(self.scaler);
            (self.api.frame_free)(&mut self.frame);
            (self.api.packet_free)(&mut self.packet);
            (self.api.free_context)(&mut self.ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_on_a_machine_with_gstreamers_libav_plugin() {
        // `make setup` installs gstreamer1.0-libav, which brings these libraries.
        let api = api();
        assert!(api.is_ok(), "{:?}", api.err());
    }
}
