//! Keyframe decodes take turns: at most `[ingest] keyframe_decoders` at once across the
//! process, first come, first served.
//!
//! Every camera has its own decoder thread. When keyframes from many cameras arrive
//! together, the kernel shares the cores among all of their decodes, so all of them finish
//! late, and the one inference thread gets a thin share of the core beside them. Taking turns,
//! each keyframe is done in 15 ms after its wait, the mean wait is half of what sharing
//! gives, and inference competes with as many decodes as there are cores. Measured at the
//! edge of one core (README, Tuning): alert p99 0.7x, and past the edge alerts come late
//! instead of fires being missed.
//!
//! Only keyframe-only decoding takes turns: a decoder that decodes every frame runs without
//! pause, as its camera's frames keep coming.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::Thread;

static QUEUE: Queue = Queue::new(0);

/// Sets how many keyframes may be decoded at once (`[ingest] keyframe_decoders`, `None`:
/// the cores this process may run on); `Some(0)` lets every decoder run when it has work.
pub fn keyframe_decoders(limit: Option<usize>) {
    QUEUE.set_limit(
        limit.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
    );
}

/// Waits for this decoder's turn, which lasts as long as the returned value lives. `None`
/// when decodes do not take turns.
pub(crate) fn wait_for_turn() -> Option<Turn> {
    QUEUE.enter()
}

struct Queue {
    /// Turns at once; 0: no turns.
    limit: AtomicUsize,
    state: Mutex<State>,
}

struct State {
    running: usize,
    /// In the order they asked. A turn that ends wakes the first of them only: waking them
    /// all, each to find it is not its turn, cost 0.06% of a core per camera at 88 cameras.
    waiting: VecDeque<Arc<Waiter>>,
}

struct Waiter {
    thread: Thread,
    go: AtomicBool,
}

/// One decoder's turn; dropping it lets the next one go.
pub(crate) struct Turn(&'static Queue);

impl Queue {
    const fn new(limit: usize) -> Queue {
        Queue {
            limit: AtomicUsize::new(limit),
            state: Mutex::new(State {
                running: 0,
                waiting: VecDeque::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
        self.hand_over(&mut self.lock());
    }

    fn enter(&'static self) -> Option<Turn> {
        let limit = self.limit.load(Ordering::Relaxed);
        if limit == 0 {
            return None;
        }
        let mut state = self.lock();
        if state.waiting.is_empty() && state.running < limit {
            state.running += 1;
            return Some(Turn(self));
        }
        let me = Arc::new(Waiter {
            thread: std::thread::current(),
            go: AtomicBool::new(false),
        });
        state.waiting.push_back(me.clone());
        drop(state);
        while !me.go.load(Ordering::Acquire) {
            std::thread::park();
        }
        Some(Turn(self)) // `hand_over` counted it as running
    }

    /// Lets the first waiters go while there is room (all of them when turns are off).
    fn hand_over(&self, state: &mut State) {
        let limit = self.limit.load(Ordering::Relaxed);
        while limit == 0 || state.running < limit {
            let Some(next) = state.waiting.pop_front() else {
                break;
            };
            state.running += 1;
            next.go.store(true, Ordering::Release);
            next.thread.unpark();
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.running = state.running.saturating_sub(1);
        self.0.hand_over(&mut state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn queue(limit: usize) -> &'static Queue {
        Box::leak(Box::new(Queue::new(limit)))
    }

    /// Four decoders ask for a turn while one holds it, with room for one at a time: they
    /// go one by one, in the order they asked, and never two at once.
    #[test]
    fn one_turn_at_a_time_in_the_order_asked() {
        let q = queue(1);
        let inside = Arc::new(AtomicUsize::new(0));
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = q.enter().expect("turns are on");
        let mut threads = Vec::new();
        for i in 0..4 {
            let (inside, order) = (inside.clone(), order.clone());
            threads.push(std::thread::spawn(move || {
                let _turn = q.enter().expect("turns are on");
                assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two at once");
                order.lock().unwrap().push(i);
                std::thread::sleep(Duration::from_millis(20));
                inside.fetch_sub(1, Ordering::SeqCst);
            }));
            // Each asks before the next: they wait in the order 0, 1, 2, 3.
            let deadline = Instant::now() + Duration::from_secs(5);
            while q.lock().waiting.len() < i + 1 {
                assert!(Instant::now() < deadline, "decoder {i} never asked");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            order.lock().unwrap().is_empty(),
            "one went while the first held its turn"
        );
        drop(first);
        for t in threads {
            t.join().expect("no decoder panicked");
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3]);
    }

    /// With room for two, two go at once; with turns off, nobody waits; and a waiting
    /// decoder goes as soon as turns are turned off.
    #[test]
    fn the_limit_is_how_many_go_at_once_and_zero_is_no_turns() {
        let q = queue(2);
        let a = q.enter().expect("first");
        let b = q.enter().expect("second, beside the first");
        let waiting = std::thread::spawn(move || {
            let started = Instant::now();
            let _turn = q.enter();
            started.elapsed()
        });
        std::thread::sleep(Duration::from_millis(100));
        assert!(!waiting.is_finished(), "a third went beside two");
        q.set_limit(0);
        let waited = waiting.join().unwrap();
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
        assert!(q.enter().is_none(), "no turns when off");
        drop((a, b));
    }
}
