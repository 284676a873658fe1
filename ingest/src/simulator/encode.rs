//! Encodes a scene once into a short looping H.264 clip, kept in memory (and on disk).
//!
//! This is what makes dozens of simulated 1080p cameras affordable: x264 runs once per
//! (scene, size, fps, GOP), and every camera then only re-stamps and payloads the same
//! access units.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::scene::{self, SceneKind};

/// How many GOPs one clip holds; it loops from its first keyframe.
pub(crate) const CLIP_GOPS: u32 = 2;

/// Bit rate at 1920x1080, in kbit/s; other sizes scale with their pixel count.
const BITRATE_1080P_KBPS: u64 = 4000;
/// Floor for tiny test sizes, in kbit/s, so keyframes stay legible.
pub(crate) const MIN_BITRATE_KBPS: u32 = 200;
/// What a camera's main stream goes up to (and x264's `bitrate` property allows).
pub(crate) const MAX_BITRATE_KBPS: u32 = 50_000;

/// The bit rate when none is configured: 4 Mbit/s at 1080p, scaled by the pixel count.
pub(crate) fn default_bitrate_kbps(width: u32, height: u32) -> u32 {
    let pixels = u64::from(width) * u64::from(height);
    (BITRATE_1080P_KBPS * pixels / (1920 * 1080)).max(u64::from(MIN_BITRATE_KBPS)) as u32
}

/// x264's quality (CRF) for constant-quality clips: a camera's "higher" picture quality.
const CONSTANT_QUALITY: u32 = 23;

/// x264 preset: `veryfast` keeps the one-off encode short while staying far better looking
/// than `ultrafast` (which drops CABAC and deblocking) at the same bit rate.
const X264_PRESET: &str = "veryfast";

/// Bumped whenever drawing or encoding changes, so stale cache files are not reused.
const CACHE_FORMAT: &str = "sharpeyes-sim-clip-v4";

/// How long encoding one clip may take before it is called stuck, in seconds.
const ENCODE_TIMEOUT_S: u64 = 300;

/// One encoded access unit: a whole frame in Annex B byte-stream form, SPS/PPS in front of
/// every keyframe.
#[derive(Debug, Clone)]
pub(crate) struct AccessUnit {
    pub buffer: gst::Buffer,
    pub keyframe: bool,
}

/// A looping clip: `CLIP_GOPS` GOPs, starting with a keyframe.
#[derive(Debug)]
pub(crate) struct Clip {
    pub scene: SceneKind,
    pub aus: Vec<AccessUnit>,
}

/// What a clip is encoded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClipSpec {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub gop: u32,
    /// Sensor noise, grey levels either way.
    pub grain: u8,
    /// Whether the street's car drives by (in scenes that show the street).
    pub traffic: bool,
    /// Constant quality (VBR) instead of a fixed bit rate.
    pub constant_quality: bool,
    /// The fixed bit rate, kbit/s (unused at constant quality).
    pub bitrate_kbps: u32,
    /// The same bytes on every run (x264 on one thread).
    pub deterministic: bool,
}

impl ClipSpec {
    fn frames(&self) -> u32 {
        self.gop * CLIP_GOPS
    }

    /// Frames encoded before the clip and dropped: x264's first GOP is not like the ones
    /// after it (at a fixed bit rate its keyframe is a tenth the size of the next, at
    /// constant quality a fifth smaller), and a looping clip must look like one long
    /// stream: a camera that has been running.
    fn warmup(&self) -> u32 {
        self.gop
    }
}

/// Returns the clip for `scene`: from `cache_dir` when a matching file is there, otherwise
/// encoded now (and written there; a cache that cannot be written only costs time).
pub(crate) fn load_or_encode(
    scene: SceneKind,
    spec: ClipSpec,
    cache_dir: Option<&Path>,
) -> Result<Arc<Clip>, String> {
    let still = scene::compose(scene, spec.width, spec.height)?;
    let path = cache_dir.map(|dir| dir.join(cache_name(scene, spec, still.as_raw())));
    if let Some(path) = &path {
        match read_cache(path) {
            Ok(aus) if aus.first().is_some_and(|a| a.keyframe) => {
                return Ok(Arc::new(Clip { scene, aus }));
            }
            Ok(_) => {
                tracing::warn!(path = %path.display(), "ignoring an empty simulator clip cache file")
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), %e, "ignoring an unreadable simulator clip cache file")
            }
        }
    }
    let aus = encode(&still, scene, spec)?;
    if let Some(path) = &path
        && let Err(e) = write_cache(path, &aus)
    {
        tracing::warn!(path = %path.display(), %e, "could not cache the simulator clip; the next start encodes again");
    }
    Ok(Arc::new(Clip { scene, aus }))
}

