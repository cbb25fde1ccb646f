//! Memory after the process runs: the fault handler, pages still to come,
//! the keeper, pre-copied pages, page sets, fault samples.

pub mod fault;
pub mod keeper;
pub mod lazy;
pub mod pageset;
pub mod reservoir;
pub mod store;
