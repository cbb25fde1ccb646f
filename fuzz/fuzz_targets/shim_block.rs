//! The shim's state block as the agent reads it from a process's memory
//! (which the process itself can write anything into): decoding must not
//! panic, and a block that decodes encodes back to one that decodes the
//! same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use migrate_proto::shim::{ShimState, SIZE};

fuzz_target!(|data: &[u8]| {
    if let Some(state) = ShimState::decode(data) {
        let mut again = vec![0u8; SIZE];
        state.encode_into(&mut again);
        let back = ShimState::decode(&again).expect("an encoded block decodes");
        assert_eq!(back, state);
    }
});