/// Encodes `frames()` frames of `still` (plus the moving block) with x264.
fn encode(
    still: &image::RgbImage,
    scene: SceneKind,
    spec: ClipSpec,
) -> Result<Vec<AccessUnit>, String> {
    let ClipSpec {
        width,
        height,
        fps,
        gop,
        ..
    } = spec;
    // `threads=1` when asked: with its own threads x264 makes different bytes on every
    // run, and tests on decoded keyframes saw different pictures each time.
    let launch = format!(
        "appsrc name=src format=time block=true max-bytes={max_bytes} \
           caps=video/x-raw,format=RGB,width={width},height={height},framerate={fps}/1 \
         ! videoconvert ! video/x-raw,format=I420 \
         ! x264enc speed-preset={X264_PRESET} tune=zerolatency {threads} key-int-max={gop} bframes=0 {rate} option-string=scenecut=0 \
         ! video/x-h264,profile=high \
         ! h264parse config-interval=-1 \
         ! video/x-h264,stream-format=byte-stream,alignment=au \
         ! appsink name=sink sync=false",
        max_bytes = u64::from(width) * u64::from(height) * 3 * 4,
        threads = if spec.deterministic { "threads=1" } else { "" },
        rate = if spec.constant_quality {
            format!("pass=qual quantizer={CONSTANT_QUALITY}")
        } else {
            format!("bitrate={}", spec.bitrate_kbps)
        },
    );
    let pipeline = gst::parse::launch(&launch)
        .map_err(|e| format!("cannot build the encoder pipeline ({e}); are gstreamer1.0-plugins-ugly (x264enc) and -bad (h264parse) installed? see scripts/setup.sh"))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| "the encoder launch line did not make a pipeline".to_string())?;
    let src = app_element::<gst_app::AppSrc>(&pipeline, "src")?;
    let sink = app_element::<gst_app::AppSink>(&pipeline, "sink")?;

    let collected: Arc<Mutex<Vec<AccessUnit>>> = Arc::default();
    let out = Arc::clone(&collected);
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                if let Some(buffer) = sample.buffer_owned() {
                    let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
                    out.lock()
                        .map_err(|_| gst::FlowError::Error)?
                        .push(AccessUnit { buffer, keyframe });
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );

    let result = run_encoder(&pipeline, &src, still, spec, scene);
    let _ = pipeline.set_state(gst::State::Null);
    result.map_err(|e| format!("encoding the {scene} scene at {width}x{height}: {e}"))?;

    let mut aus = std::mem::take(
        &mut *collected
            .lock()
            .map_err(|_| "encoder output lock poisoned")?,
    );
    aus.drain(..(spec.warmup() as usize).min(aus.len()));
    // The clip must start on a keyframe to loop and to be switched to; x264 puts an IDR
    // every `gop` frames (scene cuts off), so after the warm-up GOP anything else is a
    // broken encoder, not bad input.
    if aus.first().is_none_or(|a| !a.keyframe) {
        return Err(format!(
            "encoding the {scene} scene: the clip does not start with a keyframe after the warm-up GOP"
        ));
    }
    aus.truncate(spec.frames() as usize);
    if scene == SceneKind::Frozen {
        // A stuck encoder repeats itself exactly: every GOP the first, byte for byte.
        let frames = aus.len();
        aus = aus
            .iter()
            .take(gop as usize)
            .cycle()
            .take(frames)
            .cloned()
            .collect();
    }
    for au in &mut aus {
        // Timestamps are re-stamped per camera; drop the encoder's so nothing relies on them.
        let b = au.buffer.make_mut();
        b.set_pts(gst::ClockTime::NONE);
        b.set_dts(gst::ClockTime::NONE);
    }
    Ok(aus)
}

