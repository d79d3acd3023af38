//! Parse stage: files -> KDL tree -> imports and overrides applied -> typed
//! [`Topology`](crate::model::Topology).
//!
//! [`load`] reads a topology file and everything it imports; [`load_str`]
//! does the same for text in memory. Both return every diagnostic found.

pub mod decode;
pub mod kdl;
pub mod kdl_rs;
mod load;
mod merge;
pub mod reader;
pub mod tree;

pub use load::{Loaded, MAX_FILE_SIZE, load, load_str};
