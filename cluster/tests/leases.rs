//! Membership, leases and the registry of cameras changed over the API, against a real
//! redis-server on a free loopback port.

use std::collections::BTreeMap;
use std::time::Duration;

use sharpeyes_cluster::{ApiCameras, Coordinator, Leases, Member, Members, Registry, Report, Step};
use sharpeyes_testkit::Redis;

async fn connect(redis: &Redis) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{}/0", redis.port))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_holder_per_camera_renewed_and_released_only_by_it_with_growing_fences() {
    let redis = Redis::start(None);
    let mut conn = connect(&redis).await;
    let leases = Leases::new("lease-test");
    let ttl = Duration::from_millis(600);

    let a = leases
        .acquire(&mut conn, "cam-1", "node-a", ttl)
        .await
        .unwrap()
        .expect("free: taken");
    assert_eq!(
        leases
            .acquire(&mut conn, "cam-1", "node-b", ttl)
            .await
            .unwrap(),
        None,
        "held by another node"
    );
    // The holder asking again extends it, with the same fence.
    let again = leases
        .acquire(&mut conn, "cam-1", "node-a", ttl)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.fence, a.fence);
    assert!(leases.renew(&mut conn, &a, ttl).await.unwrap());

    // Not renewed: it expires, another node takes it with a higher fence, and the old
    // holder can neither renew nor release it.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let b = leases
        .acquire(&mut conn, "cam-1", "node-b", ttl)
        .await
        .unwrap()
        .expect("expired: taken over");
    assert!(b.fence > a.fence);
    assert!(!leases.renew(&mut conn, &a, ttl).await.unwrap());
    assert!(!leases.release(&mut conn, &a, ttl).await.unwrap());
    assert_eq!(
        leases
            .acquire(&mut conn, "cam-1", "node-a", ttl)
            .await
            .unwrap(),
        None
    );

    // Released by its holder: free at once.
    assert!(leases.release(&mut conn, &b, ttl).await.unwrap());
    let c = leases
        .acquire(&mut conn, "cam-1", "node-a", ttl)
        .await
        .unwrap()
        .unwrap();
    assert!(c.fence > b.fence);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_those_whose_heartbeat_has_not_expired() {
    let redis = Redis::start(None);
    let mut conn = connect(&redis).await;
    let members = Members::new("member-test");
    let ttl = Duration::from_millis(500);
    let node = |id: &str| Member {
        id: id.into(),
        capacity: 16,
        zone: Some("east".into()),
    };
    let report = Report {
        cameras: BTreeMap::from([("cam-1".to_owned(), "streaming".to_owned())]),
        ..Report::default()
    };
    members
        .heartbeat(&mut conn, &node("a"), &report, ttl)
        .await
        .unwrap();
    members
        .heartbeat(
            &mut conn,
            &node("b"),
            &Report::default(),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let live = members.live(&mut conn).await.unwrap();
    assert_eq!(live, [node("a"), node("b")]);
    let reports = members.reports(&mut conn, &live).await.unwrap();
    assert_eq!(reports["a"], report);
    assert_eq!(reports["b"], Report::default());
    // a stops beating: gone once its TTL passes, its report with it; b leaves cleanly.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(members.live(&mut conn).await.unwrap(), [node("b")]);
    let reports = members.reports(&mut conn, &live).await.unwrap();
    assert!(!reports.contains_key("a"), "{reports:?}");
    members.leave(&mut conn, "b").await.unwrap();
    assert_eq!(members.live(&mut conn).await.unwrap(), []);
}

/// A member with room for every camera of these tests.
fn member(id: &str) -> Member {
    Member {
        id: id.into(),
        capacity: 100,
        zone: None,
    }
}

/// Steps every coordinator `rounds` times, in turn, as their timers would; the last round's
/// steps, with the takeovers of every round.
async fn settle(
    conn: &mut redis::aio::MultiplexedConnection,
    nodes: &mut [&mut Coordinator],
    cameras: &[(String, String)],
    rounds: usize,
) -> Vec<Step> {
    let mut last: Vec<Step> = Vec::new();
    let mut taken_over: Vec<BTreeMap<String, Duration>> = vec![BTreeMap::new(); nodes.len()];
    for _ in 0..rounds {
        last.clear();
        for (i, c) in nodes.iter_mut().enumerate() {
            let step = c.step(conn, cameras).await.unwrap();
            // What the service does with a step: stop what moves away, then release it.
            c.release(conn, &step.hand_over).await.unwrap();
            taken_over[i].extend(step.taken_over.clone());
            last.push(step);
        }
    }
    for (step, taken) in last.iter_mut().zip(taken_over) {
        step.taken_over = taken;
    }
    last
}

/// Every camera runs on exactly one node.
fn exactly_once(steps: &[Step], cameras: &[(String, String)]) {
    for (camera, _) in cameras {
        let on: Vec<usize> = (0..steps.len())
            .filter(|&i| steps[i].run.contains(camera))
            .collect();
        assert_eq!(on.len(), 1, "camera {camera} runs on nodes {on:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinators_split_the_cameras_hand_over_on_join_and_take_over_a_dead_node() {
    let redis = Redis::start(None);
    let mut conn = connect(&redis).await;
    let ttl = Duration::from_millis(900);
    // cam-00..cam-29, the first six in pairs that share a sensor (one key each pair).
    let cameras: Vec<(String, String)> = (0..30)
        .map(|i| {
            let key = if i < 6 { i / 2 * 2 } else { i };
            (format!("cam-{i:02}"), format!("cam-{key:02}"))
        })
        .collect();
    let mut a = Coordinator::new("coord-test", member("node-a"), ttl);
    let mut b = Coordinator::new("coord-test", member("node-b"), ttl);
    let says = Report {
        cameras: BTreeMap::from([("cam-07".to_owned(), "connecting".to_owned())]),
        at_ms: 1,
        ..Report::default()
    };
    a.set_report(says.clone());

    // Two nodes: after a round in which both are members, every camera on exactly one.
    let steps = settle(&mut conn, &mut [&mut a, &mut b], &cameras, 3).await;
    exactly_once(&steps, &cameras);
    let reports = b.reports(&mut conn, &steps[1].members).await.unwrap();
    assert_eq!(reports["node-a"], says, "b reads what a says it runs");
    assert_eq!(reports["node-b"], Report::default());
    // a, first alone, took every lease with no holder before it: no handoff; b's share it
    // then handed over.
    assert!(steps[0].taken_over.is_empty(), "{:?}", steps[0].taken_over);
    assert_eq!(
        steps[1].taken_over.keys().cloned().collect::<Vec<_>>(),
        steps[1].run.iter().cloned().collect::<Vec<_>>()
    );
    for pair in cameras[..6].chunks(2) {
        let node = |cam: &str| steps.iter().position(|s| s.run.contains(cam));
        assert_eq!(node(&pair[0].0), node(&pair[1].0), "{pair:?} split");
    }
    assert!(
        steps[0].run.len() >= 8 && steps[1].run.len() >= 8,
        "{steps:?}"
    );
    let a_before = steps[0].run.clone();

    // A third joins: only cameras that move to it change hands, none between a and b.
    let mut c = Coordinator::new("coord-test", member("node-c"), ttl);
    let steps = settle(&mut conn, &mut [&mut a, &mut b, &mut c], &cameras, 3).await;
    exactly_once(&steps, &cameras);
    assert!(steps[0].run.is_subset(&a_before), "a took nothing new");
    assert!(!steps[2].run.is_empty(), "c took a share");
    // Each was released by its old node and taken at c's next step: a short handoff.
    assert_eq!(
        steps[2].taken_over.keys().cloned().collect::<Vec<_>>(),
        steps[2].run.iter().cloned().collect::<Vec<_>>()
    );
    for (camera, vacant) in &steps[2].taken_over {
        assert!(
            *vacant < ttl / 2,
            "{camera} vacant {vacant:?} after a release"
        );
    }
    assert!(steps[0].taken_over.is_empty() && steps[1].taken_over.is_empty());
    let b_cameras = steps[1].run.clone();

    // b dies (no step, no release) while a and c go on stepping every third of the TTL:
    // once b's leases expire its cameras move to them, each vacant since b's last renewal
    // (at least the TTL: nobody may take it sooner), and b's old leases can no longer be
    // renewed.
    let died = std::time::Instant::now();
    let mut taken: BTreeMap<String, Duration> = BTreeMap::new();
    let mut steps = Vec::new();
    while died.elapsed() < ttl + ttl / 2 {
        tokio::time::sleep(ttl / 3).await;
        steps = settle(&mut conn, &mut [&mut a, &mut c], &cameras, 1).await;
        for s in &steps {
            taken.extend(s.taken_over.clone());
        }
    }
    exactly_once(&steps, &cameras);
    assert_eq!(
        taken.keys().cloned().collect::<Vec<_>>(),
        b_cameras.iter().cloned().collect::<Vec<_>>()
    );
    for (camera, vacant) in &taken {
        assert!(
            *vacant + Duration::from_millis(5) >= ttl && *vacant < ttl * 2,
            "{camera} vacant {vacant:?} after its node died (TTL {ttl:?})"
        );
    }
    assert_eq!(
        steps[0].members.len(),
        2,
        "b is gone: {:?}",
        steps[0].members
    );
    let back = b.step(&mut conn, &cameras).await.unwrap();
    assert_eq!(back.lost, b_cameras, "b finds its leases taken");
    assert!(
        back.run
            .iter()
            .all(|cam| !steps[0].run.contains(cam) && !steps[1].run.contains(cam))
    );

    // c leaves cleanly: a takes everything at its next step, without waiting for the TTL.
    c.leave(&mut conn).await.unwrap();
    b.leave(&mut conn).await.unwrap();
    let step = a.step(&mut conn, &cameras).await.unwrap();
    assert_eq!(step.run.len(), cameras.len(), "{step:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cameras_changed_over_the_api_are_shared_once_per_id_with_a_version() {
    let redis = Redis::start(None);
    let mut conn = connect(&redis).await;
    let registry = Registry::new("registry-test");
    assert_eq!(registry.version(&mut conn).await.unwrap(), 0);
    assert_eq!(
        registry.read(&mut conn).await.unwrap(),
        ApiCameras::default()
    );

    let v1 = registry.add(&mut conn, "cam-b", "entry b").await.unwrap();
    let v2 = registry.add(&mut conn, "cam-a", "entry a").await.unwrap();
    assert_eq!((v1, v2), (Some(1), Some(2)));
    // The same id from another node: refused, and the version does not move.
    assert_eq!(
        registry.add(&mut conn, "cam-a", "other").await.unwrap(),
        None
    );
    assert_eq!(registry.version(&mut conn).await.unwrap(), 2);

    // A file camera removed, an added one forgotten.
    assert_eq!(
        registry.remove(&mut conn, "cam-file", true).await.unwrap(),
        3
    );
    assert_eq!(registry.remove(&mut conn, "cam-b", false).await.unwrap(), 4);
    assert_eq!(
        registry.read(&mut conn).await.unwrap(),
        ApiCameras {
            version: 4,
            added: vec![("cam-a".into(), "entry a".into())],
            removed: vec!["cam-file".into()],
        }
    );
}

/// Nodes hold at most their capacity: what no node has room for waits, counted, until a
/// node joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_node_runs_more_than_its_capacity_and_a_joining_node_takes_the_rest() {
    let redis = Redis::start(None);
    let mut conn = connect(&redis).await;
    let ttl = Duration::from_millis(900);
    let cameras: Vec<(String, String)> = (0..10)
        .map(|i| (format!("cam-{i:02}"), format!("cam-{i:02}")))
        .collect();
    let small = |id: &str| Member {
        id: id.into(),
        capacity: 4,
        zone: None,
    };
    let mut a = Coordinator::new("capacity-test", small("node-a"), ttl);
    let mut b = Coordinator::new("capacity-test", small("node-b"), ttl);
    let steps = settle(&mut conn, &mut [&mut a, &mut b], &cameras, 3).await;
    for step in &steps {
        assert_eq!(step.run.len(), 4, "{step:?}");
        assert_eq!(step.unassigned, 2);
    }
    let mut c = Coordinator::new("capacity-test", small("node-c"), ttl);
    let steps = settle(&mut conn, &mut [&mut a, &mut b, &mut c], &cameras, 3).await;
    exactly_once(&steps, &cameras);
    for step in &steps {
        assert!(step.run.len() <= 4, "{step:?}");
        assert_eq!(step.unassigned, 0);
    }
}
