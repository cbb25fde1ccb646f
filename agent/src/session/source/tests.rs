//! The source's own rules, without a destination agent: which answers to
//! the commit void it and which leave the copy's fate unknown (the
//! exactly-once rule turns on that), and which files travel with the
//! image.

use super::committed::{commit_answer, CommitAnswer};
use super::*;
use std::net::{TcpListener, TcpStream};

use migrate_proto::msg::FileNeed;

/// Runs the commit against a destination that reads it and then does
/// `answer` with its end of the control lane; returns the source's
/// reading of it and the commit the destination saw.
fn commit_against(
    answer: impl FnOnce(&mut TcpStream, &Sequencer) + Send + 'static,
) -> (CommitAnswer, Option<SourceMsg>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut ctl = PeerStream::plain(TcpStream::connect(listener.local_addr().unwrap()).unwrap());
    let (mut dest, _) = listener.accept().unwrap();
    let dest = std::thread::spawn(move || {
        let seq = Sequencer::unbound();
        let got = seq.recv::<SourceMsg>(&mut dest).ok();
        answer(&mut dest, &seq);
        got
    });
    let got = commit_answer(
        &mut ctl,
        &Sequencer::new(42),
        42,
        (vec![10], vec![]),
        "host2",
    );
    (got, dest.join().unwrap())
}

#[test]
fn the_commit_carries_the_pending_signals() {
    let (_, seen) = commit_against(|d, seq| seq.send(d, &DestMsg::Resumed).unwrap());
    match seen {
        Some(SourceMsg::Commit { id, signals, .. }) => assert_eq!((id, signals), (42, vec![10])),
        other => panic!("the destination saw {other:?}"),
    }
}

#[test]
fn only_a_copy_that_never_ran_voids_the_commit() {
    let (a, _) = commit_against(|d, seq| seq.send(d, &DestMsg::Resumed).unwrap());
    assert!(matches!(a, CommitAnswer::Resumed), "{a:?}");

    let failed = |ran| {
        move |d: &mut TcpStream, seq: &Sequencer| {
            let error = "no memory".to_string();
            seq.send(d, &DestMsg::Failed { error, ran }).unwrap()
        }
    };
    // Failed before it ran: the original may run again.
    let (a, _) = commit_against(failed(false));
    assert!(
        matches!(&a, CommitAnswer::NeverRan(e) if e == "no memory"),
        "{a:?}"
    );
    // Failed after it ran: lost, and known gone.
    let (a, _) = commit_against(failed(true));
    assert!(matches!(a, CommitAnswer::Lost(_, true)), "{a:?}");

    // Silence, a closed lane or an answer off script: lost, fate unknown.
    let (a, _) = commit_against(|d, _| d.shutdown(std::net::Shutdown::Both).unwrap());
    assert!(matches!(a, CommitAnswer::Lost(_, false)), "{a:?}");
    let (a, _) = commit_against(|d, seq| seq.send(d, &DestMsg::Heartbeat).unwrap());
    assert!(matches!(a, CommitAnswer::Lost(_, false)), "{a:?}");
    // An answer out of sequence is no answer.
    let (a, _) = commit_against(|d, _| {
        Sequencer::new(7).send(d, &DestMsg::Resumed).unwrap();
    });
    assert!(matches!(a, CommitAnswer::Lost(_, false)), "{a:?}");
}

fn need(path: &str, fd: i32, size: u64, deleted: bool) -> FileNeed {
    FileNeed {
        path: path.into(),
        ident: None,
        why: format!("fd {fd}"),
        ship: Some((fd, size)),
        deleted,
        same_file: None,
        access: 0,
    }
}

#[test]
fn files_travel_when_deleted_missing_or_different_within_the_limit() {
    let needs = [
        need("/here", 3, 10, false),
        need("/missing", 4, 10, false),
        need("/gone", 5, 10, true),
        need("/other", 6, 10, false),
        // A second descriptor of a missing file ships once.
        need("/missing", 4, 10, false),
    ];
    let missing = ["/missing".to_string()];
    let different = ["/other".to_string()];
    // Deleted and different files arrive as private copies.
    assert_eq!(
        files_to_ship(&needs, &missing, &different, 100),
        Ok(vec![(4, false), (5, true), (6, true)])
    );
    // One over the limit: refused, naming it.
    let big = [need("/missing", 4, 101, false)];
    let why = files_to_ship(&big, &missing, &[], 100).unwrap_err();
    assert!(
        why[0].starts_with("fd 4: /missing (101 bytes) is missing"),
        "{why:?}"
    );
    // Each within the limit, together over it: refused.
    let why = files_to_ship(&needs, &missing, &different, 25).unwrap_err();
    assert!(why[0].contains("30 bytes together"), "{why:?}");
}

#[test]
fn the_push_steps_aside_after_a_demand_answer_for_what_is_left_of_the_window() {
    let w = PUSH_YIELD.as_micros() as u64;
    let mut y = FaultYield::default();
    // No demand request yet, or one a window ago or more: no pause.
    assert_eq!(y.pause(10_000, 0), None);
    assert_eq!(y.pause(10_000, 10_000 - w), None);
    // One answered a quarter of a window ago: the rest of the window.
    assert_eq!(
        y.pause(10_000, 10_000 - w / 4),
        Some(Duration::from_micros(w - w / 4))
    );
    assert_eq!((y.pauses, y.paused_us), (1, w - w / 4));
    // Not again until the push has run its minimum after the pause.
    let back = 10_000 + (w - w / 4);
    assert_eq!(y.pause(back, back), None);
    let run = PUSH_YIELD_RUN.as_micros() as u64;
    assert_eq!(y.pause(back + run, back + run), Some(PUSH_YIELD));
}

#[test]
fn a_process_faulting_without_a_break_still_leaves_the_push_its_share() {
    let (w, run) = (
        PUSH_YIELD.as_micros() as u64,
        PUSH_YIELD_RUN.as_micros() as u64,
    );
    // A demand answer at every microsecond for 100 windows.
    let mut y = FaultYield::default();
    let (mut now, mut ran) = (1_000_000u64, 0u64);
    let end = now + 100 * w;
    while now < end {
        match y.pause(now, now) {
            Some(d) => now += d.as_micros() as u64,
            None => {
                ran += 1;
                now += 1;
            }
        }
    }
    // The push runs `run` of every `w + run`.
    let share = ran as f64 / (100 * w) as f64;
    let expected = run as f64 / (w + run) as f64;
    assert!(
        (share - expected).abs() < 0.02,
        "share {share:.3}, expected {expected:.3}"
    );
}

#[test]
fn the_push_clock_is_never_zero_and_never_steps_back() {
    let mut last = steady_us();
    assert!(last > 0, "0 means no demand request yet");
    for _ in 0..1000 {
        let now = steady_us();
        assert!(now >= last);
        last = now;
    }
}
