//! Cross-camera batching: frames from every camera that uses a model are gathered into one
//! inference batch, up to `max_batch` frames or until the first has waited `max_wait`.
//!
//! Frames enter through [`Batcher::submit`], which never blocks: when the queue is full the
//! frame is refused and counted, so a slow model can never stall a camera reader. A frame
//! that has waited longer than `max_age` by the time its batch runs is dropped and counted
//! rather than delaying every camera behind it. Each worker thread owns one detector.
//!
//! Each frame comes with its [`Reply`]: the channel of the camera that submitted it, where
//! its detections go. A job's reply is dropped once the job is done (answered, stale or
//! failed), so a camera that drops its own sender and reads its channel to the end has every
//! answer to the frames it submitted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::detection::Detection;
use crate::error::Error;
use crate::image::RgbImage;
use crate::model::Detector;
use crate::preprocess::Batch;
use sharpeyes_ingest::cpu::{self, Stage};

/// What the batcher needs of a frame.
pub trait AsRgb: Send + Sync + 'static {
    fn rgb(&self) -> RgbImage<'_>;
}

/// Where one frame's detections go: the channel of the camera that submitted it.
pub trait Reply<F>: Send + 'static {
    /// `false` when nobody listens any more.
    fn send(&self, detections: Detections<F>) -> bool;
}

impl<F: Send + Sync + 'static> Reply<F> for crossbeam_channel::Sender<Detections<F>> {
    fn send(&self, detections: Detections<F>) -> bool {
        crossbeam_channel::Sender::send(self, detections).is_ok()
    }
}

/// What a worker runs; [`Detector`] is the real one.
pub trait Infer: Send + 'static {
    fn new_batch(&self) -> Batch;
    fn detect(&mut self, batch: &Batch, out: &mut [Vec<Detection>]) -> Result<(), Error>;
}

impl Infer for Detector {
    fn new_batch(&self) -> Batch {
        Detector::new_batch(self)
    }

