//! Lab harness and workloads for the integration tests.

pub mod bins;
pub mod gate;
pub mod lab;