fn run_encoder(
    pipeline: &gst::Pipeline,
    src: &gst_app::AppSrc,
    still: &image::RgbImage,
    spec: ClipSpec,
    scene: SceneKind,
) -> Result<(), String> {
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|_| "the encoder pipeline does not start".to_string())?;
    let frames = spec.frames() + spec.warmup();
    let frame_duration = gst::ClockTime::SECOND / u64::from(spec.fps);
    let mut noise = Grain::new(scene.grain(spec.grain));
    for n in 0..frames {
        let mut frame = still.clone();
        if spec.traffic && scene.shows_traffic() {
            let (x, y, w, h) = scene::mover(n, frames, spec.width, spec.height);
            scene::fill(&mut frame, x, y, w, h, [200, 30, 30]);
        }
        noise.apply(&mut frame);
        let mut buffer = gst::Buffer::from_mut_slice(frame.into_raw());
        {
            let b = buffer.make_mut();
            b.set_pts(frame_duration * u64::from(n));
            b.set_duration(frame_duration);
        }
        if src.push_buffer(buffer).is_err() {
            break; // the bus says why
        }
    }
    let _ = src.end_of_stream();
    let bus = pipeline.bus().ok_or("the encoder pipeline has no bus")?;
    let deadline = gst::ClockTime::from_seconds(ENCODE_TIMEOUT_S);
    match bus.timed_pop_filtered(deadline, &[gst::MessageType::Eos, gst::MessageType::Error]) {
        Some(msg) => match msg.view() {
            gst::MessageView::Eos(_) => Ok(()),
            gst::MessageView::Error(e) => {
                Err(format!("{} ({})", e.error(), e.debug().unwrap_or_default()))
            }
            _ => Err("unexpected bus message".into()),
        },
        None => Err(format!("no end of stream after {ENCODE_TIMEOUT_S} s")),
    }
}

/// Fresh sensor noise for every frame: each byte moves by up to `amplitude` either way.
struct Grain {
    amplitude: u8,
    state: u64,
}

impl Grain {
    fn new(amplitude: u8) -> Self {
        Self {
            amplitude,
            state: 0x9e37_79b9_7f4a_7c15,
        }
    }

    fn apply(&mut self, frame: &mut image::RgbImage) {
        if self.amplitude == 0 {
            return;
        }
        let span = 2 * u16::from(self.amplitude) + 1;
        let a = i16::from(self.amplitude);
        for chunk in frame.chunks_mut(8) {
            // xorshift64: eight noise bytes per step.
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            for (p, r) in chunk.iter_mut().zip(self.state.to_le_bytes()) {
                let d = (u16::from(r) % span) as i16 - a;
                *p = (i16::from(*p) + d).clamp(0, 255) as u8;
            }
        }
    }
}

fn app_element<T: IsA<gst::Element>>(pipeline: &gst::Pipeline, name: &str) -> Result<T, String> {
    pipeline
        .by_name(name)
        .and_then(|e| e.downcast::<T>().ok())
        .ok_or_else(|| format!("the encoder pipeline has no `{name}` element of the expected type"))
}

