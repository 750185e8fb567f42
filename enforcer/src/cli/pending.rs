//! Verbs of the contract that this version does not implement yet: they say so and fail,
//! rather than pretending to work.

use clap::Args;

/// Arguments of a verb that is not built yet, accepted as given.
#[derive(Debug, Args)]
pub struct Rest {
    /// Arguments (not interpreted yet).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Exit code of a verb that is not available.
pub const NOT_AVAILABLE: i32 = 2;

/// Prints that `verb` is not available in this version and returns its exit code.
#[must_use]
pub fn not_yet(verb: &str) -> i32 {
    eprintln!(
        "enforcer {verb}: not available in this version ({}) yet; `enforcer --help` lists what is. \
         Flow events are in the daemon's log.",
        env!("CARGO_PKG_VERSION")
    );
    NOT_AVAILABLE
}
