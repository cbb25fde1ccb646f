//! Another host's clock, by Cristian's method: its time plus half the
//! round trip, over several probes, the tightest kept. A migration's
//! source asks its destination (`source::wire`), `migrate-agent check`
//! asks each peer (`probe`).

/// The peer's clock minus ours (microseconds) and its uncertainty (half
/// the tightest round trip), from `probes` calls of `ask`, which returns
/// the peer's time in microseconds since the epoch.
pub fn offset<E>(probes: usize, mut ask: impl FnMut() -> Result<u64, E>) -> Result<(i64, u64), E> {
    let mut best: Option<(u64, i64)> = None;
    for _ in 0..probes {
        let sent = crate::unix_us();
        let peer = ask()?;
        let rtt = crate::unix_us().saturating_sub(sent);
        let offset = peer as i64 - (sent + rtt / 2) as i64;
        if best.is_none_or(|(r, _)| rtt < r) {
            best = Some((rtt, offset));
        }
    }
    let (rtt, offset) = best.unwrap_or((0, 0));
    Ok((offset, rtt.div_ceil(2)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_peer_ahead_is_found_ahead_within_the_round_trip() {
        let (offset, unc) = super::offset(4, || Ok::<_, ()>(crate::unix_us() + 5_000_000)).unwrap();
        assert!(
            (offset - 5_000_000).unsigned_abs() <= unc + 1_000,
            "{offset} ±{unc}"
        );
    }
}
