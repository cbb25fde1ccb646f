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
fn the_push_clock_is_never_zero_and_never_steps_back() {
    let mut last = steady_us();
    assert!(last > 0, "0 means no demand request yet");
    for _ in 0..1000 {
        let now = steady_us();
        assert!(now >= last);
        last = now;
    }
}
