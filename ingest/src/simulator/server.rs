//! The RTSP side: a gst-rtsp-server with one shared appsrc media per camera, fed the
//! pre-encoded clips in real time.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::gst_rtsp;
use gstreamer_rtsp_server::prelude::*;

use super::encode::Clip;
use super::schedule::scene_at;
use super::{SceneKind, Shared, SimError, SimulatorConfig};

/// The listening address. Loopback only: the simulator is a test and demo tool, and must
/// never expose cameras on a real network.
const ADDRESS: &str = "127.0.0.1";

/// Per-camera media: the appsrc gets the access units, rtph264pay puts them on the wire
/// (it reads SPS/PPS from the byte stream itself, so no h264parse is needed here).
const LAUNCH: &str = "( appsrc name=src is-live=true format=time do-timestamp=false \
    ! rtph264pay name=pay0 pt=96 config-interval=-1 )";

/// When a feeder falls this far behind real time (machine overloaded, or the stream was
/// paused) it restarts its pacing instead of bursting frames to catch up.
const MAX_LAG: Duration = Duration::from_millis(500);

/// How long `start` waits for the server thread to report that it listens.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `stop` waits for the camera pipelines to wind down, and how often it looks.
const TEARDOWN_LIMIT: Duration = Duration::from_secs(3);
const TEARDOWN_POLL: Duration = Duration::from_millis(10);

/// How long a client that closed is kept from being freed (see `serve`).
const KEEP_CLOSED: Duration = Duration::from_secs(5);

/// Role name given to authenticated clients.
const ROLE: &str = "viewer";

/// GLib-GIO criticals seen in this process (see [`quiet_gio_criticals`]).
static GIO_CRITICALS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// gst-rtsp-server (1.22) can leave a watch on a client socket it has closed, which GLib
/// then polls in a loop, each time with a `GLib-GIO-CRITICAL` line (90,000 lines in 0.26 s
/// once at a teardown, ten million in one CI log). The first three go to GLib's own handler
/// (stderr), then one line at each power of ten with the count: a log keeps the evidence
/// without drowning in it. Only the simulator installs it; `sharpeyes run` has no RTSP server.
fn quiet_gio_criticals() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        glib::log_set_handler(
            Some("GLib-GIO"),
            glib::LogLevels::LEVEL_CRITICAL,
            false,
            false,
            |domain, level, message| {
                let n = GIO_CRITICALS.fetch_add(1, Ordering::Relaxed) + 1;
                if shown(n) {
                    let domain = domain.unwrap_or("GLib-GIO");
                    let counted = format!(
                        "{message} (#{n}; the first three and each power of ten are shown)"
                    );
                    glib::log_default_handler(Some(domain), level, Some(&counted));
                }
            },
        );
    });
}

/// Whether the `n`th critical (from 1) is printed.
fn shown(n: u64) -> bool {
    n <= 3 || (n >= 10 && 10u64.pow(n.ilog10()) == n)
}

/// Starts the server thread; returns the bound port once it listens.
pub(super) fn spawn(
    config: &SimulatorConfig,
    shared: Arc<Shared>,
    context: glib::MainContext,
) -> Result<(u16, JoinHandle<()>), SimError> {
    let address = format!("{ADDRESS}:{}", config.port);
    quiet_gio_criticals();
    let (ready_tx, ready_rx) = mpsc::channel();
    let config = config.clone();
    let thread = std::thread::Builder::new()
        .name("rtsp-simulator".into())
        .spawn(move || {
            let result =
                context.with_thread_default(|| serve(&config, &shared, &context, &ready_tx));
            if let Err(e) = result {
                let _ = ready_tx.send(Err(format!("cannot own the GLib main context: {e}")));
            }
        })
        .map_err(|e| SimError::Server {
            address: address.clone(),
            reason: format!("cannot start a thread: {e}"),
        })?;
    match ready_rx.recv_timeout(START_TIMEOUT) {
        Ok(Ok(port)) => Ok((port, thread)),
        Ok(Err(reason)) => {
            let _ = thread.join();
            Err(SimError::Server { address, reason })
        }
        Err(_) => Err(SimError::Server {
            address,
            reason: format!(
                "the server did not start within {} s",
                START_TIMEOUT.as_secs()
            ),
        }),
    }
}

