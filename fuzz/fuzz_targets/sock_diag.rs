//! The agent's sock_diag parser: a netlink dump's datagrams split into
//! messages, each read as a `unix_diag_msg` with its attributes. Lengths
//! in the input are anything; nothing may panic or read out of bounds.

#![no_main]

use libfuzzer_sys::fuzz_target;
use migrate_agent::host::sys;

fuzz_target!(|data: &[u8]| {
    let mut messages = Vec::new();
    sys::split_netlink(data, &mut messages);
    for m in messages.iter().map(Vec::as_slice).chain([data]) {
        if let Some(s) = sys::parse_unix_diag(m) {
            assert!(s.name.as_ref().map_or(0, Vec::len) <= m.len());
        }
    }
});
