//! The host journal: what groups of real nodes exist on this machine, who
//! owns each, what each created, and the host-global values the kubelet
//! changes (sysctls are not per network namespace) as they were before
//! the first live group. Several processes share it (tests run in
//! parallel), so the caller holds a lock while it reads, asks here, acts
//! and writes. A group whose owner is gone (a killed test) is *stale*: the
//! next join or leave cleans it up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::address::{choose_slot, Ipv4Cidr};
use super::RealNodeError;

/// The sysctls (paths under `/proc/sys`) a kubelet sets on start
/// (`setupKernelTunables`): host-global, so restored when the last group
/// on the host is gone.
pub const KUBELET_SYSCTLS: [&str; 6] = [
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];

/// The sysctls a live group sets on the host: forwarding, so a node
/// reaches another group's nodes (another Machine's, a meta cluster's
/// NodePort) through the host. Recorded and restored like
/// [`KUBELET_SYSCTLS`].
/// The inotify instances: each real kubelet's cAdvisor takes several, and
/// a host running clusters beside its nodes runs out at the default 128
/// (`inotify_init: too many open files`). Both are minimums: a host with
/// more keeps its value.
pub const GROUP_SYSCTLS: [(&str, &str); 2] =
    [("net/ipv4/ip_forward", "1"), ("fs/inotify/max_user_instances", "1024")];

/// Every sysctl recorded before the first group and restored after the
/// last.
pub fn tracked_sysctls() -> impl Iterator<Item = &'static str> {
    KUBELET_SYSCTLS.iter().copied().chain(GROUP_SYSCTLS.iter().map(|(name, _)| *name))
}

/// A process, named so that a reused pid is not mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Owner {
    pub pid: u32,
    /// Field 22 of `/proc/PID/stat`.
    pub start_time: u64,
}

/// One node of a group, recorded before its resources are created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    pub index: u8,
    pub netns: String,
    pub host_link: String,
    pub cgroup: String,
}

/// One group: its owner, slot, files and nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupRecord {
    pub owner: Owner,
    pub slot: u8,
    pub bridge: String,
    /// The nodes' directories, removed with the group.
    pub dir: PathBuf,
    #[serde(default)]
    pub nodes: Vec<NodeRecord>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostJournal {
    /// The host's values of [`KUBELET_SYSCTLS`] before the first live group
    /// started; empty when no group lives.
    #[serde(default)]
    pub original_sysctls: BTreeMap<String, String>,
    #[serde(default)]
    pub groups: Vec<GroupRecord>,
}

/// What a new group does under the lock: clean up `stale` groups (keeping
/// in the journal those it fails to), write `restore_sysctls`, take
/// `slot`, and write `journal` (which holds the new group, and no stale one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join {
    pub slot: u8,
    pub stale: Vec<GroupRecord>,
    pub restore_sysctls: BTreeMap<String, String>,
    pub journal: HostJournal,
}

/// What a leaving group does: clean up its own resources and `stale`
/// groups, then write `restore_sysctls` and `journal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leave {
    pub stale: Vec<GroupRecord>,
    pub restore_sysctls: BTreeMap<String, String>,
    pub journal: HostJournal,
}

impl HostJournal {
    /// The group `owner` holds in `slot`.
    pub fn group_mut(&mut self, owner: Owner, slot: u8) -> Option<&mut GroupRecord> {
        self.groups.iter_mut().find(|g| g.owner == owner && g.slot == slot)
    }

    /// Records node `node` in the group (replacing a record of the same index).
    pub fn record_node(&mut self, owner: Owner, slot: u8, node: NodeRecord) {
        if let Some(group) = self.group_mut(owner, slot) {
            group.nodes.retain(|n| n.index != node.index);
            group.nodes.push(node);
            group.nodes.sort_by_key(|n| n.index);
        }
    }

    /// Forgets node `index` of the group (once its resources are gone).
    pub fn forget_node(&mut self, owner: Owner, slot: u8, index: u8) {
        if let Some(group) = self.group_mut(owner, slot) {
            group.nodes.retain(|n| n.index != index);
        }
    }
}

