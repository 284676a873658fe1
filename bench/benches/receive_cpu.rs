//! Receive CPU (#20): what RTSP receiving and depacketising cost per camera, retina against
//! GStreamer's `rtspsrc`, at 4 and 8 Mbit/s, side by side in one run, with the heap
//! allocations of the Rust side counted.
//!
//! Three clients of the same simulated noisy 1080p25 cameras (RTSP interleaved over TCP,
//! the simulator in a child process):
//! - `retina`: the crate alone, every access unit assembled (Annex B) and dropped;
//! - `ingest`: sharpeyes' camera task (retina, sampling, the hand-off of keyframes to the
//!   decoder), its `receive` stage CPU (the decoder's thread is not in it);
//! - `rtspsrc`: `rtspsrc protocols=tcp ! rtph264depay ! fakesink`, the receive half of a
//!   GStreamer or DeepStream pipeline.
//!
//! `SHARPEYES_BENCH_CAMERAS` (default 8), `SHARPEYES_BENCH_SECONDS` (default 20),
//! `SHARPEYES_BENCH_BITRATES` (kbit/s, default `4000,8000`) and `SHARPEYES_BENCH_ONLY`
//! (one client, e.g. under `perf record`) size it.

#![allow(clippy::print_stdout)] // the figures are the bench's output

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use gstreamer as gst;
use gstreamer::prelude::*;
use retina::client::{PlayOptions, Session, SessionOptions, SetupOptions, Transport};
use retina::codec::{CodecItem, FrameFormat};
use sharpeyes_bench::simulator_process::SimulatorProcess;
use sharpeyes_config::Sampling;
use sharpeyes_ingest::backends::{SourceConfig, spawn};
use sharpeyes_ingest::cpu::{self, Stage};
use sharpeyes_ingest::{CameraState, Timeouts};
use tokio::sync::watch;

/// Counts the heap allocations of this process's Rust code (GStreamer's go through glib to
/// libc and are not seen): allocation per packet is the usual suspect in a receive path.
struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static ALLOCATED_BYTES: AtomicU64 = AtomicU64::new(0);

// A measuring wrapper around the system allocator, in a bench binary only.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED_BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    Retina,
    Ingest,
    Rtspsrc,
}

impl Client {
    const ALL: [Client; 3] = [Client::Retina, Client::Ingest, Client::Rtspsrc];

    fn name(self) -> &'static str {
        match self {
            Client::Retina => "retina",
            Client::Ingest => "ingest",
            Client::Rtspsrc => "rtspsrc",
        }
    }
}

/// What the clients received, counted as they go.
#[derive(Default)]
struct Received {
    frames: AtomicU64,
    bytes: AtomicU64,
}

impl Received {
    fn add(&self, bytes: usize) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
    fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }
}

struct Measured {
    /// CPU seconds per camera per minute: the process for retina and rtspsrc, the receive
    /// stage for ingest.
    cpu_per_camera_minute: f64,
    mbit_per_camera_second: f64,
    frames_per_camera_second: f64,
    /// Rust heap allocations per received frame, and their bytes per received byte.
    allocations_per_frame: Option<f64>,
    allocated_per_byte: Option<f64>,
}

fn cpu_seconds() -> f64 {
    sharpeyes_bench::e2e::procs::cpu_seconds("self").expect("/proc/self/stat")
}

fn receive_stage_seconds() -> f64 {
    cpu::totals()
        .into_iter()
        .find(|(s, _)| *s == Stage::Receive)
        .map_or(0.0, |(_, d)| d.as_secs_f64())
}

