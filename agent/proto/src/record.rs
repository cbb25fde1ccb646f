//! The record of one migration: its timeline and its traffic.

use serde::{Deserialize, Serialize};

/// Everything measured about one migration. `--json` prints it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MigrationRecord {
    /// Migration id.
    pub id: u64,
    /// Mode used.
    pub mode: String,
    /// Every option of the migration: mode, eager set and budget, push
    /// order and rate, prefetch, compression, pre-copy limits.
    pub options: crate::options::MigrateOptions,
    /// Pid on the source host.
    pub pid: i32,
    /// Destination host.
    pub to: String,
    /// Pid on the destination host.
    pub new_pid: i32,
    /// The processes that moved with it, the same pids on both hosts: a
    /// tree's other members (its descendants, zombies too); empty when it
    /// moved alone.
    #[serde(default)]
    pub kin: Vec<i32>,
    /// Milestones, microseconds since the request arrived.
    pub timeline: Timeline,
    /// Freeze to resume, microseconds.
    pub downtime_us: u64,
    /// Pages and bytes sent during the freeze.
    pub eager_pages: u64,
    /// Pages to follow after resume.
    pub lazy_pages: u64,
    /// Pages sent in each pre-copy round while the process ran.
    pub precopy_rounds: Vec<u64>,
    /// Pages the destination took from what pre-copy sent (not written
    /// since).
    pub stored_pages: u64,
    /// Pages sent on the demand lane.
    pub demand_pages: u64,
    /// Demand requests served.
    pub demand_requests: u64,
    /// Pages pushed on the bulk lane.
    pub pushed_pages: u64,
    /// Lazy pages the process discarded before they arrived.
    pub discarded_pages: u64,
    /// Commit to complete, microseconds: how long the process needed both hosts.
    pub residual_us: u64,
    /// Faults served over the network: a uniform sample of at most 4096
    /// drawn over the whole of post-copy (reservoir sampling), in time
    /// order; `demand_requests` counts them all.
    pub faults: Vec<FaultSample>,
    /// How it ended: "complete", "resumed" (detached) or an error.
    pub outcome: String,
    /// When the request arrived, microseconds since the Unix epoch (source
    /// clock).
    pub started_unix_us: u64,
    /// Destination clock minus source clock, microseconds, estimated at
    /// the handshake (Cristian: the peer's time plus half the round trip,
    /// the tightest of several probes).
    pub clock_offset_us: i64,
    /// Half the tightest probe's round trip: the offset is right within
    /// this many microseconds.
    pub clock_uncertainty_us: u64,
    /// Both agents' milestones on the source's timeline.
    pub events: Vec<Event>,
    /// Bytes of pages per lane.
    pub lanes: LaneBytes,
    /// Bytes the pages took on the wire, all lanes (less than the page
    /// bytes when compressed).
    pub page_wire_bytes: u64,
    /// Background push progress: (microseconds since the request, pages
    /// pushed so far), sampled.
    pub push_progress: Vec<(u64, u64)>,
    /// Of the pages post-copy moves, how many are in on the destination so
    /// far (as its progress reports say; all of them once complete).
    #[serde(default)]
    pub moved_pages: u64,
    /// Every control message between the agents, each with both ends
    /// (those either side logged: see [`crate::envelope::MAX_LOGGED`]).
    #[serde(default)]
    pub messages: Vec<Message>,
    /// Messages either side sent or received past its log's bound.
    #[serde(default)]
    pub messages_unlogged: u64,
}

/// One control message of a migration, both ends, for a time-space
/// diagram. Times are on the source's timeline (microseconds since the
/// request; the destination's shifted by the clock offset, right within
/// `clock_uncertainty_us`); a side that did not log its end leaves it
/// out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Host that sent it.
    pub from: String,
    /// Host that received it.
    pub to: String,
    /// What it is (`Core`, `Commit`, ...).
    pub kind: String,
    /// Its sequence number in its direction.
    pub seq: u64,
    /// When it was sent.
    pub sent_us: Option<i64>,
    /// When it was received.
    pub received_us: Option<i64>,
    /// The sender's Lamport time of the send.
    pub lamport_sent: Option<u64>,
    /// The receiver's Lamport time of the receipt.
    pub lamport_received: Option<u64>,
}

