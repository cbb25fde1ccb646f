//! The cooperating side of `migrate` inside a process (`LD_PRELOAD`).
//!
//! Not built yet: the shim is the subject of a later issue. This crate
//! exports nothing, so preloading it changes nothing in a process.
