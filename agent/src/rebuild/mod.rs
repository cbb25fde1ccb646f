//! Making a process again from its image: the rebuild inside a stub, and
//! the files shipped with it.

pub mod family;
pub mod restore;
pub mod shipped;
