//! Membership and leases against a real redis-server on a free loopback port.

use std::time::Duration;

use sharpeyes_cluster::{Coordinator, Leases, Member, Members, Step};
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
    assert!(!leases.release(&mut conn, &a).await.unwrap());
    assert_eq!(
        leases
            .acquire(&mut conn, "cam-1", "node-a", ttl)
            .await
            .unwrap(),
        None
    );

    // Released by its holder: free at once.
    assert!(leases.release(&mut conn, &b).await.unwrap());
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
    members.heartbeat(&mut conn, &node("a"), ttl).await.unwrap();
    members
        .heartbeat(&mut conn, &node("b"), Duration::from_secs(10))
        .await
        .unwrap();
    let live = members.live(&mut conn).await.unwrap();
    assert_eq!(live, [node("a"), node("b")]);
    // a stops beating: gone once its TTL passes; b leaves cleanly.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(members.live(&mut conn).await.unwrap(), [node("b")]);
    members.leave(&mut conn, "b").await.unwrap();
    assert_eq!(members.live(&mut conn).await.unwrap(), []);
}

fn member(id: &str) -> Member {
    Member {
        id: id.into(),
        capacity: 10,
        zone: None,
    }
}

/// Steps every coordinator `rounds` times, in turn, as their timers would.
async fn settle(
    conn: &mut redis::aio::MultiplexedConnection,
    nodes: &mut [&mut Coordinator],
    cameras: &[(String, String)],
    rounds: usize,
) -> Vec<Step> {
    let mut last = Vec::new();
    for _ in 0..rounds {
        last.clear();
        for c in nodes.iter_mut() {
            let step = c.step(conn, cameras).await.unwrap();
            // What the service does with a step: stop what moves away, then release it.
            c.release(conn, &step.hand_over).await.unwrap();
            last.push(step);
        }
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

    // Two nodes: after a round in which both are members, every camera on exactly one.
    let steps = settle(&mut conn, &mut [&mut a, &mut b], &cameras, 3).await;
    exactly_once(&steps, &cameras);
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
    let b_cameras = steps[1].run.clone();

    // b dies (no step, no release): within the TTL its cameras stay unowned, after it they
    // move to a and c, and b's old leases can no longer be renewed.
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    let steps = settle(&mut conn, &mut [&mut a, &mut c], &cameras, 2).await;
    exactly_once(&steps, &cameras);
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