/// Runs on the server thread: builds the server, reports the port, runs the GLib context
/// until `stopping`, then tears down clients, media and the listening socket.
fn serve(
    config: &SimulatorConfig,
    shared: &Arc<Shared>,
    context: &glib::MainContext,
    ready: &mpsc::Sender<Result<u16, String>>,
) {
    let server = rtsp::RTSPServer::new();
    server.set_address(ADDRESS);
    server.set_service(&config.port.to_string());
    let Some(mounts) = server.mount_points() else {
        let _ = ready.send(Err("the RTSP server has no mount points".into()));
        return;
    };

    let media: Arc<Mutex<Vec<glib::WeakRef<rtsp::RTSPMedia>>>> = Arc::default();
    let caps = gst::Caps::builder("video/x-h264")
        .field("stream-format", "byte-stream")
        .field("alignment", "au")
        .field("width", config.width as i32)
        .field("height", config.height as i32)
        .field("framerate", gst::Fraction::new(config.fps as i32, 1))
        .build();
    for camera in 1..=config.cameras {
        let factory = rtsp::RTSPMediaFactory::new();
        factory.set_launch(LAUNCH);
        // One stream per camera however many clients watch it, as with a real camera.
        factory.set_shared(true);
        if config.credentials.is_some() {
            let role = gst::Structure::builder(ROLE)
                .field(rtsp::RTSP_PERM_MEDIA_FACTORY_ACCESS, true)
                .field(rtsp::RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, true)
                .build();
            factory.add_role_from_structure(&role);
        }
        let (shared, media, caps) = (Arc::clone(shared), Arc::clone(&media), caps.clone());
        factory.connect_media_configure(move |_, m| {
            configure(m, camera, &shared, &caps);
            if let Ok(mut list) = media.lock() {
                list.retain(|w| w.upgrade().is_some());
                list.push(m.downgrade());
            }
        });
        mounts.add_factory(&format!("/cam{camera}"), factory);
    }

    if let Some(c) = &config.credentials {
        let auth = rtsp::RTSPAuth::new();
        let token = rtsp::RTSPToken::builder()
            .field(rtsp::RTSP_TOKEN_MEDIA_FACTORY_ROLE, ROLE)
            .build();
        // Digest only: it is what real IP cameras ask for, and the bindings take one method
        // (GStreamer's flag value for "Basic or Digest" is not expressible through them).
        auth.add_digest(&c.user, &c.password, &token);
        auth.set_supported_methods(gst_rtsp::RTSPAuthMethod::Digest);
        server.set_auth(Some(&auth));
    }

    // gst-rtsp-server (1.22) hands a client to the threads of a shared stream without a
    // reference: a client that leaves while the stream still sends to the others can be
    // freed under such a thread, which then aborts the process (`get_data_seq: 'data_seq'
    // should not be NULL`, seen once in CI). Closed clients are kept a while longer.
    let closed: Arc<Mutex<Vec<(Instant, rtsp::RTSPClient)>>> = Arc::default();
    {
        let closed = Arc::clone(&closed);
        server.connect_client_connected(move |_, client| {
            let closed = Arc::clone(&closed);
            client.connect_closed(move |c| {
                if let Ok(mut list) = closed.lock() {
                    list.push((Instant::now(), c.clone()));
                }
            });
        });
    }

    let source = match server.attach(Some(context)) {
        Ok(id) => id,
        Err(e) => {
            let _ = ready.send(Err(format!(
                "{e}; is the port in use? pick another or 0 for a free one"
            )));
            return;
        }
    };
    let port = u16::try_from(server.bound_port()).unwrap_or(0);
    // `SourceId::remove` would look in the global default context; ours is private.
    let close = |source: glib::SourceId| {
        if let Some(s) = context.find_source_by_id(&source) {
            s.destroy();
        }
    };
    if ready.send(Ok(port)).is_err() {
        close(source);
        return;
    }

    while !shared.stopping.load(Ordering::SeqCst) {
        context.iteration(true);
        if let Ok(mut list) = closed.lock() {
            list.retain(|(at, _)| at.elapsed() < KEEP_CLOSED);
        }
    }

    // Teardown: first the listening socket, so that clients which reconnect as soon as they
    // are dropped (every real client does) cannot start new sessions while the others are
    // torn down; then let clients that are already leaving finish (removing a closing client
    // leaves a watch on a dead socket that GLib then polls in a loop), then the remaining
    // clients (they hold the media), then the media pipelines.
    close(source);
    drain(context, TEARDOWN_POLL * 10);
    // Held until the pipelines are down, for the reason `closed` is (above).
    let attached = server.client_filter(Some(&mut |_, _| rtsp::RTSPFilterResult::Ref));
    server.client_filter(Some(&mut |_, _| rtsp::RTSPFilterResult::Remove));
    let media: Vec<_> = media
        .lock()
        .map(|l| l.iter().filter_map(|w| w.upgrade()).collect())
        .unwrap_or_default();
    for m in &media {
        if m.status() != rtsp::RTSPMediaStatus::Unprepared {
            let _ = m.unprepare();
        }
    }
    // Unpreparing finishes on this context (the pipelines' state changes and bus messages):
    // run it until every pipeline is down, so none is disposed while still playing.
    let deadline = Instant::now() + TEARDOWN_LIMIT;
    while Instant::now() < deadline
        && media
            .iter()
            .any(|m| m.status() != rtsp::RTSPMediaStatus::Unprepared)
    {
        if !context.iteration(false) {
            std::thread::sleep(TEARDOWN_POLL);
        }
    }
    drain(context, TEARDOWN_POLL * 10);
    if let Some(m) = media
        .iter()
        .find(|m| m.status() != rtsp::RTSPMediaStatus::Unprepared)
    {
        tracing::warn!(status = ?m.status(), limit_s = TEARDOWN_LIMIT.as_secs(), "a simulator stream did not stop in time");
    }
    drop(attached);
    if let Ok(mut list) = closed.lock() {
        list.clear();
    }
}

