//! One migration from each side: the commit rule and the two state
//! machines, what was received and what became of it, asking after a lost
//! copy, the drain, records, lineage, the deputy left at home.

pub mod ask;
pub mod clock;
pub mod commit;
pub mod deputy;
pub mod dest;
pub mod drain;
pub mod history;
pub mod lineage;
pub mod probe;
pub mod received;
pub mod source;
