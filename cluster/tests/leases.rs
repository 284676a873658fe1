//! Membership and leases against a real redis-server on a free loopback port.

use std::time::Duration;

use sharpeyes_cluster::{Leases, Member, Members};
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