/// Called for each new media of `camera` (one at a time, as media are shared): hands its
/// appsrc a feeder.
fn configure(media: &rtsp::RTSPMedia, camera: usize, shared: &Arc<Shared>, caps: &gst::Caps) {
    let src = media
        .element()
        .downcast::<gst::Bin>()
        .ok()
        .and_then(|bin| bin.by_name("src"))
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok());
    let Some(src) = src else {
        tracing::error!(
            camera,
            "simulator media has no appsrc named `src`; the camera sends nothing"
        );
        return;
    };
    src.set_caps(Some(caps));
    let mut feeder = Feeder::new(camera, Arc::clone(shared));
    src.set_callbacks(
        gst_app::AppSrcCallbacks::builder()
            .need_data(move |src, _| feeder.feed(src))
            .build(),
    );
}

/// Pushes one camera's access units: one per `need-data`, at its due time, looping the
/// current clip and switching clips on keyframes.
struct Feeder {
    camera: usize,
    shared: Arc<Shared>,
    clip: Option<Arc<Clip>>,
    index: usize,
    frame: gst::ClockTime,
    /// Pacing origin: when frame 0 of this epoch was due, and its timestamp.
    epoch: Option<(Instant, gst::ClockTime)>,
    sent_in_epoch: u32,
    last_pts: Option<gst::ClockTime>,
    /// Frames left of a first GOP cut short (`stagger_gops`), then a jump to the next
    /// keyframe; 0: none.
    cut_in: u32,
}

impl Feeder {
    fn new(camera: usize, shared: Arc<Shared>) -> Self {
        let frame = gst::ClockTime::SECOND / u64::from(shared.fps);
        let cut_in = shared
            .stagger_gop
            .map_or(0, |gop| super::first_gop_cut(camera, gop));
        Feeder {
            cut_in,
            camera,
            shared,
            clip: None,
            index: 0,
            frame,
            epoch: None,
            sent_in_epoch: 0,
            last_pts: None,
        }
    }

