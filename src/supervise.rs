//! Long-lived tasks under supervision: a panic that escapes a task's per-event guard
//! ([`sharpeyes_analytics::Telemetry::guarded`]) is logged with the task's name, counted in
//! `sharpeyes_task_restarts_total{task}` ([`sharpeyes_analytics::Telemetry::restarts`]), and the task is started again on the same state
//! after a backoff, while `/readyz` says which task is down. The state is what the panic
//! left (Rust keeps it memory-safe); the receivers are the same, so nothing queued is lost.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use prometheus::IntCounterVec;
use tokio::task::JoinHandle;

/// The first wait before a restart; doubled after each panic in a row, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Which supervised tasks are down right now, and why: for `/readyz`.
#[derive(Debug, Clone, Default)]
pub struct Health {
    down: Arc<Mutex<BTreeMap<&'static str, String>>>,
}

impl Health {
    /// One line per task that is down, for `/readyz`.
    pub fn problems(&self) -> Vec<String> {
        let down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        down.iter()
            .map(|(task, why)| format!("task `{task}` is restarting after a panic: {why}"))
            .collect()
    }

    fn set(&self, task: &'static str, why: Option<String>) {
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        match why {
            Some(why) => down.insert(task, why),
            None => down.remove(task),
        };
    }
}

/// A task's body: a future that borrows the task's state for as long as it runs.
pub type Body<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// What a supervised stage is given: the metrics it writes (with the restart counter) and
/// where it says it is down. Cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    pub telemetry: sharpeyes_analytics::Telemetry,
    pub health: Health,
}

impl Supervisor {
    /// Spawns `run(&mut state)` and runs it again after each panic; ends when a run returns.
    pub fn spawn<S: Send + 'static>(
        &self,
        task: &'static str,
        state: S,
        run: impl for<'a> FnMut(&'a mut S) -> Body<'a> + Send + 'static,
    ) -> JoinHandle<()> {
        tokio::spawn(supervise(
            task,
            self.health.clone(),
            self.telemetry.restarts.clone(),
            state,
            run,
            FIRST_BACKOFF,
        ))
    }
}

async fn supervise<S: Send>(
    task: &'static str,
    health: Health,
    restarts: IntCounterVec,
    mut state: S,
    mut run: impl for<'a> FnMut(&'a mut S) -> Body<'a> + Send,
    first_backoff: Duration,
) {
    let mut backoff = first_backoff;
    loop {
        let panic = match std::panic::AssertUnwindSafe(run(&mut state))
            .catch_unwind()
            .await
        {
            Ok(()) => return,
            Err(panic) => sharpeyes_analytics::panic_message(panic.as_ref()),
        };
        tracing::error!(task, panic = %panic, restart_in = ?backoff, "a supervised task panicked (a bug; please report it): restarting it on the same state");
        restarts.with_label_values(&[task]).inc();
        health.set(task, Some(panic));
        tokio::time::sleep(backoff).await;
        health.set(task, None);
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts its runs in its state, panics on the first two, then ends.
    struct Flaky {
        runs: u32,
        inbox: tokio::sync::mpsc::Receiver<u32>,
        seen: Vec<u32>,
    }

    impl Flaky {
        async fn run(&mut self) {
            self.runs += 1;
            while let Some(n) = self.inbox.recv().await {
                if n == 0 && self.runs <= 2 {
                    panic!("poisoned by message {n} on run {}", self.runs);
                }
                self.seen.push(n);
            }
        }
    }

    #[tokio::test]
    async fn a_panicking_task_is_counted_reported_and_restarted_on_its_state() {
        let (tx, inbox) = tokio::sync::mpsc::channel(8);
        let health = Health::default();
        let restarts = sharpeyes_analytics::Telemetry::new().restarts;
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let state = Flaky {
            runs: 0,
            inbox,
            seen: Vec::new(),
        };
        let task = tokio::spawn({
            let (health, restarts) = (health.clone(), restarts.clone());
            async move {
                let mut state = state;
                supervise(
                    "flaky",
                    health,
                    restarts,
                    &mut state,
                    |s: &mut &mut Flaky| Box::pin(s.run()),
                    Duration::from_millis(300),
                )
                .await;
                let _ = done_tx.send((state.runs, state.seen));
            }
        });
        for n in [1, 0, 2] {
            tx.send(n).await.unwrap();
        }
        // The first panic: down for its 300 ms backoff, and said so.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let problems = health.problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains(
                "task `flaky` is restarting after a panic: poisoned by message 0 on run 1"
            ),
            "{problems:?}"
        );
        tx.send(0).await.unwrap();
        tx.send(3).await.unwrap();
        drop(tx);
        let (runs, seen) = tokio::time::timeout(Duration::from_secs(5), done_rx)
            .await
            .expect("the task ends once its inbox closes")
            .unwrap();
        task.await.unwrap();
        assert_eq!(runs, 3);
        // Nothing queued was lost: only the two poison messages.
        assert_eq!(seen, [1, 2, 3]);
        assert_eq!(restarts.with_label_values(&["flaky"]).get(), 2);
        assert!(health.problems().is_empty(), "up again after the restart");
    }
}
