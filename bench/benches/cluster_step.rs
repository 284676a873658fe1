//! One node's coordination step against a real redis-server: the renewals and takes of all
//! its leases pipelined (what [`Coordinator::step`] does) against one round trip per lease
//! (how it renewed before), side by side in one run, on loopback and through a proxy that
//! delays each direction by 1 ms (a network between pods or zones).
//!
//! A step must finish within a ninth of the lease (a third of the renewal period) or the
//! node counts itself cut off: at 10 s, 1.1 s.
//!
//! Then the assignment at county scale (18,600 cameras, 640 nodes): the plan every node
//! computes when the members or cameras change, against the SHA-256 of every (node, camera)
//! pair that each step computed before.
//!
//! `SHARPEYES_BENCH_ROUNDS` (default 5) steps are timed per case; the median is printed.

#![allow(clippy::print_stdout)] // the figures are the bench's output

use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use sharpeyes_cluster::{Coordinator, Leases, Member, Plan};
use sharpeyes_testkit::{FaultProxy, Redis};

const LEASE: Duration = Duration::from_secs(10);

fn rounds() -> usize {
    std::env::var("SHARPEYES_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

async fn connect(port: u16) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/0"))
        .expect("a valid URL")
        .get_multiplexed_async_connection()
        .await
        .expect("redis answers")
}

/// (pipelined step, one round trip per lease) for a node holding `cameras` leases.
async fn case(port: u16, prefix: &str, cameras: usize) -> (Duration, Duration) {
    let mut conn = connect(port).await;
    let ids: Vec<(String, String)> = (0..cameras)
        .map(|i| {
            let id = format!("3213220000132{i:07}");
            (id.clone(), id)
        })
        .collect();
    let me = Member {
        id: "node-bench".into(),
        capacity: 1000,
        zone: None,
    };
    let mut node = Coordinator::new(prefix, me, LEASE);
    let first = node.step(&mut conn, &ids).await.expect("a step");
    assert_eq!(first.run.len(), cameras, "the only node holds every lease");
    let mut pipelined = Vec::new();
    for _ in 0..rounds() {
        let t = Instant::now();
        let step = node.step(&mut conn, &ids).await.expect("a step");
        pipelined.push(t.elapsed());
        assert_eq!(step.run.len(), cameras);
    }
    let leases = Leases::new(prefix);
    let held: Vec<_> = node.held().cloned().collect();
    let mut sequential = Vec::new();
    for _ in 0..rounds() {
        let t = Instant::now();
        for lease in &held {
            assert!(leases.renew(&mut conn, lease, LEASE).await.expect("renew"));
        }
        sequential.push(t.elapsed());
    }
    (median(pipelined), median(sequential))
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let redis = Redis::start(None);
    let rows = runtime.block_on(async {
        let proxy = FaultProxy::start(redis.port).await;
        proxy.delay(Duration::from_millis(1));
        let mut rows = Vec::new();
        for (link, port) in [("loopback", redis.port), ("+1 ms each way", proxy.port)] {
            for cameras in [50, 500] {
                let prefix = format!("bench-{}-{cameras}", port);
                let (pipelined, sequential) = case(port, &prefix, cameras).await;
                rows.push((link, cameras, pipelined, sequential));
            }
        }
        rows
    });
    println!();
    println!(
        "cluster step (median of {} steps; a step must end within {:.0} ms at a {} s lease)",
        rounds(),
        (LEASE / 9).as_secs_f64() * 1e3,
        LEASE.as_secs()
    );
    println!("| link | leases | pipelined step | renewals one by one | ratio |");
    println!("|---|---|---|---|---|");
    for (link, cameras, pipelined, sequential) in rows {
        println!(
            "| {link} | {cameras} | {:.1} ms | {:.1} ms | {:.1}x |",
            pipelined.as_secs_f64() * 1e3,
            sequential.as_secs_f64() * 1e3,
            sequential.as_secs_f64() / pipelined.as_secs_f64()
        );
    }
    county_plan();
}

/// A county: 1,600 + 17,000 cameras on 640 nodes of 32.
const COUNTY_CAMERAS: usize = 18_600;
const COUNTY_NODES: usize = 640;

/// The score each step computed before, for every (node, camera) pair.
fn sha256_score(node: &str, camera: &str, capacity: u32) -> f64 {
    let digest = Sha256::new()
        .chain_update(node.as_bytes())
        .chain_update([0])
        .chain_update(camera.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let u = ((u64::from_be_bytes(first) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(capacity) / -u.ln()
}

fn county_plan() {
    let members: Vec<Member> = (0..COUNTY_NODES)
        .map(|i| Member {
            id: format!("sharpeyes-{i}"),
            capacity: 32,
            zone: None,
        })
        .collect();
    let loads: BTreeMap<String, u32> = (0..COUNTY_CAMERAS)
        .map(|i| (format!("3213220000132{i:07}"), 1))
        .collect();
    let mut plans = Vec::new();
    let mut plan = Plan::default();
    for _ in 0..rounds() {
        let started = Instant::now();
        plan = Plan::new(loads.clone(), &members);
        plans.push(started.elapsed());
    }
    let started = Instant::now();
    let same = plan.is_for(&loads, &members);
    let check = started.elapsed();
    assert!(same);
    // The old way, on a tenth of the cameras, scaled up: the whole takes seconds.
    let sample = COUNTY_CAMERAS / 10;
    let started = Instant::now();
    let mut owners = 0usize;
    for camera in loads.keys().take(sample) {
        let best = members
            .iter()
            .map(|m| sha256_score(&m.id, camera, m.capacity))
            .fold(f64::MIN, f64::max);
        owners += usize::from(best > 0.0);
    }
    let old = started.elapsed() * 10;
    assert_eq!(owners, sample);
    let plan_time = median(plans);
    println!();
    println!(
        "assignment of {COUNTY_CAMERAS} cameras over {COUNTY_NODES} nodes (median of {} plans)",
        rounds()
    );
    println!("| what | time | ratio |");
    println!("|---|---|---|");
    println!(
        "| SHA-256 per (node, camera), every step (before) | {:.0} ms | 1.0x |",
        old.as_secs_f64() * 1e3
    );
    println!(
        "| the plan, when members or cameras change | {:.0} ms | {:.1}x |",
        plan_time.as_secs_f64() * 1e3,
        old.as_secs_f64() / plan_time.as_secs_f64()
    );
    println!(
        "| a step with nothing changed (the plan checked) | {:.2} ms | {:.0}x |",
        check.as_secs_f64() * 1e3,
        old.as_secs_f64() / check.as_secs_f64()
    );
    println!("unassigned: {} of {COUNTY_CAMERAS}", plan.unassigned());
}
