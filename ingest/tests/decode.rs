//! Both software decoders (libavcodec directly, GStreamer's avdec) on real H.264: a clip
//! encoded here with x264 is fed access unit by access unit, as the camera task does.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use sharpeyes_ingest::Frame;
use sharpeyes_ingest::decode::{Codec, DecodeCounters, Decoder, Software};

const BOTH: [Software; 2] = [Software::Libav, Software::Gstreamer];

/// `frames` access units of a 320x240 test pattern, a keyframe every `gop`.
fn encode(frames: u32, gop: u32) -> Vec<(Vec<u8>, bool)> {
    encode_with(frames, gop, "ball", "bframes=0 tune=zerolatency")
}

fn encode_with(frames: u32, gop: u32, pattern: &str, x264: &str) -> Vec<(Vec<u8>, bool)> {
    encode_sized(frames, gop, pattern, x264, (320, 240))
}

fn encode_sized(
    frames: u32,
    gop: u32,
    pattern: &str,
    x264: &str,
    (width, height): (u32, u32),
) -> Vec<(Vec<u8>, bool)> {
    gst::init().unwrap();
    let launch = format!(
        "videotestsrc num-buffers={frames} pattern={pattern} ! video/x-raw,width={width},height={height},framerate=25/1 ! x264enc key-int-max={gop} {x264} speed-preset=ultrafast ! h264parse config-interval=-1 ! video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=sink sync=false"
    );
    let pipeline = gst::parse::launch(&launch)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut out = Vec::new();
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
        let buf = sample.buffer().unwrap();
        let key = !buf.flags().contains(gst::BufferFlags::DELTA_UNIT);
        out.push((buf.map_readable().unwrap().to_vec(), key));
        if out.len() == frames as usize {
            break;
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(
        out.len(),
        frames as usize,
        "the encoder produced every frame"
    );
    out
}

fn decoder(
    software: Software,
    frames: Arc<Mutex<Vec<Frame>>>,
    counters: Arc<DecodeCounters>,
) -> Decoder {
    Decoder::software(
        Arc::from("cam"),
        Codec::H264,
        (160, 120),
        software,
        counters,
        move |f| frames.lock().unwrap().push(f),
    )
    .unwrap()
}

/// Waits until no frame has arrived for 300 ms (bounded at 10 s).
fn wait_settled(frames: &Mutex<Vec<Frame>>) {
    let start = Instant::now();
    let mut last = (usize::MAX, Instant::now());
    while start.elapsed() < Duration::from_secs(10) {
        let n = frames.lock().unwrap().len();
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() > Duration::from_millis(300) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_for(frames: &Mutex<Vec<Frame>>, n: usize) {
    let start = Instant::now();
    while frames.lock().unwrap().len() < n && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn every_access_unit_becomes_a_scaled_rgb_frame() {
    let clip = encode(20, 10);
    for (software, element) in BOTH.into_iter().zip(["libavcodec h264", "avdec_h264"]) {
        let frames = Arc::new(Mutex::new(Vec::new()));
        let counters = Arc::new(DecodeCounters::default());
        let mut d = decoder(software, frames.clone(), counters.clone());
        assert_eq!(d.element(), element);
        for (au, key) in &clip {
            d.push(au.clone(), SystemTime::now(), *key).unwrap();
        }
        wait_for(&frames, 20);
        let frames = frames.lock().unwrap();
        assert_eq!(frames.len(), 20, "{element}");
        assert!(
            frames
                .iter()
                .all(|f| f.width == 160 && f.height == 120 && f.rgb.len() == 160 * 120 * 3)
        );
        assert_eq!(
            frames.iter().filter(|f| f.keyframe).count(),
            2,
            "{element}: keyframe flags follow their frames"
        );
        assert_eq!(counters.decoded.load(Ordering::Relaxed), 20);
    }
}

#[test]
fn decode_only_units_are_decoded_as_references_but_not_handed_on() {
    for software in BOTH {
        decode_only_units_with(software);
    }
}

fn decode_only_units_with(software: Software) {
    let clip = encode(20, 10);
    let frames = Arc::new(Mutex::new(Vec::new()));
    let counters = Arc::new(DecodeCounters::default());
    let mut d = decoder(software, frames.clone(), counters.clone());
    // One frame in five handed on, as `fps` sampling does; the rest are references.
    for (i, (au, key)) in clip.iter().enumerate() {
        if i % 5 == 0 {
            d.push(au.clone(), SystemTime::now(), *key).unwrap();
        } else {
            d.push_decode_only(au.clone(), *key).unwrap();
        }
    }
    wait_settled(&frames);
    let frames = frames.lock().unwrap();
    assert_eq!(frames.len(), 4, "only the frames handed on come out");
    assert_eq!(counters.decode_only.load(Ordering::Relaxed), 16);
    assert_eq!(counters.decoded.load(Ordering::Relaxed), 4);
    // Each came out of a decoder that had seen its references: a whole picture, not the
    // grey of a P-frame decoded without them. The ball pattern is black around a white ball.
    for f in frames.iter() {
        let grey = f.rgb.iter().filter(|&&v| (100..=156).contains(&v)).count();
        assert!(
            grey * 4 < f.rgb.len(),
            "a frame is mostly grey: {grey} of {}",
            f.rgb.len()
        );
    }
    assert_eq!(frames.iter().filter(|f| f.keyframe).count(), 2);
}

#[test]
fn keyframes_alone_decode_on_their_own() {
    let clip = encode(30, 10);
    for software in BOTH {
        let frames = Arc::new(Mutex::new(Vec::new()));
        let mut d = decoder(software, frames.clone(), Arc::default());
        for (au, _) in clip.iter().filter(|(_, key)| *key) {
            d.push(au.clone(), SystemTime::now(), true).unwrap();
        }
        wait_for(&frames, 3);
        assert_eq!(frames.lock().unwrap().len(), 3, "{software:?}");
    }
}

/// A camera with B-frames sampled at keyframes: the decoder holds each picture back by the
/// stream's reorder depth unless told nothing follows it. Each keyframe must come out before
/// the next one is pushed (2 s later on a real camera), not two keyframes later.
#[test]
fn keyframes_of_a_b_frame_stream_come_out_before_the_next_one() {
    let clip = encode_with(60, 10, "ball", "bframes=2 b-adapt=false");
    let keyframes: Vec<_> = clip.iter().filter(|(_, key)| *key).collect();
    assert_eq!(keyframes.len(), 6);
    let frames = Arc::new(Mutex::new(Vec::new()));
    let mut d = decoder(Software::Libav, frames.clone(), Arc::default());
    d.set_intra_only(true);
    for (i, (au, _)) in keyframes.iter().enumerate() {
        d.push(au.clone(), SystemTime::now(), true).unwrap();
        wait_for(&frames, i + 1);
        assert_eq!(
            frames.lock().unwrap().len(),
            i + 1,
            "keyframe {i} came out before the next was pushed"
        );
    }
}

/// Both decoders, given the same keyframe, hand on the same picture: the direct path's
/// scaling and colour conversion are GStreamer's, within rounding and filter differences,
/// and skipping the loop filter on an intra-only keyframe changes little.
#[test]
fn both_decoders_show_the_same_picture() {
    // SD (BT.601) and HD (BT.709, as the stream's VUI says): the colour matrix must follow
    // the stream, or a fire's reds and oranges shift.
    for size in [(320, 240), (1280, 720)] {
        same_picture(size);
    }
}

fn same_picture(size: (u32, u32)) {
    let clip = encode_sized(10, 10, "smpte", "bframes=0 tune=zerolatency", size);
    let pictures: Vec<Vec<u8>> = BOTH
        .into_iter()
        .map(|software| {
            let frames = Arc::new(Mutex::new(Vec::new()));
            let mut d = decoder(software, frames.clone(), Arc::default());
            d.set_intra_only(true);
            d.push(clip[0].0.clone(), SystemTime::now(), true).unwrap();
            wait_for(&frames, 1);
            let f = frames.lock().unwrap();
            assert_eq!(f.len(), 1, "{software:?}");
            f[0].rgb.clone()
        })
        .collect();
    let (a, b) = (&pictures[0], &pictures[1]);
    let mean_diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| x.abs_diff(*y) as f64)
        .sum::<f64>()
        / a.len() as f64;
    let mean = a.iter().map(|&v| f64::from(v)).sum::<f64>() / a.len() as f64;
    let spread = a.iter().map(|&v| (f64::from(v) - mean).abs()).sum::<f64>() / a.len() as f64;
    assert!(
        spread > 40.0,
        "colour bars, not a flat picture: {spread:.1}"
    );
    assert!(
        mean_diff < 4.0,
        "{size:?}: mean difference {mean_diff:.2} per channel"
    );
}

#[test]
fn a_corrupt_access_unit_does_not_stop_decoding_at_the_next_keyframe() {
    for software in BOTH {
        a_corrupt_access_unit_with(software);
    }
}

fn a_corrupt_access_unit_with(software: Software) {
    let clip = encode(20, 10);
    let frames = Arc::new(Mutex::new(Vec::new()));
    let mut d = decoder(software, frames.clone(), Arc::default());
    for (i, (au, key)) in clip.iter().enumerate() {
        let mut au = au.clone();
        if i == 3 {
            // Keep the start code, scramble the slice.
            for b in au.iter_mut().skip(8) {
                *b = b.wrapping_mul(31).wrapping_add(7);
            }
        }
        // The decoder may report the damage; the camera task then starts a new one at the
        // next keyframe. Either way, the frames after the next keyframe must decode.
        if d.push(au, SystemTime::now(), *key).is_err() {
            d = decoder(software, frames.clone(), Arc::default());
        }
    }
    wait_settled(&frames);
    let got = frames.lock().unwrap();
    let after_keyframe = got.iter().rev().take_while(|f| !f.keyframe).count();
    assert!(
        got.len() >= 11 && after_keyframe >= 9,
        "{} frames, {after_keyframe} after the last keyframe",
        got.len()
    );
}

/// What a hostile or broken camera could hand the decoder: an empty unit (to libavcodec an
/// empty packet means end of stream), a truncated keyframe and bytes that are no H.264 at
/// all. None of them stops decoding: the whole clip after them still comes out in full.
#[test]
fn empty_truncated_and_garbage_units_do_not_stop_the_stream_after_them() {
    let clip = encode(20, 10);
    for software in BOTH {
        let frames = Arc::new(Mutex::new(Vec::new()));
        let mut d = decoder(software, frames.clone(), Arc::default());
        let garbage: Vec<u8> = (0..5000u32).map(|i| (i * 37 % 251) as u8).collect();
        let truncated = clip[0].0[..clip[0].0.len() / 3].to_vec();
        for (unit, key) in [(Vec::new(), false), (truncated, true), (garbage, false)] {
            if d.push(unit, SystemTime::now(), key).is_err() {
                d = decoder(software, frames.clone(), Arc::default());
            }
        }
        wait_settled(&frames);
        let before = frames.lock().unwrap().len();
        for (au, key) in &clip {
            if d.push(au.clone(), SystemTime::now(), *key).is_err() {
                d = decoder(software, frames.clone(), Arc::default());
            }
        }
        wait_for(&frames, before + 20);
        assert_eq!(
            frames.lock().unwrap().len() - before,
            20,
            "{software:?}: every frame of the clip after the bad units"
        );
    }
}
