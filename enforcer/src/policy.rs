//! Policies: the model ([`model`]), label selectors ([`selector`]), the YAML front end with
//! file/line/field errors ([`parse`]), the pure compiler to kernel entries ([`compile`]) and
//! policies suggested from an observation ([`suggest`]).
//!
//! Nothing here does I/O beyond reading the files it is asked to parse, and nothing touches the
//! kernel: the compiler's output is exactly the `enforcer-common` entries the datapath writes.

pub mod compile;
pub mod model;
pub mod parse;
pub mod selector;
pub mod suggest;

pub use model::*;
pub use selector::Selector;
