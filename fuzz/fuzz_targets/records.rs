//! The agents' encrypted record parser (`agent/src/net/secure.rs`): after a
//! real Noise handshake over loopback, the bytes of one input go on the
//! wire as if from the peer. Whatever their lengths say, reading must not
//! panic, and no forged byte may ever read as plaintext (the fuzzer holds
//! no key, so every record it makes must fail its tag).

#![no_main]

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use migrate_agent::net::secure::{fuzz_link, keygen, Credentials, Security};

fn cluster() -> &'static (Security, Security) {
    static SEC: OnceLock<(Security, Security)> = OnceLock::new();
    SEC.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("migrate-fuzz-records-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        keygen(&dir, &["a".into(), "b".into()]).expect("keygen");
        let load = |h: &str| Security::Noise(Arc::new(Credentials::load(&dir, h).expect("load")));
        let sec = (load("a"), load("b"));
        let _ = std::fs::remove_dir_all(&dir);
        sec
    })
}

fuzz_target!(|data: &[u8]| {
    let (a, b) = cluster();
    let Ok((mut rx, mut raw)) = fuzz_link(a, b) else {
        return;
    };
    let _ = rx.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = raw.write_all(data);
    let _ = raw.shutdown(Shutdown::Write);
    let mut buf = [0u8; 4096];
    for _ in 0..1000 {
        match rx.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => panic!("{n} forged bytes read as plaintext"),
        }
    }
});