/// A file name that changes with everything the clip depends on, the drawn image included.
fn cache_name(scene: SceneKind, spec: ClipSpec, still: &[u8]) -> String {
    // FNV-1a: no dependency, and collisions only cost a re-encode of the wrong-looking clip
    // in a cache the user can delete.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in CACHE_FORMAT
        .bytes()
        .chain(X264_PRESET.bytes())
        .chain(still.iter().copied())
    {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let ClipSpec {
        width,
        height,
        fps,
        gop,
        grain,
        traffic,
        constant_quality,
        bitrate_kbps,
        deterministic,
    } = spec;
    let mut options = if grain > 0 {
        format!("-grain{grain}")
    } else {
        String::new()
    };
    if !traffic {
        options.push_str("-still");
    }
    if constant_quality {
        options.push_str(&format!("-crf{CONSTANT_QUALITY}"));
    }
    if deterministic {
        options.push_str("-det");
    }
    format!(
        "{scene}-{width}x{height}-{fps}fps-gop{gop}{options}-{bitrate_kbps}kbps-{hash:016x}.h264au"
    )
}

const CACHE_MAGIC: &[u8; 8] = b"SESIMAU1";

/// File layout: magic, then per access unit a flag byte (1 = keyframe), a little-endian
/// u32 length and the bytes.
fn write_cache(path: &Path, aus: &[AccessUnit]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    // Write beside, then rename: a reader never sees half a file, even from another process.
    let tmp = PathBuf::from(format!("{}.{}.tmp", path.display(), std::process::id()));
    let mut f = io::BufWriter::new(fs::File::create(&tmp)?);
    f.write_all(CACHE_MAGIC)?;
    for au in aus {
        let map = au
            .buffer
            .map_readable()
            .map_err(|_| io::Error::other("unreadable buffer"))?;
        let len =
            u32::try_from(map.len()).map_err(|_| io::Error::other("access unit over 4 GiB"))?;
        f.write_all(&[u8::from(au.keyframe)])?;
        f.write_all(&len.to_le_bytes())?;
        f.write_all(&map)?;
    }
    f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    fs::rename(&tmp, path)
}

fn read_cache(path: &Path) -> io::Result<Vec<AccessUnit>> {
    let mut data = Vec::new();
    fs::File::open(path)?.read_to_end(&mut data)?;
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "not a simulator clip cache file",
        )
    };
    let mut rest = data.strip_prefix(CACHE_MAGIC.as_slice()).ok_or_else(bad)?;
    let mut aus = Vec::new();
    while !rest.is_empty() {
        let (&flag, tail) = rest.split_first().ok_or_else(bad)?;
        let (len, tail) = tail.split_first_chunk::<4>().ok_or_else(bad)?;
        let len = u32::from_le_bytes(*len) as usize;
        let (bytes, tail) = tail.split_at_checked(len).ok_or_else(bad)?;
        aus.push(AccessUnit {
            buffer: gst::Buffer::from_slice(bytes.to_vec()),
            keyframe: flag == 1,
        });
        rest = tail;
    }
    Ok(aus)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: ClipSpec = ClipSpec {
        width: 160,
        height: 120,
        fps: 10,
        gop: 5,
        grain: 0,
        traffic: true,
        constant_quality: false,
        bitrate_kbps: MIN_BITRATE_KBPS,
        deterministic: false,
    };

    #[test]
    fn a_clip_has_two_gops_with_keyframes_at_gop_boundaries_and_caches_exactly() {
        gst::init().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let clip = load_or_encode(SceneKind::Fire, SMALL, Some(dir.path())).unwrap();
        assert_eq!(clip.aus.len(), 10);
        let keys: Vec<usize> = clip
            .aus
            .iter()
            .enumerate()
            .filter(|(_, a)| a.keyframe)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(keys, vec![0, 5]);

        let files: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1, "one cache file, no temp file left behind");
        let cached = load_or_encode(SceneKind::Fire, SMALL, Some(dir.path())).unwrap();
        assert_eq!(cached.aus.len(), clip.aus.len());
        for (a, b) in cached.aus.iter().zip(&clip.aus) {
            assert_eq!(a.keyframe, b.keyframe);
            assert_eq!(
                *a.buffer.map_readable().unwrap(),
                *b.buffer.map_readable().unwrap()
            );
        }
    }

    #[test]
    fn a_corrupt_cache_file_is_reencoded_not_trusted() {
        gst::init().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let still = scene::compose(SceneKind::Street, SMALL.width, SMALL.height).unwrap();
        let path = dir
            .path()
            .join(cache_name(SceneKind::Street, SMALL, still.as_raw()));
        fs::write(&path, b"SESIMAU1\x01\xff\xff\xff\x7fshort").unwrap();
        let clip = load_or_encode(SceneKind::Street, SMALL, Some(dir.path())).unwrap();
        assert_eq!(clip.aus.len(), 10);
    }

    #[test]
    fn cache_names_differ_by_scene_and_spec() {
        let a = cache_name(SceneKind::Fire, SMALL, b"x");
        assert_ne!(a, cache_name(SceneKind::Street, SMALL, b"x"));
        assert_ne!(
            a,
            cache_name(SceneKind::Fire, ClipSpec { gop: 6, ..SMALL }, b"x")
        );
        assert_ne!(
            cache_name(SceneKind::Fire, SMALL, b"x"),
            cache_name(SceneKind::Fire, ClipSpec { grain: 4, ..SMALL }, b"x")
        );
        assert_ne!(a, cache_name(SceneKind::Fire, SMALL, b"y"));
    }

    #[test]
    fn grain_makes_delta_frames_cost_what_a_real_cameras_do() {
        gst::init().unwrap();
        let still = scene::compose(SceneKind::Street, SMALL.width, SMALL.height).unwrap();
        let delta_bytes = |spec: ClipSpec| -> usize {
            let aus = encode(&still, SceneKind::Street, spec).unwrap();
            let keyframes: Vec<usize> = (0..aus.len()).filter(|&i| aus[i].keyframe).collect();
            // Like a camera: a keyframe every GOP and nowhere else, however costly the deltas.
            assert_eq!(keyframes, [0, spec.gop as usize], "{spec:?}");
            aus.iter()
                .filter(|a| !a.keyframe)
                .map(|a| a.buffer.size())
                .sum()
        };
        let clean = delta_bytes(SMALL);
        let grainy = delta_bytes(ClipSpec { grain: 6, ..SMALL });
        assert!(grainy > 3 * clean, "clean {clean} B, grainy {grainy} B");
    }

    /// A deterministic clip is the same bytes on every run: tests compare models on decoded
    /// keyframes and need the same pictures each time (x264's threads made each run's clip
    /// differ, and a detection near a tolerance came and went with them).
    #[test]
    fn a_clip_is_the_same_bytes_every_time_it_is_encoded() {
        gst::init().unwrap();
        let spec = ClipSpec {
            width: 1920,
            height: 1080,
            fps: 25,
            gop: 10,
            grain: 6,
            bitrate_kbps: 4000,
            deterministic: true,
            ..SMALL
        };
        let still = scene::compose(SceneKind::Fire, 1920, 1080).unwrap();
        let bytes = |aus: Vec<AccessUnit>| -> Vec<Vec<u8>> {
            aus.iter()
                .map(|a| a.buffer.map_readable().unwrap().as_slice().to_vec())
                .collect()
        };
        let first = bytes(encode(&still, SceneKind::Fire, spec).unwrap());
        let second = bytes(encode(&still, SceneKind::Fire, spec).unwrap());
        let differ = first.iter().zip(&second).filter(|(a, b)| a != b).count();
        assert_eq!((differ, first.len()), (0, second.len()));
    }

    /// Benches compare receiving at 4 and 8 Mbit/s: a noisy camera fills the rate it is set to.
    #[test]
    fn a_noisy_stream_carries_the_bit_rate_it_is_set_to() {
        gst::init().unwrap();
        let spec = |bitrate_kbps| ClipSpec {
            width: 320,
            height: 240,
            grain: 6,
            bitrate_kbps,
            ..SMALL
        };
        let still = scene::compose(SceneKind::Street, 320, 240).unwrap();
        let bytes = |spec: ClipSpec| -> usize {
            let aus = encode(&still, SceneKind::Street, spec).unwrap();
            aus.iter().map(|a| a.buffer.size()).sum()
        };
        let low = bytes(spec(300));
        let high = bytes(spec(600));
        let ratio = high as f64 / low as f64;
        assert!(
            (1.5..=2.5).contains(&ratio),
            "300 kbit/s: {low} B, 600 kbit/s: {high} B"
        );
    }
}

