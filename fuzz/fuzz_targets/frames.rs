//! A byte stream as it would arrive on any lane (after the handshake, or
//! from an `--insecure` peer) or on the control socket: every frame is
//! read, and every control payload decoded as each message type. Nothing
//! may panic, and nothing may be allocated beyond the frame limits.

#![no_main]

use libfuzzer_sys::fuzz_target;
use migrate_proto::envelope::{Envelope, Sequencer};
use migrate_proto::frame::{self, Frame};
use migrate_proto::msg::{
    DeputyMsg, DestMsg, PageRequest, PeerHello, PeerWelcome, Reply, Request, SourceMsg,
};

fuzz_target!(|data: &[u8]| {
    let mut r = data;
    let lane = Sequencer::unbound();
    // Each frame consumes at least its header: bounded by the input.
    while let Ok(f) = frame::read_frame(&mut r) {
        if let Frame::Control(body) = f {
            let _ = frame::decode::<SourceMsg>(&body);
            let _ = frame::decode::<DestMsg>(&body);
            let _ = frame::decode::<Request>(&body);
            let _ = frame::decode::<Reply>(&body);
            let _ = frame::decode::<PeerHello>(&body);
            let _ = frame::decode::<PeerWelcome>(&body);
            let _ = frame::decode::<DeputyMsg>(&body);
            let _ = frame::decode::<PageRequest>(&body);
            let _ = frame::decode::<Envelope<SourceMsg>>(&body);
            let _ = lane.open::<DestMsg>(&body);
        }
    }
});
