//! Which member runs which camera: weighted rendezvous hashing, bounded by each member's
//! capacity.
//!
//! Every node computes the same plan from the same members and cameras, so no node has to
//! tell another. A member joining or leaving moves only the cameras that hash to it (minimal
//! movement) while no member is full; a full member's overflow goes to the next member in
//! that camera's own ranking, and what no member has room for is left unassigned, for
//! `/api/cluster` to show.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::Member;

/// The member that runs `key` when capacity is no limit: the highest weighted rendezvous
/// score, `capacity / -ln(u)` with `u` in (0, 1) from a hash of the member and the key.
/// `None` without members of positive capacity.
pub fn assign<'a>(key: &str, members: &'a [Member]) -> Option<&'a Member> {
    let key = stable_hash(key);
    members
        .iter()
        .filter(|m| m.capacity > 0)
        .map(|m| (score(stable_hash(&m.id), key, m.capacity), m))
        .max_by(|(a, ma), (b, mb)| a.total_cmp(b).then_with(|| mb.id.cmp(&ma.id)))
        .map(|(_, m)| m)
}

/// An assignment key's owner for every key of a step, computed once per change of the
/// members or the cameras: at county scale (18,600 cameras, 640 nodes) that is 12 million
/// scores, too many for every step.
#[derive(Debug, Default)]
pub struct Plan {
    /// What it was computed from: the members sorted by id, and the cameras per key.
    members: Vec<Member>,
    loads: BTreeMap<String, u32>,
    owners: BTreeMap<String, usize>,
}

impl Plan {
    /// Each key of `loads` (its number of cameras, which go together) given to the member
    /// of highest score that has room for all of them. Keys are placed the largest first
    /// (then by key), so groups find room before single cameras fill it, and every node
    /// places them alike.
    pub fn new(loads: BTreeMap<String, u32>, members: &[Member]) -> Self {
        let mut members = members.to_vec();
        members.sort_by(|a, b| a.id.cmp(&b.id));
        let hashes: Vec<u64> = members.iter().map(|m| stable_hash(&m.id)).collect();
        let mut room: Vec<u64> = members.iter().map(|m| u64::from(m.capacity)).collect();
        let mut owners = BTreeMap::new();
        let mut ranked: Vec<(f64, usize)> = Vec::with_capacity(members.len());
        let mut order: Vec<(&String, u32)> = loads.iter().map(|(k, &l)| (k, l)).collect();
        order.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        for (key, load) in order {
            let key_hash = stable_hash(key);
            ranked.clear();
            ranked.extend(
                members
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| m.capacity > 0)
                    .map(|(i, m)| (score(hashes[i], key_hash, m.capacity), i)),
            );
            let best = |&(a, i): &(f64, usize), &(b, j): &(f64, usize)| {
                a.total_cmp(&b).then_with(|| j.cmp(&i))
            };
            let top = ranked.iter().copied().max_by(best);
            let chosen = match top {
                Some((_, i)) if room[i] >= u64::from(load) => Some(i),
                // The top one is full: the rest in the key's own order, best first.
                Some(_) => {
                    ranked.sort_by(|x, y| best(y, x));
                    ranked
                        .iter()
                        .map(|&(_, i)| i)
                        .find(|&i| room[i] >= u64::from(load))
                }
                None => None,
            };
            if let Some(i) = chosen {
                room[i] -= u64::from(load);
                owners.insert(key.clone(), i);
            }
        }
        Self {
            members,
            loads,
            owners,
        }
    }

    /// Whether this plan was computed from `loads` and `members` (in any order).
    pub fn is_for(&self, loads: &BTreeMap<String, u32>, members: &[Member]) -> bool {
        self.loads == *loads
            && self.members.len() == members.len()
            && members.iter().all(|m| self.members.contains(m))
    }

    /// How many cameras no member has room for.
    pub fn unassigned(&self) -> u32 {
        self.loads
            .iter()
            .filter(|(key, _)| !self.owners.contains_key(*key))
            .map(|(_, &load)| load)
            .sum()
    }

    /// The id of the member that runs `key`: `None` when no member has room for it. A key
    /// the plan was not computed for (a sensor no camera covers) goes by [`assign`].
    pub fn owner(&self, key: &str) -> Option<&str> {
        if self.loads.contains_key(key) {
            self.owners.get(key).map(|&i| self.members[i].id.as_str())
        } else {
            assign(key, &self.members).map(|m| m.id.as_str())
        }
    }
}