#[cfg(test)]
mod quiet_sizes {
    use super::*;
    use crate::quiet::QuietGops;
    use std::time::{Duration, Instant};

    /// Feeds `gops` GOPs of `clip` (looped) to `q`, a GOP a second from `t`: how many of its
    /// keyframes `q` decodes.
    fn decoded(q: &mut QuietGops, clip: &[AccessUnit], gops: usize, t: &mut Instant) -> usize {
        let mut n = 0;
        for au in clip
            .iter()
            .cycle()
            .take(gops * clip.len() / CLIP_GOPS as usize)
        {
            if au.keyframe {
                *t += Duration::from_secs(1);
                n += usize::from(q.keyframe(au.buffer.size(), *t, false));
            } else {
                q.delta(au.buffer.size());
            }
        }
        n
    }

    /// The premise of skipping quiet keyframes, on x264's own output: at constant quality
    /// (VBR) a still street's delta frames stay near one size, its sensor noise, and a car
    /// driving through makes every GOP it is in loud. (At a fixed bit rate the car hides:
    /// the encoder fills its budget either way; hence `skip_quiet_keyframes` is off by
    /// default.)
    #[test]
    fn a_car_on_a_still_street_makes_its_gops_loud() {
        gst::init().unwrap();
        let spec = |traffic| ClipSpec {
            width: 1280,
            height: 720,
            fps: 10,
            gop: 10,
            grain: 0,
            traffic,
            constant_quality: true,
            bitrate_kbps: default_bitrate_kbps(1280, 720),
            deterministic: false,
        };
        let still = scene::compose(SceneKind::Street, 1280, 720).unwrap();
        let quiet = encode(&still, SceneKind::Street, spec(false)).unwrap();
        let busy = encode(&still, SceneKind::Street, spec(true)).unwrap();
        let mut q = QuietGops::new(Duration::from_secs(3600));
        let mut t = Instant::now();
        // Learned on the still street: after learning, its keyframes are skipped.
        decoded(&mut q, &quiet, 8, &mut t);
        assert_eq!(decoded(&mut q, &quiet, 10, &mut t), 0, "a still street");
        // The car: every keyframe after a GOP with it is decoded (all but the first, which
        // comes before any of its delta frames: here the car appears at a keyframe, and a
        // keyframe's size barely changes with it).
        assert_eq!(decoded(&mut q, &busy, 6, &mut t), 5, "a car passing");
    }
}