/// retina alone: DESCRIBE, SETUP (TCP), PLAY, then every access unit counted and dropped.
async fn retina_camera(url: url::Url, received: Arc<Received>) {
    let mut session = Session::describe(url, SessionOptions::default())
        .await
        .expect("DESCRIBE");
    let index = session
        .streams()
        .iter()
        .position(|s| s.media() == "video")
        .expect("a video stream");
    session
        .setup(
            index,
            SetupOptions::default()
                .transport(Transport::Tcp(Default::default()))
                .frame_format(FrameFormat::SIMPLE),
        )
        .await
        .expect("SETUP");
    let mut demuxed = session
        .play(PlayOptions::default())
        .await
        .expect("PLAY")
        .demuxed()
        .expect("demuxed");
    while let Some(item) = demuxed.next().await {
        if let Ok(CodecItem::VideoFrame(frame)) = item {
            received.add(frame.data().len());
        }
    }
}

/// `rtspsrc ! rtph264depay ! fakesink`, buffers counted at the sink.
fn rtspsrc_camera(url: &str, received: Arc<Received>) -> gst::Pipeline {
    let pipeline = gst::parse::launch(&format!(
        "rtspsrc location={url} protocols=tcp latency=0 ! rtph264depay \
         ! video/x-h264,stream-format=byte-stream,alignment=au ! fakesink name=sink sync=false"
    ))
    .expect("rtspsrc, rtph264depay and fakesink (gstreamer1.0-plugins-good/-base)")
    .downcast::<gst::Pipeline>()
    .expect("a pipeline");
    let sink = pipeline.by_name("sink").expect("the sink");
    sink.static_pad("sink").expect("its pad").add_probe(
        gst::PadProbeType::BUFFER,
        move |_, info| {
            if let Some(buffer) = info.buffer() {
                received.add(buffer.size());
            }
            gst::PadProbeReturn::Ok
        },
    );
    pipeline
        .set_state(gst::State::Playing)
        .expect("the pipeline plays");
    pipeline
}

