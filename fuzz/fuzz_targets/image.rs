//! A process image as a destination receives it (the `Core` message's
//! payload): decoded, then validated against the limits a destination
//! applies before it builds anything. Neither may panic; an image that
//! passes must be internally consistent (checked again here).

#![no_main]

use libfuzzer_sys::fuzz_target;
use migrate_proto::frame;
use migrate_proto::image::{ImageLimits, ProcessImage, USER_END, VSYSCALL};
use migrate_proto::msg::SourceMsg;

fn check(image: &ProcessImage) {
    let limits = ImageLimits {
        pages: 1 << 20,
        ..ImageLimits::default()
    };
    if image.validate(&limits).is_ok() {
        let mut end = 0;
        for v in &image.mm.vmas {
            assert!(v.start >= end && v.start < v.end);
            assert!(v.end <= USER_END || v.start == VSYSCALL);
            end = v.end;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(image) = frame::decode::<ProcessImage>(data) {
        check(&image);
    }
    if let Ok(SourceMsg::Core { image, .. }) = frame::decode::<SourceMsg>(data) {
        check(&image);
    }
});