    fn feed(&mut self, src: &gst_app::AppSrc) {
        if self.shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let clip = self.clip_for_next_frame();
        let Some(au) = clip.aus.get(self.index) else {
            return;
        };

        // Pace to real time: frame n of this epoch is due n frame durations after its start.
        let now = Instant::now();
        let frame = Duration::from_nanos(self.frame.nseconds());
        let (start, mut pts0) = *self.epoch.get_or_insert_with(|| (now, running_time(src)));
        let due = start + frame * self.sent_in_epoch;
        if let Some(wait) = due.checked_duration_since(now) {
            std::thread::sleep(wait);
        } else if now.duration_since(due) > MAX_LAG {
            // Timestamps stay monotonic across the restart, and never behind the pipeline.
            pts0 = self
                .last_pts
                .map_or(gst::ClockTime::ZERO, |p| p + self.frame)
                .max(running_time(src));
            self.epoch = Some((now, pts0));
            self.sent_in_epoch = 0;
        }
        let pts = pts0 + self.frame * u64::from(self.sent_in_epoch);

        // A shallow copy: the bytes stay shared with the clip, only the metadata is new.
        let mut buffer = au.buffer.copy();
        {
            let b = buffer.make_mut();
            b.set_pts(pts);
            b.set_dts(pts);
            b.set_duration(self.frame);
        }
        if src.push_buffer(buffer).is_err() {
            return; // flushing or shutting down: the media is going away
        }
        if self.index == 0 || au.keyframe {
            self.shared.scene_sent(self.camera, clip.scene);
        }
        self.last_pts = Some(pts);
        self.sent_in_epoch += 1;
        self.index = (self.index + 1) % clip.aus.len();
        if self.cut_in > 0 {
            self.cut_in -= 1;
            if self.cut_in == 0 {
                // On to the next keyframe: the frames skipped are ones nothing decoded later
                // refers to, so the stream stays clean.
                self.index = clip.aus[self.index..]
                    .iter()
                    .position(|a| a.keyframe)
                    .map_or(0, |k| self.index + k);
            }
        }
    }

    /// The clip the next frame comes from: on a keyframe, the one the schedule wants now.
    fn clip_for_next_frame(&mut self) -> Arc<Clip> {
        let at_keyframe = self
            .clip
            .as_ref()
            .is_none_or(|c| c.aus.get(self.index).is_none_or(|a| a.keyframe));
        if at_keyframe {
            let wanted = scene_at(
                &self.shared.scenario,
                self.camera,
                self.shared.started.elapsed(),
            );
            if self.clip.as_ref().is_none_or(|c| c.scene != wanted) {
                let clip = self
                    .shared
                    .clips
                    .get(&wanted)
                    .or_else(|| self.shared.clips.get(&SceneKind::Street));
                if let Some(clip) = clip {
                    self.clip = Some(Arc::clone(clip));
                    self.index = 0;
                }
            }
        }
        self.clip.clone().unwrap_or_else(|| {
            Arc::new(Clip {
                scene: SceneKind::Street,
                aus: Vec::new(),
            })
        })
    }
}

fn running_time(src: &gst_app::AppSrc) -> gst::ClockTime {
    src.current_running_time().unwrap_or(gst::ClockTime::ZERO)
}

/// Runs what is pending on `context` for at most `limit`.
fn drain(context: &glib::MainContext, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline && context.iteration(false) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_of_gio_criticals_prints_a_few_lines_and_counts_them_all() {
        let printed: Vec<u64> = (1..=100_000).filter(|&n| shown(n)).collect();
        assert_eq!(printed, [1, 2, 3, 10, 100, 1000, 10_000, 100_000]);
        quiet_gio_criticals();
        let before = GIO_CRITICALS.load(Ordering::Relaxed);
        for i in 0..2000 {
            glib::g_critical!("GLib-GIO", "a critical of this test, {}", i);
        }
        // Other tests' simulators may add their own meanwhile.
        assert!(GIO_CRITICALS.load(Ordering::Relaxed) - before >= 2000);
    }
}
