//! The cooperating side of `migrate` inside a process (`LD_PRELOAD`).
//!
//! `migrate run` preloads it and registers the process with its agent.
//! Its API (callbacks, `migrate_request`, queries), pid virtualization and
//! the TCP policies are not built yet: this crate exports nothing, so
//! preloading it changes nothing in a process.
