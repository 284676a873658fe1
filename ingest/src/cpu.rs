//! Where the CPU goes: thread CPU time (not wall time) per stage of the per-frame path,
//! added up for the whole process. Each stage measures the code it runs on its own thread
//! ([`measure`], [`Measured`] for a future polled by tokio, or marks on a GStreamer
//! streaming thread), so time spent waiting or on other tasks never counts.
//!
//! Process-wide, like the allocator: every stage adds to the same totals, which the service
//! exports as `sharpeyes_stage_cpu_seconds_total{stage}` and the e2e harness reads per run.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use cpu_time::ThreadTime;

/// A stage of the per-frame path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// RTSP: socket reads, RTP depacketisation, sampling (retina, our camera task).
    Receive,
    /// Parsing and decoding, on the decoder's streaming thread.
    Decode,
    /// Scaling to the detection size and conversion to RGB, same thread.
    Scale,
    /// The motion gate.
    Motion,
    /// The video quality diagnosis.
    Health,
    /// Letterboxing into the model's input tensor.
    Preprocess,
    /// The model run, with box decoding and NMS (the calling thread; ONNX Runtime's own
    /// pool threads, when `threads` > 1, are not counted).
    Inference,
    /// Tracking and hazard rules.
    Postprocess,
    /// The alert's JPEG.
    Snapshot,
    /// The MQTT link: encoding, the outbox, publishing.
    Publish,
}

impl Stage {
    pub const ALL: [Stage; 10] = [
        Stage::Receive,
        Stage::Decode,
        Stage::Scale,
        Stage::Motion,
        Stage::Health,
        Stage::Preprocess,
        Stage::Inference,
        Stage::Postprocess,
        Stage::Snapshot,
        Stage::Publish,
    ];

    /// The `stage` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Receive => "receive",
            Stage::Decode => "decode",
            Stage::Scale => "scale",
            Stage::Motion => "motion",
            Stage::Health => "health",
            Stage::Preprocess => "preprocess",
            Stage::Inference => "inference",
            Stage::Postprocess => "postprocess",
            Stage::Snapshot => "snapshot",
            Stage::Publish => "publish",
        }
    }
}

static NANOS: [AtomicU64; Stage::ALL.len()] = [const { AtomicU64::new(0) }; Stage::ALL.len()];

/// Adds `cpu` to `stage`.
pub fn add(stage: Stage, cpu: Duration) {
    let nanos = u64::try_from(cpu.as_nanos()).unwrap_or(u64::MAX);
    NANOS[stage as usize].fetch_add(nanos, Ordering::Relaxed);
}

/// Runs `f`, counting the CPU this thread spent in it to `stage`.
pub fn measure<T>(stage: Stage, f: impl FnOnce() -> T) -> T {
    let start = ThreadTime::now();
    let out = f();
    add(stage, start.elapsed());
    out
}

/// The CPU each stage has used since the process started.
pub fn totals() -> Vec<(Stage, Duration)> {
    Stage::ALL
        .into_iter()
        .map(|s| {
            (
                s,
                Duration::from_nanos(NANOS[s as usize].load(Ordering::Relaxed)),
            )
        })
        .collect()
}

/// This thread's CPU time so far: a mark for stages that split one thread's work.
pub fn thread_now() -> Duration {
    ThreadTime::now().as_duration()
}

/// A future whose every poll is counted to a stage: the work a tokio task does on whatever
/// worker thread polls it, and nothing it waits for.
pub struct Measured<F> {
    stage: Stage,
    inner: Pin<Box<F>>,
}

impl<F: Future> Measured<F> {
    pub fn new(stage: Stage, inner: F) -> Self {
        Self {
            stage,
            inner: Box::pin(inner),
        }
    }
}

impl<F: Future> Future for Measured<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let start = ThreadTime::now();
        let out = self.inner.as_mut().poll(cx);
        add(self.stage, start.elapsed());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin(d: Duration) {
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < d {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }

    #[test]
    fn thread_cpu_counts_work_and_not_sleep() {
        let before = totals()[Stage::Snapshot as usize].1;
        measure(Stage::Snapshot, || {
            spin(Duration::from_millis(30));
            std::thread::sleep(Duration::from_millis(100));
        });
        let used = totals()[Stage::Snapshot as usize].1 - before;
        assert!(used >= Duration::from_millis(20), "{used:?}");
        assert!(
            used < Duration::from_millis(90),
            "the sleep counted: {used:?}"
        );
    }

    #[test]
    fn a_measured_future_counts_its_polls_and_not_its_waits() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let before = totals()[Stage::Publish as usize].1;
        rt.block_on(Measured::new(Stage::Publish, async {
            spin(Duration::from_millis(30));
            tokio::time::sleep(Duration::from_millis(100)).await;
            spin(Duration::from_millis(30));
        }));
        let used = totals()[Stage::Publish as usize].1 - before;
        assert!(used >= Duration::from_millis(45), "{used:?}");
        assert!(
            used < Duration::from_millis(140),
            "the wait counted: {used:?}"
        );
    }
}
