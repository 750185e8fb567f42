//! The identity token a sending kernel adds to every TCP SYN of an enrolled workload, and that
//! the receiving kernel checks before it applies ingress policy.
//!
//! It is an RFC 6994 experimental TCP option (kind 253) with our 16-bit `ExID`, 20 bytes in all:
//!
//! ```text
//! kind=253 len=20 ExID(2) | sender agent id (4, BE) | profile serial (4, BE) | MAC (8, LE)
//! ```
//!
//! The MAC is SipHash-2-4, keyed with the pairwise key of the two agents for the current epoch
//! (X25519 between their certified keys, then HKDF per epoch, derived by both agents), over
//! the connection's 4-tuple as the sender sees it, the serial and the epoch number
//! ([`message`]). The receiver accepts the current and the previous epoch. `SipHash` lives here
//! so that the kernel and the agent (and the tests that forge tokens) run one implementation.

// The kernel programs need these inlined: the verifier checks one flat program per hook.
#![allow(clippy::inline_always, reason = "inlined into the kernel programs on purpose")]

/// The TCP option kind of RFC 6994 experiments.
pub const OPTION_KIND: u8 = 253;
/// Our experiment identifier in the option.
pub const EXID: u16 = 0xE4F0;
/// Length of the whole option, kind and length bytes included.
pub const OPTION_LEN: u8 = 20;
/// Length of one key epoch, seconds of wall-clock time.
pub const EPOCH_SECS: u64 = 60;

/// Value of `PEER_KEYS`, keyed by the peer's agent id: the pairwise keys of the current and
/// the previous epoch.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerKey {
    /// Epoch number of `key_cur` (wall-clock seconds / [`EPOCH_SECS`]).
    pub epoch_cur: u64,
    /// Epoch number of `key_prev`.
    pub epoch_prev: u64,
    /// `SipHash` key of the current epoch.
    pub key_cur: [u8; 16],
    /// `SipHash` key of the previous epoch.
    pub key_prev: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<PeerKey>() == 48);

/// Key of `REMOTE_IDS`: a workload of another agent, as its tokens name it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RemoteKey {
    /// The sender's agent id.
    pub agent: u32,
    /// The workload's profile serial on that agent.
    pub serial: u32,
}
const _: () = assert!(core::mem::size_of::<RemoteKey>() == 8);

/// The only element of `CLUSTER`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This agent's id; 0: no cluster, no tokens are written.
    pub agent_id: u32,
    /// Reserved, zero.
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<ClusterConfig>() == 8);

/// `TOKEN_COUNTERS` slots.
pub mod counter {
    /// A SYN whose token verified.
    pub const VERIFIED: u32 = 0;
    /// A SYN without a token.
    pub const ABSENT: u32 = 1;
    /// A token whose MAC matched neither epoch's key (forged, replayed, or a clock far off).
    pub const BAD_MAC: u32 = 2;
    /// A token from an agent id with no pairwise key (not a trusted peer).
    pub const UNKNOWN_AGENT: u32 = 3;
    /// A verified token naming a serial the sender's profiles do not (yet) list.
    pub const UNKNOWN_SERIAL: u32 = 4;
    /// An option with our `ExID` but the wrong length.
    pub const MALFORMED: u32 = 5;
    /// SYNs this host stamped.
    pub const STAMPED: u32 = 6;
    /// SYNs to a peer that had no room left for the option.
    pub const NO_ROOM: u32 = 7;
    /// Number of slots.
    pub const LEN: u32 = 8;
    /// Names of the slots, in order, as `status` and the metrics show them.
    pub const NAMES: [&str; LEN as usize] =
        ["verified", "absent", "bad_mac", "unknown_agent", "unknown_serial", "malformed", "stamped", "no_room"];
}

/// The MAC input: source and destination address (IPv4-mapped for IPv4) and port as the
/// sender sees them, the serial and the epoch, as six little-endian words.
#[must_use]
#[inline(always)]
pub fn message(src: &[u8; 16], dst: &[u8; 16], sport: u16, dport: u16, serial: u32, epoch: u64) -> [u64; 6] {
    [
        word(src, 0),
        word(src, 8),
        word(dst, 0),
        word(dst, 8),
        u64::from(sport) | u64::from(dport) << 16 | u64::from(serial) << 32,
        epoch,
    ]
}

#[inline(always)]
fn word(b: &[u8; 16], at: usize) -> u64 {
    u64::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3], b[at + 4], b[at + 5], b[at + 6], b[at + 7]])
}