    fn detect(&mut self, batch: &Batch, out: &mut [Vec<Detection>]) -> Result<(), Error> {
        Detector::detect(self, batch, out)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatcherConfig {
    pub max_batch: usize,
    /// A batch runs once its first frame has waited this long, full or not.
    pub max_wait: Duration,
    /// Frames older than this when their batch runs are dropped.
    pub max_age: Duration,
    /// Frames waiting at most; more are refused.
    pub queue: usize,
}

/// One frame's detections, with the frame and what its batch cost.
#[derive(Debug)]
pub struct Detections<F> {
    pub frame: Arc<F>,
    pub detections: Vec<Detection>,
    /// When the frame was submitted: the clock of the tracker and the dwell rules.
    pub submitted: Instant,
    /// From submission to the end of inference.
    pub latency: Duration,
    /// From submission to the start of its batch.
    pub queue_wait: Duration,
    /// Letterboxing the whole batch into the input tensor.
    pub preprocess: Duration,
    /// The model run on the whole batch, with box decoding and NMS.
    pub inference: Duration,
    /// Frames in its batch.
    pub batch_size: usize,
}

/// Counters of a batcher, for metrics.
#[derive(Debug, Default)]
pub struct BatcherStats {
    pub submitted: AtomicU64,
    /// Refused at submission: the queue was full.
    pub refused: AtomicU64,
    /// Dropped at batching time: waited longer than `max_age`.
    pub stale: AtomicU64,
    pub batches: AtomicU64,
    pub inferred: AtomicU64,
    pub errors: AtomicU64,
}

impl BatcherStats {
    /// Mean frames per batch so far.
    pub fn mean_fill(&self) -> f64 {
        let b = self.batches.load(Ordering::Relaxed);
        if b == 0 {
            0.0
        } else {
            self.inferred.load(Ordering::Relaxed) as f64 / b as f64
        }
    }
}

struct Job<F, R> {
    frame: Arc<F>,
    reply: R,
    enqueued: Instant,
}

/// The submitting side; dropping it (or [`Batcher::shutdown`]) stops the workers once the
/// queue is drained.
pub struct Batcher<F, R> {
    queue: Option<Sender<Job<F, R>>>,
    stats: Arc<BatcherStats>,
    workers: Vec<JoinHandle<()>>,
}

impl<F: AsRgb, R: Reply<F>> Batcher<F, R> {
    /// Starts one worker thread per detector.
    pub fn start<I: Infer>(detectors: Vec<I>, config: BatcherConfig) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(config.queue.max(1));
        let stats = Arc::new(BatcherStats::default());
        let workers = detectors
            .into_iter()
            .enumerate()
            .map(|(i, det)| {
                let (rx, stats) = (rx.clone(), stats.clone());
                std::thread::Builder::new()
                    .name(format!("infer-{i}"))
                    .spawn(move || worker(det, config, rx, stats))
                    .expect("spawning an inference thread")
            })
            .collect();
        Self {
            queue: Some(tx),
            stats,
            workers,
        }
    }

    /// Queues a frame whose detections go to `reply`; `false` (and counted) when the queue
    /// is full or stopped.
    pub fn submit(&self, frame: Arc<F>, reply: R) -> bool {
        self.stats.submitted.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            frame,
            reply,
            enqueued: Instant::now(),
        };
        match self.queue.as_ref().map(|q| q.try_send(job)) {
            Some(Ok(())) => true,
            Some(Err(TrySendError::Full(_) | TrySendError::Disconnected(_))) | None => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    pub fn stats(&self) -> &Arc<BatcherStats> {
        &self.stats
    }

    /// Stops taking frames, lets the workers finish what is queued, and waits for them.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl<F, R> Drop for Batcher<F, R> {
    /// Closing the queue ends each worker once it is drained.
    fn drop(&mut self) {
        self.queue = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker<F: AsRgb, R: Reply<F>, I: Infer>(
    mut det: I,
    config: BatcherConfig,
    rx: Receiver<Job<F, R>>,
    stats: Arc<BatcherStats>,
) {
    let mut batch = det.new_batch();
    let capacity = config.max_batch.min(batch.capacity()).max(1);
    let mut jobs: Vec<Job<F, R>> = Vec::with_capacity(capacity);
    let mut outs: Vec<Vec<Detection>> = vec![Vec::new(); capacity];
    while let Ok(first) = rx.recv() {
        let deadline = first.enqueued + config.max_wait;
        jobs.push(first);
        while jobs.len() < capacity {
            match rx.recv_deadline(deadline) {
                Ok(j) => jobs.push(j),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        let now = Instant::now();
        let before = jobs.len();
        jobs.retain(|j| now.duration_since(j.enqueued) <= config.max_age);
        stats
            .stale
            .fetch_add((before - jobs.len()) as u64, Ordering::Relaxed);

        batch.clear();
        let preprocess_start = Instant::now();
        cpu::measure(Stage::Preprocess, || {
            jobs.retain(|j| match batch.push(j.frame.rgb()) {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "frame not batched");
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    false
                }
            })
        });
        if jobs.is_empty() {
            continue;
        }
        let inference_start = Instant::now();
        let preprocess = inference_start.duration_since(preprocess_start);
        if let Err(e) = cpu::measure(Stage::Inference, || det.detect(&batch, &mut outs)) {
            tracing::error!(error = %e, frames = jobs.len(), "inference failed; frames dropped");
            stats.errors.fetch_add(jobs.len() as u64, Ordering::Relaxed);
            jobs.clear();
            continue;
        }
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats
            .inferred
            .fetch_add(jobs.len() as u64, Ordering::Relaxed);
        let done = Instant::now();
        let inference = done.duration_since(inference_start);
        let batch_size = jobs.len();
        for (job, out) in jobs.drain(..).zip(outs.iter_mut()) {
            let result = Detections {
                latency: done.duration_since(job.enqueued),
                queue_wait: now.saturating_duration_since(job.enqueued),
                preprocess,
                inference,
                batch_size,
                submitted: job.enqueued,
                frame: job.frame,
                detections: std::mem::take(out),
            };
            // A camera that stopped listening has gone away: nothing to do for it.
            job.reply.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use sharpeyes_config::ModelLayout;

    use super::*;
    use crate::detection::BBox;

    struct Frame(Vec<u8>);

    impl AsRgb for Frame {
        fn rgb(&self) -> RgbImage<'_> {
            RgbImage::new(4, 4, &self.0).unwrap()
        }
    }

    /// Records batch sizes and reports one detection per frame, scored by the frame's first byte.
    struct Fake {
        sizes: Arc<Mutex<Vec<usize>>>,
        delay: Duration,
    }

    impl Infer for Fake {
        fn new_batch(&self) -> Batch {
            Batch::new(ModelLayout::Ssd, 4, 8)
        }

        fn detect(&mut self, batch: &Batch, out: &mut [Vec<Detection>]) -> Result<(), Error> {
            std::thread::sleep(self.delay);
            self.sizes.lock().unwrap().push(batch.len());
            for (i, o) in out[..batch.len()].iter_mut().enumerate() {
                o.push(Detection {
                    class: 0,
                    score: f32::from(batch.packed()[i * 48]),
                    bbox: BBox::default(),
                });
            }
            Ok(())
        }
    }

    fn config(max_batch: usize, max_wait_ms: u64) -> BatcherConfig {
        BatcherConfig {
            max_batch,
            max_wait: Duration::from_millis(max_wait_ms),
            max_age: Duration::from_secs(5),
            queue: 64,
        }
    }

    fn frame(v: u8) -> Arc<Frame> {
        Arc::new(Frame(vec![v; 48]))
    }

    type Results = crossbeam_channel::Sender<Detections<Frame>>;

    fn start(
        cfg: BatcherConfig,
        delay: Duration,
    ) -> (Batcher<Frame, Results>, Arc<Mutex<Vec<usize>>>) {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let b = Batcher::start(
            vec![Fake {
                sizes: sizes.clone(),
                delay,
            }],
            cfg,
        );
        (b, sizes)
    }

    #[test]
    fn frames_from_several_cameras_share_one_batch_and_each_answer_goes_to_its_camera() {
        let (b, sizes) = start(config(4, 500), Duration::ZERO);
        let cameras: Vec<_> = (0..4).map(|_| crossbeam_channel::unbounded()).collect();
        for (cam, (tx, _)) in cameras.iter().enumerate() {
            assert!(b.submit(frame(cam as u8 + 1), tx.clone()));
        }
        for (cam, (_, rx)) in cameras.iter().enumerate() {
            let r = rx.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!(
                r.detections[0].score,
                cam as f32 + 1.0,
                "each camera gets its own frame's detections"
            );
            assert!(rx.try_recv().is_err(), "and nothing else");
        }
        assert_eq!(*sizes.lock().unwrap(), [4]);
        assert_eq!(b.stats().mean_fill(), 4.0);
    }

    #[test]
    fn a_lone_frame_runs_after_max_wait() {
        let (b, sizes) = start(config(4, 30), Duration::ZERO);
        let (tx, rx) = crossbeam_channel::unbounded();
        let t = Instant::now();
        b.submit(frame(7), tx);
        let r = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(r.detections[0].score, 7.0);
        assert!(t.elapsed() >= Duration::from_millis(30));
        assert_eq!(*sizes.lock().unwrap(), [1]);
    }

    #[test]
    fn frames_that_waited_too_long_are_dropped_and_counted() {
        // The worker is busy 300 ms with the first frame; frames queued meanwhile are too old.
        let cfg = BatcherConfig {
            max_age: Duration::from_millis(100),
            ..config(1, 0)
        };
        let (b, _) = start(cfg, Duration::from_millis(300));
        let (tx, rx) = crossbeam_channel::unbounded();
        b.submit(frame(1), tx.clone());
        std::thread::sleep(Duration::from_millis(50));
        b.submit(frame(2), tx.clone());
        b.submit(frame(3), tx);
        let first = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(first.detections[0].score, 1.0);
        assert!(
            matches!(
                rx.recv_timeout(Duration::from_secs(5)),
                Err(crossbeam_channel::RecvTimeoutError::Disconnected)
            ),
            "stale frames are not inferred, and their replies are let go"
        );
        assert_eq!(b.stats().stale.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_full_queue_refuses_without_blocking() {
        let cfg = BatcherConfig {
            queue: 2,
            ..config(1, 0)
        };
        let (b, _) = start(cfg, Duration::from_millis(200));
        let (tx, _rx) = crossbeam_channel::unbounded();
        let t = Instant::now();
        let accepted = (0..10).filter(|_| b.submit(frame(1), tx.clone())).count();
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "submit must not wait"
        );
        assert!(accepted <= 3, "{accepted}");
        assert_eq!(
            b.stats().refused.load(Ordering::Relaxed),
            10 - accepted as u64
        );
    }

    #[test]
    fn shutdown_drains_the_queue() {
        let (b, _) = start(config(2, 10), Duration::from_millis(5));
        let (tx, rx) = crossbeam_channel::unbounded();
        for _ in 0..5 {
            b.submit(frame(1), tx.clone());
        }
        b.shutdown();
        assert_eq!(rx.try_iter().count(), 5);
    }
}