async fn measure(client: Client, port: u16, cameras: usize, seconds: u64) -> Measured {
    let urls: Vec<String> = (1..=cameras)
        .map(|i| format!("rtsp://127.0.0.1:{port}/cam{i}"))
        .collect();
    let received: Vec<Arc<Received>> = (0..cameras).map(|_| Arc::default()).collect();
    let (stop, shutdown) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut pipelines = Vec::new();
    let mut ingest = Vec::new();
    for (url, r) in urls.iter().zip(&received) {
        match client {
            Client::Retina => tasks.push(tokio::spawn(retina_camera(
                url::Url::parse(url).unwrap(),
                r.clone(),
            ))),
            Client::Rtspsrc => pipelines.push(rtspsrc_camera(url, r.clone())),
            Client::Ingest => {
                let config = SourceConfig {
                    camera: Arc::from(url.as_str()),
                    url: url::Url::parse(url).unwrap(),
                    udp: false,
                    sampling: Sampling::Keyframes,
                    skip_quiet: None,
                    detect_side: 640,
                    hardware_decoding: false,
                    timeouts: Timeouts::default(),
                };
                ingest.push(spawn(config, shutdown.clone()));
            }
        }
    }
    // Analytics' side of ingest's slots: take every frame, as a consumer would.
    let slots: Vec<_> = ingest.iter().map(|h| h.frames.clone()).collect();
    let consumer = tokio::spawn(async move {
        loop {
            for slot in &slots {
                let _ = slot.take();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    // Every camera streams before the clock starts (bounded: 30 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    let frames_of = |i: usize| -> u64 {
        match ingest.get(i) {
            Some(h) => h.counters.received.load(Ordering::Relaxed),
            None => received[i].frames(),
        }
    };
    while (0..cameras).any(|i| frames_of(i) == 0) {
        assert!(
            Instant::now() < deadline,
            "{}: a camera did not stream within 30 s",
            client.name()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for h in &ingest {
        let mut state = h.state.clone();
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            state.wait_for(|s| *s == CameraState::Streaming),
        )
        .await;
    }
    // ingest's counters carry no bytes: its frames are counted, its bytes taken as retina's.
    let total = |f: &dyn Fn(usize) -> u64| (0..cameras).map(f).sum::<u64>();
    let snap = || {
        (
            cpu_seconds(),
            receive_stage_seconds(),
            total(&frames_of),
            total(&|i| received[i].bytes.load(Ordering::Relaxed)),
            ALLOCATIONS.load(Ordering::Relaxed),
            ALLOCATED_BYTES.load(Ordering::Relaxed),
        )
    };
    let before = snap();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let after = snap();
    consumer.abort();
    stop.send_replace(true);
    for t in tasks {
        t.abort();
    }
    for p in pipelines {
        let _ = p.set_state(gst::State::Null);
    }
    for h in ingest {
        let _ = tokio::time::timeout(Duration::from_secs(5), h.task).await;
    }

    let per = |v: f64| v / cameras as f64 / seconds as f64;
    let cpu = match client {
        Client::Ingest => after.1 - before.1,
        _ => after.0 - before.0,
    };
    let frames = (after.2 - before.2) as f64;
    let bytes = (after.3 - before.3) as f64;
    let rust_side = client == Client::Retina;
    Measured {
        cpu_per_camera_minute: per(cpu) * 60.0,
        mbit_per_camera_second: per(bytes) * 8.0 / 1e6,
        frames_per_camera_second: per(frames),
        allocations_per_frame: rust_side.then(|| (after.4 - before.4) as f64 / frames.max(1.0)),
        allocated_per_byte: rust_side.then(|| (after.5 - before.5) as f64 / bytes.max(1.0)),
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if SimulatorProcess::serve_if_child() {
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and `cargo test --benches` ask what is here
    }
    let cameras = env_or("SHARPEYES_BENCH_CAMERAS", 8) as usize;
    let seconds = env_or("SHARPEYES_BENCH_SECONDS", 20);
    let bitrates: Vec<u32> = std::env::var("SHARPEYES_BENCH_BITRATES")
        .unwrap_or_else(|_| "4000,8000".into())
        .split(',')
        .map(|b| {
            b.trim()
                .parse()
                .expect("SHARPEYES_BENCH_BITRATES: kbit/s, comma-separated")
        })
        .collect();
    let only = std::env::var("SHARPEYES_BENCH_ONLY").ok();
    let clients: Vec<Client> = Client::ALL
        .into_iter()
        .filter(|c| only.as_deref().is_none_or(|o| o == c.name()))
        .collect();
    assert!(
        !clients.is_empty(),
        "SHARPEYES_BENCH_ONLY: one of retina, ingest, rtspsrc"
    );
    gst::init().expect("GStreamer initialises");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "receive CPU: {cameras} simulated noisy 1080p25 cameras over RTSP/TCP, {seconds} s per client"
    );
    println!(
        "{:>6} {:<8} {:>14} {:>9} {:>9} {:>12} {:>13}",
        "kbit/s", "client", "CPU s/cam/min", "Mbit/s", "frames/s", "allocs/frame", "alloc B/byte"
    );
    for kbps in bitrates {
        let sim = SimulatorProcess::start(cameras, Some(kbps));
        let mut rows = Vec::new();
        for &client in &clients {
            let m = runtime.block_on(measure(client, sim.port, cameras, seconds));
            let opt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
            println!(
                "{kbps:>6} {:<8} {:>14.3} {:>9.2} {:>9.1} {:>12} {:>13}",
                client.name(),
                m.cpu_per_camera_minute,
                m.mbit_per_camera_second,
                m.frames_per_camera_second,
                opt(m.allocations_per_frame),
                opt(m.allocated_per_byte),
            );
            rows.push((client, m));
        }
        let cpu = |c: Client| {
            rows.iter()
                .find(|(r, _)| *r == c)
                .map(|(_, m)| m.cpu_per_camera_minute)
        };
        if let (Some(r), Some(g)) = (cpu(Client::Retina), cpu(Client::Rtspsrc)) {
            println!("{kbps:>6} retina / rtspsrc CPU = {:.2}", r / g);
        }
        if let (Some(r), Some(i)) = (cpu(Client::Retina), cpu(Client::Ingest)) {
            println!("{kbps:>6} ingest receive / retina alone = {:.2}", i / r);
        }
        drop(sim);
    }
}