/// Both agents' logs of their control lane as one list of messages, in
/// the order they were sent. `source`, `dest`: each side's log, with its
/// host name; times become microseconds since `started_unix_us` on the
/// source's clock, the destination's less `clock_offset_us`.
pub fn pair_messages(
    (source_host, source): (&str, &[crate::envelope::Stamp]),
    (dest_host, dest): (&str, &[crate::envelope::Stamp]),
    started_unix_us: u64,
    clock_offset_us: i64,
) -> Vec<Message> {
    use std::collections::BTreeMap;
    let on_source = |us: u64| us as i64 - started_unix_us as i64;
    let on_dest = |us: u64| us as i64 - clock_offset_us - started_unix_us as i64;
    // By (sent by the source, seq).
    let mut all: BTreeMap<(bool, u64), Message> = BTreeMap::new();
    for (side_is_source, log) in [(true, source), (false, dest)] {
        let time = |us: u64| {
            if side_is_source {
                on_source(us)
            } else {
                on_dest(us)
            }
        };
        let peer_time = |us: u64| {
            if side_is_source {
                on_dest(us)
            } else {
                on_source(us)
            }
        };
        for st in log {
            // Sent by this side, or received from the other.
            let from_source = st.sent == side_is_source;
            let m = all.entry((from_source, st.seq)).or_insert_with(|| Message {
                from: if from_source { source_host } else { dest_host }.to_string(),
                to: if from_source { dest_host } else { source_host }.to_string(),
                kind: st.kind.clone(),
                seq: st.seq,
                ..Message::default()
            });
            if st.sent {
                m.sent_us = Some(time(st.at_us));
                m.lamport_sent = Some(st.lamport);
            } else {
                m.received_us = Some(time(st.at_us));
                m.lamport_received = Some(st.lamport);
                m.lamport_sent = m.lamport_sent.or(st.peer_lamport);
                m.sent_us = m.sent_us.or(st.peer_us.map(peer_time));
            }
        }
    }
    let mut out: Vec<Message> = all.into_values().collect();
    out.sort_by_key(|m| (m.sent_us.or(m.received_us), m.lamport_sent));
    out
}

/// One milestone of either agent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Event {
    /// Microseconds since the request, on the source's clock (the
    /// destination's events shifted by the clock offset).
    pub at_us: i64,
    /// Host name.
    pub host: String,
    /// What happened.
    pub what: String,
}

/// Page bytes carried by each lane.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LaneBytes {
    /// Pre-copy rounds (control lane, before the freeze).
    pub precopy: u64,
    /// Eager pages in the freeze (control lane).
    pub eager: u64,
    /// Demand faults (demand lane).
    pub demand: u64,
    /// Background push (bulk lane).
    pub bulk: u64,
}

/// Milestones of a migration, microseconds since the request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timeline {
    /// Pre-copy started (0 without pre-copy).
    pub precopy: u64,
    /// Process frozen.
    pub freeze: u64,
    /// Core and eager pages collected.
    pub dump: u64,
    /// Destination reports the process rebuilt.
    pub restored: u64,
    /// Process running on the destination.
    pub resume: u64,
    /// Last lazy page in, original gone.
    pub complete: u64,
}

/// One network-served fault as measured by the destination.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct FaultSample {
    /// Microseconds since resume.
    pub at_us: u64,
    /// Faulting address (destination address space).
    pub addr: u64,
    /// From the fault's read off the userfaultfd to its thread woken (the
    /// `UFFDIO_COPY` that installs the page and wakes it has returned),
    /// microseconds.
    pub latency_us: u64,
    /// Faulting thread (its id on the destination).
    pub tid: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Sequencer;
    use crate::msg::{DestMsg, SourceMsg};

    #[test]
    fn both_logs_pair_into_messages_that_keep_the_clock_rules() {
        let (src, dst) = (Sequencer::new(9), Sequencer::unbound());
        let (mut to_dst, mut to_src) = (Vec::new(), Vec::new());
        src.send(&mut to_dst, &SourceMsg::ClockProbe).unwrap();
        dst.recv::<SourceMsg>(&mut &to_dst[..]).unwrap();
        dst.send(&mut to_src, &DestMsg::Resumed).unwrap();
        src.recv::<DestMsg>(&mut &to_src[..]).unwrap();
        to_src.clear();
        // The destination's log travels before its last message is sent.
        let dest_log = dst.log().0;
        dst.send(&mut to_src, &DestMsg::Heartbeat).unwrap();
        src.recv::<DestMsg>(&mut &to_src[..]).unwrap();
        let started = src.log().0[0].at_us;
        let m = pair_messages(("host1", &src.log().0), ("host2", &dest_log), started, 0);
        let kinds: Vec<_> = m
            .iter()
            .map(|m| (m.from.as_str(), m.kind.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("host1", "ClockProbe"),
                ("host2", "Resumed"),
                ("host2", "Heartbeat")
            ]
        );
        for x in &m {
            let (s, r) = (x.lamport_sent.unwrap(), x.lamport_received.unwrap());
            assert!(r > s, "{x:?}");
            assert!(x.received_us.unwrap() >= x.sent_us.unwrap(), "{x:?}");
        }
        // The last one's send comes from the source's receipt of it.
        assert_eq!(m[2].lamport_sent, Some(4));
        assert_eq!(m[2].lamport_received, Some(5));
    }
}