/// The first 8 bytes of SHA-256: the same in every build and version, so nodes of a rolling
/// upgrade agree. Computed once per member and once per key, not per pair.
fn stable_hash(text: &str) -> u64 {
    let digest = Sha256::digest(text.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

fn score(member: u64, key: u64, capacity: u32) -> f64 {
    // The pair mixed by the SplitMix64 finaliser: every member's `u` for a key is
    // independent of the others'.
    let mut z = member ^ key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // 53 bits, shifted off 0 and 1: ln(u) is finite and negative.
    let u = ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(capacity) / -u.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize, capacity: u32) -> Vec<Member> {
        (0..n)
            .map(|i| Member {
                id: format!("node-{i}"),
                capacity,
                zone: None,
            })
            .collect()
    }

    fn cameras(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("3213220000132{i:07}")).collect()
    }

    fn loads(cameras: &[String]) -> BTreeMap<String, u32> {
        cameras.iter().map(|c| (c.clone(), 1)).collect()
    }

    fn shares(plan: &Plan, cameras: &[String]) -> BTreeMap<String, usize> {
        let mut count = BTreeMap::new();
        for c in cameras {
            let owner = plan.owner(c).unwrap_or("none").to_owned();
            *count.entry(owner).or_insert(0) += 1;
        }
        count
    }

    #[test]
    fn every_node_computes_the_same_owner_and_shares_are_even() {
        let nodes = members(4, 10);
        let mut count = BTreeMap::new();
        for c in cameras(4000) {
            let owner = assign(&c, &nodes).unwrap();
            let mut reversed = nodes.clone();
            reversed.reverse();
            assert_eq!(
                assign(&c, &reversed).unwrap().id,
                owner.id,
                "order matters not"
            );
            *count.entry(owner.id.clone()).or_insert(0) += 1;
        }
        for (node, n) in &count {
            assert!((850..=1150).contains(n), "{node}: {n} of 4000");
        }
        assert_eq!(assign("x", &[]), None);
        assert_eq!(assign("x", &members(2, 0)), None);
    }

    #[test]
    fn a_joining_node_takes_only_its_share_and_a_leaving_one_gives_only_its_own() {
        let before = members(3, 10);
        let after = members(4, 10);
        let all = cameras(3000);
        let mut moved = 0;
        for c in &all {
            let (a, b) = (assign(c, &before).unwrap(), assign(c, &after).unwrap());
            if a.id != b.id {
                assert_eq!(b.id, "node-3", "a camera moved between old nodes");
                moved += 1;
            }
        }
        // A quarter, give or take.
        assert!((600..=900).contains(&moved), "{moved} of 3000 moved");
        // Leaving: only node-1's cameras move.
        let without: Vec<Member> = before
            .iter()
            .filter(|m| m.id != "node-1")
            .cloned()
            .collect();
        for c in &all {
            let (a, b) = (assign(c, &before).unwrap(), assign(c, &without).unwrap());
            if a.id != "node-1" {
                assert_eq!(a.id, b.id);
            }
        }
    }

    #[test]
    fn capacity_weighs_the_share() {
        let nodes = vec![
            Member {
                id: "big".into(),
                capacity: 30,
                zone: None,
            },
            Member {
                id: "small".into(),
                capacity: 10,
                zone: None,
            },
        ];
        let big = cameras(4000)
            .iter()
            .filter(|c| assign(c, &nodes).unwrap().id == "big")
            .count();
        assert!(
            (2800..=3200).contains(&big),
            "{big} of 4000 on the node of 3x capacity"
        );
    }

    #[test]
    fn with_room_to_spare_the_plan_is_the_hash() {
        let nodes = members(4, 1000);
        let all = cameras(2000);
        let plan = Plan::new(loads(&all), &nodes);
        for c in &all {
            assert_eq!(plan.owner(c), Some(assign(c, &nodes).unwrap().id.as_str()));
        }
    }

    #[test]
    fn no_node_holds_more_than_its_capacity_and_the_rest_is_unassigned() {
        let mut nodes = members(3, 10);
        nodes[0].capacity = 4;
        let all = cameras(30);
        let plan = Plan::new(loads(&all), &nodes);
        let count = shares(&plan, &all);
        assert_eq!(count.get("node-0"), Some(&4), "{count:?}");
        assert_eq!(count.get("node-1"), Some(&10), "{count:?}");
        assert_eq!(count.get("node-2"), Some(&10), "{count:?}");
        assert_eq!(count.get("none"), Some(&6), "{count:?}");
        assert_eq!(plan.unassigned(), 6);
        // The same plan whatever order the members are listed in.
        let mut reversed = nodes.clone();
        reversed.reverse();
        let again = Plan::new(loads(&all), &reversed);
        for c in &all {
            assert_eq!(plan.owner(c), again.owner(c));
        }
        assert!(again.is_for(&loads(&all), &nodes));
        assert!(!again.is_for(&loads(&all[1..]), &nodes));
        assert!(!again.is_for(&loads(&all), &nodes[1..]));
    }

    #[test]
    fn cameras_of_one_key_stay_together_on_a_node_with_room_for_all() {
        let nodes = members(2, 3);
        let mut loads = BTreeMap::new();
        loads.insert("group".to_owned(), 3);
        loads.insert("alone-1".to_owned(), 1);
        loads.insert("alone-2".to_owned(), 1);
        let plan = Plan::new(loads, &nodes);
        let group = plan.owner("group").unwrap();
        let other = if group == "node-0" {
            "node-1"
        } else {
            "node-0"
        };
        assert_eq!(plan.owner("alone-1"), Some(other));
        assert_eq!(plan.owner("alone-2"), Some(other));
        // A key outside the plan (a sensor no camera covers) goes by the hash.
        assert!(plan.owner("sensor-alone").is_some());
    }
}