/// A new group owned by `owner`, keeping its nodes' files in `dir`. Stale
/// groups are handed back for cleanup and their slots left alone this time
/// (their cleanup may fail). With no live group left, the host's sysctls
/// are the originals, unless a stale journal still holds the originals a
/// dead group never restored: those are restored and kept.
pub fn join(
    journal: &HostJournal,
    owner: Owner,
    dir: PathBuf,
    is_alive: &dyn Fn(&Owner) -> bool,
    host_routes: &[Ipv4Cidr],
    current_sysctls: &BTreeMap<String, String>,
) -> Result<Join, RealNodeError> {
    let (live, stale): (Vec<GroupRecord>, Vec<GroupRecord>) =
        journal.groups.iter().cloned().partition(|g| is_alive(&g.owner));
    let taken: BTreeSet<u8> = journal.groups.iter().map(|g| g.slot).collect();
    let slot = choose_slot(&taken, host_routes)?;
    let (original_sysctls, restore_sysctls) = if !live.is_empty() {
        (journal.original_sysctls.clone(), BTreeMap::new())
    } else {
        let mut originals = journal.original_sysctls.clone();
        let restore: BTreeMap<String, String> = originals
            .iter()
            .filter(|(name, value)| current_sysctls.get(*name) != Some(value))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        for (name, value) in current_sysctls {
            originals.entry(name.clone()).or_insert_with(|| value.clone());
        }
        (originals, restore)
    };
    let mut groups = live;
    groups.push(GroupRecord {
        owner,
        slot,
        bridge: super::GroupAddresses { slot }.bridge(),
        dir,
        nodes: Vec::new(),
    });
    Ok(Join { slot, stale, restore_sysctls, journal: HostJournal { original_sysctls, groups } })
}

