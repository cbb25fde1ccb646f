//! The wire protocol and the process image model of `migrate`.
//!
//! Everything that crosses a socket lives here: the frame header
//! ([`frame`]), the control messages between the CLI and its agent and
//! between two agents ([`msg`]; on a migration's control lane each in an
//! [`envelope`] with the migration's id and a sequence number), the process image shipped at freeze time
//! ([`image`]) and the per-migration record ([`record`]).
//!
//! # A migration on the wire
//!
//! ```text
//! source S                                   destination D
//!  | -- control lane: Hello{Control} ----------> |
//!  | <------------------------- Welcome -------- |
//!  | -- FileCheck -----------------------------> |  (before the freeze; D starts a stub)
//!  | <------------------------ FileVerdict ----- |
//!  |   freeze, dump                              |
//!  | -- Core(image) + Pages(eager)* + EagerDone > |  restore, all threads stopped
//!  | <------------------------- Ready ---------- |
//!  | -- Commit --------------------------------> |  point of no return on S
//!  | <------------------------- Resumed -------- |  downtime ends
//!  | == demand lane: PageRequest -> Pages ====== |
//!  | == bulk lane:   Pages* -> PushDone ======== |
//!  | <------------------------- Complete ------- |  every lazy page in
//!  |   kill the frozen original                  |
//!  | -- Done ----------------------------------> |
//! ```
//!
//! Before `Commit` any failure on either side aborts: S resumes the
//! original untouched and D kills what it built. After `Commit` the
//! original never runs again.
//!
//! # Versions
//!
//! The first frame of every connection is a `Hello` carrying
//! [`PROTOCOL_VERSION`]; a peer speaking another version is refused with a
//! clear error before anything else is exchanged.
#![deny(unsafe_code)]

pub mod budget;
pub mod bytes;
pub mod envelope;
pub mod frame;
pub mod image;
pub mod msg;
pub mod options;
pub mod record;
pub mod refusal;
pub mod shim;

/// Version of the agent-to-agent and CLI-to-agent protocol.
pub const PROTOCOL_VERSION: u32 = 19;

/// After the commit each agent sends a heartbeat on the control lane this
/// often, milliseconds.
pub const HEARTBEAT_EVERY_MS: u64 = 1000;
/// A peer silent this long after the commit counts as gone, milliseconds.
pub const PEER_SILENCE_MS: u64 = 5000;

/// Size of a page on the supported architecture (x86_64).
pub const PAGE_SIZE: u64 = 4096;
