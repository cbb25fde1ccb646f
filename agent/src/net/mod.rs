//! Links between agents: credentials and the encrypted handshake, dialling
//! and greeting peers, handshakes in flight, forwarded standard streams.

pub mod handshakes;
pub mod peer;
pub mod relay;
pub mod secure;
pub mod spares;
