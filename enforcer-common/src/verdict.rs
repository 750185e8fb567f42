//! Verdicts as stored in maps and events.

/// What the kernel does with an operation.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through.
    Allow = 1,
    /// Refuse it (`EPERM` for a connect or send, `EACCES` for a file).
    Deny = 2,
    /// It would be denied: let it through and report it.
    Audit = 3,
}

impl Verdict {
    /// Decodes a map or event byte; anything unknown is `None` and callers treat it as deny.
    #[must_use]
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Allow),
            2 => Some(Self::Deny),
            3 => Some(Self::Audit),
            _ => None,
        }
    }

    /// Whether the operation goes through.
    #[must_use]
    pub const fn passes(self) -> bool {
        !matches!(self, Self::Deny)
    }
}