/// SipHash-2-4 state.
struct Sip {
    v: [u64; 4],
}

impl Sip {
    #[inline(always)]
    fn new(key: &[u8; 16]) -> Self {
        let (k0, k1) = (
            u64::from_le_bytes([key[0], key[1], key[2], key[3], key[4], key[5], key[6], key[7]]),
            u64::from_le_bytes([key[8], key[9], key[10], key[11], key[12], key[13], key[14], key[15]]),
        );
        Self { v: [k0 ^ 0x736f_6d65_7073_6575, k1 ^ 0x646f_7261_6e64_6f6d, k0 ^ 0x6c79_6765_6e65_7261, k1 ^ 0x7465_6462_7974_6573] }
    }

    #[inline(always)]
    fn round(&mut self) {
        let v = &mut self.v;
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }

    #[inline(always)]
    fn compress(&mut self, m: u64) {
        self.v[3] ^= m;
        self.round();
        self.round();
        self.v[0] ^= m;
    }

    #[inline(always)]
    fn finish(mut self, last: u64) -> u64 {
        self.compress(last);
        self.v[2] ^= 0xff;
        self.round();
        self.round();
        self.round();
        self.round();
        self.v[0] ^ self.v[1] ^ self.v[2] ^ self.v[3]
    }
}

/// SipHash-2-4 of the 48-byte [`message`] (what the kernel computes).
#[must_use]
#[inline(always)]
pub fn mac(key: &[u8; 16], msg: &[u64; 6]) -> u64 {
    let mut s = Sip::new(key);
    let mut i = 0;
    while i < 6 {
        s.compress(msg[i]);
        i += 1;
    }
    s.finish(48 << 56)
}

/// [`mac`] of a [`message`] given as its first five words and the epoch (the receiver tries
/// two epochs over the same five words).
#[must_use]
#[inline(always)]
pub fn mac_at(key: &[u8; 16], head: &[u64; 6], epoch: u64) -> u64 {
    let mut s = Sip::new(key);
    let mut i = 0;
    while i < 5 {
        s.compress(head[i]);
        i += 1;
    }
    s.compress(epoch);
    s.finish(48 << 56)
}

/// SipHash-2-4 of any byte string (the reference form, for checks against published vectors).
#[must_use]
pub fn siphash24(key: &[u8; 16], data: &[u8]) -> u64 {
    let mut s = Sip::new(key);
    let mut chunks = data.chunks_exact(8);
    for c in chunks.by_ref() {
        s.compress(u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
    }
    let mut last = [0u8; 8];
    let tail = chunks.remainder();
    last[..tail.len()].copy_from_slice(tail);
    #[expect(clippy::cast_possible_truncation, reason = "SipHash takes the length modulo 256")]
    {
        last[7] = data.len() as u8;
    }
    s.finish(u64::from_le_bytes(last))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

    #[test]
    fn published_siphash24_vectors() {
        // From the SipHash paper (Aumasson, Bernstein), appendix A, and the reference
        // implementation's vectors: key 00..0f, message 00..(n-1).
        let msg: [u8; 64] = core::array::from_fn(|i| u8::try_from(i).unwrap_or(0));
        assert_eq!(siphash24(&KEY, &msg[..0]), 0x726f_db47_dd0e_0e31);
        assert_eq!(siphash24(&KEY, &msg[..15]), 0xa129_ca61_49be_45e5);
        assert_eq!(siphash24(&KEY, &msg[..8]), 0x93f5_f579_9a93_2462);
    }

    #[test]
    fn the_word_form_equals_the_byte_form() {
        let src = [1u8; 16];
        let dst = [2u8; 16];
        let m = message(&src, &dst, 40000, 443, 256, 29_000_000);
        let mut bytes = [0u8; 48];
        for (i, w) in m.iter().enumerate() {
            bytes[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        assert_eq!(mac(&KEY, &m), siphash24(&KEY, &bytes));
        assert_eq!(mac_at(&KEY, &m, 29_000_000), mac(&KEY, &m));
        assert_ne!(mac(&KEY, &m), mac(&KEY, &message(&src, &dst, 40000, 443, 257, 29_000_000)), "the serial counts");
        assert_ne!(mac(&KEY, &m), mac(&KEY, &message(&src, &dst, 40000, 443, 256, 29_000_001)), "the epoch counts");
    }
}