/// `owner`'s group in `slot` leaves; stale groups are handed back for
/// cleanup; the last live group out restores the original sysctls.
pub fn leave(journal: &HostJournal, owner: Owner, slot: u8, is_alive: &dyn Fn(&Owner) -> bool) -> Leave {
    let others = journal.groups.iter().filter(|g| !(g.owner == owner && g.slot == slot)).cloned();
    let (live, stale): (Vec<GroupRecord>, Vec<GroupRecord>) = others.partition(|g| is_alive(&g.owner));
    if live.is_empty() {
        Leave {
            stale,
            restore_sysctls: journal.original_sysctls.clone(),
            journal: HostJournal { original_sysctls: BTreeMap::new(), groups: Vec::new() },
        }
    } else {
        Leave {
            stale,
            restore_sysctls: BTreeMap::new(),
            journal: HostJournal { original_sysctls: journal.original_sysctls.clone(), groups: live },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Owner = Owner { pid: 100, start_time: 5 };
    const LIVE: Owner = Owner { pid: 200, start_time: 6 };
    const DEAD: Owner = Owner { pid: 300, start_time: 7 };
    /// A reused pid: same number, another process.
    const REUSED: Owner = Owner { pid: 200, start_time: 99 };

    fn alive(o: &Owner) -> bool {
        *o == ME || *o == LIVE
    }

    fn group(owner: Owner, slot: u8) -> GroupRecord {
        GroupRecord {
            owner,
            slot,
            bridge: format!("flt{slot}br"),
            dir: PathBuf::from(format!("/tmp/g{slot}")),
            nodes: vec![NodeRecord {
                index: 0,
                netns: format!("flt{slot}n0"),
                host_link: format!("flt{slot}v0"),
                cgroup: format!("flotilla-s{slot}-n0"),
            }],
        }
    }

    fn sysctls(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    struct Case {
        name: &'static str,
        journal: HostJournal,
        current: BTreeMap<String, String>,
        want_slot: u8,
        want_stale: Vec<u8>,
        want_restore: BTreeMap<String, String>,
        want_originals: BTreeMap<String, String>,
        want_slots: Vec<u8>,
    }

    #[test]
    fn joining_records_originals_once_and_hands_back_stale_groups() {
        let untouched = sysctls(&[("kernel/panic", "1"), ("vm/overcommit_memory", "0")]);
        let kubelet_set = sysctls(&[("kernel/panic", "10"), ("vm/overcommit_memory", "1")]);
        let cases = vec![
            Case {
                name: "first group on a clean host records the current values",
                journal: HostJournal::default(),
                current: untouched.clone(),
                want_slot: 0,
                want_stale: vec![],
                want_restore: BTreeMap::new(),
                want_originals: untouched.clone(),
                want_slots: vec![0],
            },
            Case {
                name: "a live group's originals stand; the kubelet's values are not originals",
                journal: HostJournal { original_sysctls: untouched.clone(), groups: vec![group(LIVE, 0)] },
                current: kubelet_set.clone(),
                want_slot: 1,
                want_stale: vec![],
                want_restore: BTreeMap::new(),
                want_originals: untouched.clone(),
                want_slots: vec![0, 1],
            },
            Case {
                name: "a dead owner's group is stale, its originals restored and kept",
                journal: HostJournal { original_sysctls: untouched.clone(), groups: vec![group(DEAD, 0)] },
                current: kubelet_set.clone(),
                want_slot: 1,
                want_stale: vec![0],
                want_restore: untouched.clone(),
                want_originals: untouched.clone(),
                want_slots: vec![1],
            },
            Case {
                name: "a reused pid is not the owner",
                journal: HostJournal { original_sysctls: untouched.clone(), groups: vec![group(REUSED, 4)] },
                current: untouched.clone(),
                want_slot: 0,
                want_stale: vec![4],
                want_restore: BTreeMap::new(),
                want_originals: untouched.clone(),
                want_slots: vec![0],
            },
            Case {
                name: "stale beside live: nothing restored while a group lives",
                journal: HostJournal {
                    original_sysctls: untouched.clone(),
                    groups: vec![group(DEAD, 0), group(LIVE, 1)],
                },
                current: kubelet_set.clone(),
                want_slot: 2,
                want_stale: vec![0],
                want_restore: BTreeMap::new(),
                want_originals: untouched.clone(),
                want_slots: vec![1, 2],
            },
            Case {
                name: "a sysctl new to the journal is recorded as it is",
                journal: HostJournal { original_sysctls: sysctls(&[("kernel/panic", "1")]), groups: vec![] },
                current: sysctls(&[("kernel/panic", "1"), ("vm/panic_on_oom", "0")]),
                want_slot: 0,
                want_stale: vec![],
                want_restore: BTreeMap::new(),
                want_originals: sysctls(&[("kernel/panic", "1"), ("vm/panic_on_oom", "0")]),
                want_slots: vec![0],
            },
        ];
        for c in cases {
            let got = join(&c.journal, ME, "/tmp/me".into(), &alive, &[], &c.current).unwrap();
            assert_eq!(got.slot, c.want_slot, "{}", c.name);
            assert_eq!(got.stale.iter().map(|g| g.slot).collect::<Vec<_>>(), c.want_stale, "{}", c.name);
            assert_eq!(got.restore_sysctls, c.want_restore, "{}", c.name);
            assert_eq!(got.journal.original_sysctls, c.want_originals, "{}", c.name);
            assert_eq!(
                got.journal.groups.iter().map(|g| g.slot).collect::<Vec<_>>(),
                c.want_slots,
                "{}",
                c.name
            );
            let mine = got.journal.groups.iter().find(|g| g.owner == ME).unwrap();
            assert_eq!(
                (mine.bridge.clone(), mine.nodes.len()),
                (format!("flt{}br", c.want_slot), 0),
                "{}",
                c.name
            );
        }
    }

    #[test]
    fn joining_skips_slots_clashing_with_host_routes() {
        let routes = [Ipv4Cidr::parse("172.30.0.0/16").unwrap()];
        let err =
            join(&HostJournal::default(), ME, "/tmp".into(), &alive, &routes, &BTreeMap::new()).unwrap_err();
        assert_eq!(err, RealNodeError::NoFreeSlot { slots: 100 });
        let routes = [Ipv4Cidr::parse("10.100.0.0/15").unwrap()];
        let got =
            join(&HostJournal::default(), ME, "/tmp".into(), &alive, &routes, &BTreeMap::new()).unwrap();
        assert_eq!(got.slot, 2);
    }

    #[test]
    fn the_last_live_group_out_restores_and_empties_the_journal() {
        let originals = sysctls(&[("kernel/panic", "1")]);
        struct LeaveCase {
            name: &'static str,
            journal: HostJournal,
            want_stale: Vec<u8>,
            want_restore: BTreeMap<String, String>,
            want_slots: Vec<u8>,
            want_originals_forgotten: bool,
        }
        let with = |groups: Vec<GroupRecord>| HostJournal { original_sysctls: originals.clone(), groups };
        let cases = vec![
            LeaveCase {
                name: "alone: restore and forget the originals",
                journal: with(vec![group(ME, 0)]),
                want_stale: vec![],
                want_restore: originals.clone(),
                want_slots: vec![],
                want_originals_forgotten: true,
            },
            LeaveCase {
                name: "another group lives: keep the originals for it",
                journal: with(vec![group(ME, 0), group(LIVE, 1)]),
                want_stale: vec![],
                want_restore: BTreeMap::new(),
                want_slots: vec![1],
                want_originals_forgotten: false,
            },
            LeaveCase {
                name: "only a dead group besides: clean it, restore",
                journal: with(vec![group(DEAD, 3), group(ME, 0)]),
                want_stale: vec![3],
                want_restore: originals.clone(),
                want_slots: vec![],
                want_originals_forgotten: true,
            },
            LeaveCase {
                name: "my other group in this process still lives",
                journal: with(vec![group(ME, 0), group(ME, 1)]),
                want_stale: vec![],
                want_restore: BTreeMap::new(),
                want_slots: vec![1],
                want_originals_forgotten: false,
            },
        ];
        for c in cases {
            let got = leave(&c.journal, ME, 0, &alive);
            assert_eq!(got.stale.iter().map(|g| g.slot).collect::<Vec<_>>(), c.want_stale, "{}", c.name);
            assert_eq!(got.restore_sysctls, c.want_restore, "{}", c.name);
            assert_eq!(
                got.journal.groups.iter().map(|g| g.slot).collect::<Vec<_>>(),
                c.want_slots,
                "{}",
                c.name
            );
            assert_eq!(got.journal.original_sysctls.is_empty(), c.want_originals_forgotten, "{}", c.name);
        }
    }

    #[test]
    fn nodes_are_recorded_and_forgotten_in_their_own_group() {
        let mut journal =
            HostJournal { original_sysctls: BTreeMap::new(), groups: vec![group(ME, 0), group(LIVE, 1)] };
        let node = |i: u8| NodeRecord {
            index: i,
            netns: format!("n{i}"),
            host_link: format!("v{i}"),
            cgroup: format!("c{i}"),
        };
        journal.record_node(ME, 0, node(2));
        journal.record_node(ME, 0, node(1));
        journal.record_node(ME, 0, node(1));
        journal.record_node(ME, 7, node(9));
        let indexes = |j: &HostJournal, slot: u8| {
            j.groups
                .iter()
                .find(|g| g.slot == slot)
                .unwrap()
                .nodes
                .iter()
                .map(|n| n.index)
                .collect::<Vec<_>>()
        };
        assert_eq!(indexes(&journal, 0), [0, 1, 2]);
        assert_eq!(indexes(&journal, 1), [0]);
        journal.forget_node(ME, 0, 0);
        journal.forget_node(ME, 1, 0);
        assert_eq!(indexes(&journal, 0), [1, 2]);
        assert_eq!(indexes(&journal, 1), [0], "another owner's group is untouched");
    }

    #[test]
    fn the_journal_reads_back_what_was_written_and_tolerates_missing_fields() {
        let journal =
            HostJournal { original_sysctls: sysctls(&[("kernel/panic", "1")]), groups: vec![group(LIVE, 3)] };
        let text = serde_json::to_string(&journal).unwrap();
        assert_eq!(serde_json::from_str::<HostJournal>(&text).unwrap(), journal);
        assert_eq!(serde_json::from_str::<HostJournal>("{}").unwrap(), HostJournal::default());
    }
}
