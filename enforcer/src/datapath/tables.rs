//! Writing compiled policy into the kernel as a whole, atomically.
//!
//! Rule, port-block and ipcache entries carry a generation byte. The agent fills the
//! generation that is not in force — diffing against what it holds, so a small change is a few
//! map writes — and then flips `AgentConfig::generation`. A decision reads the generation once,
//! so it sees the old policy or the new one, never a mix. What each generation holds is
//! mirrored here; a restarted agent rebuilds the mirrors from the pinned maps.

use std::collections::BTreeMap;

use aya::maps::{HashMap, LpmTrie, MapData, MapError, lpm_trie::Key};
use enforcer_common::{
    FileKey, FileValue, IpcacheKey, NetRuleKey, NetRuleValue, RangeKey,
    file::{FILE_FIXED_BITS, FILE_PATH_LEN},
    identity::Identity,
    maps,
    net::RANGE_FIXED_BITS,
};

use super::{DatapathError, ignore_missing};
use crate::policy::compile::{
    BlockKey, Compiled, ExactKey, PortBlock,
    files::{FileCompiled, FileEntry},
};

/// What one generation holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mirror {
    /// Exact-port entries.
    pub exact: BTreeMap<ExactKey, NetRuleValue>,
    /// Port blocks.
    pub blocks: BTreeMap<BlockKey, NetRuleValue>,
    /// ipcache prefixes (whole addresses, length 128, live in `IPCACHE_HOSTS`).
    pub ipcache: BTreeMap<([u8; 16], u8), u32>,
    /// File rule keys (identity, key bytes).
    pub files: BTreeMap<(Identity, Vec<u8>), FileValue>,
}

fn file_value(e: &FileEntry) -> FileValue {
    FileValue { verdicts: [e.verdicts[0] as u8, e.verdicts[1] as u8, e.verdicts[2] as u8, 0], rule_ids: e.rule_ids }
}

/// The kernel key of file rule bytes `bytes` (at most [`FILE_PATH_LEN`]; longer ones are cut,
/// which the parser prevents by refusing paths that long).
fn file_key((identity, bytes): &(Identity, Vec<u8>), generation: u8) -> Key<FileKey> {
    let mut path = [0u8; FILE_PATH_LEN];
    let n = bytes.len().min(FILE_PATH_LEN);
    path[..n].copy_from_slice(&bytes[..n]);
    let bits = FILE_FIXED_BITS + 8 * u32::try_from(n).unwrap_or(0);
    Key::new(bits, FileKey { generation, _pad: [0; 3], identity: identity.to_be_bytes(), path })
}

/// How many map writes an apply took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Entries written.
    pub written: usize,
    /// Entries removed.
    pub removed: usize,
    /// The generation now in force.
    pub generation: u8,
}

fn exact_key(k: &ExactKey, generation: u8) -> NetRuleKey {
    let &(identity, remote, proto, direction, port) = k;
    NetRuleKey { identity, remote, port, proto, direction, generation, _pad: [0; 3] }
}

fn block_key(k: &BlockKey, generation: u8) -> Key<RangeKey> {
    let &(identity, remote, proto, direction, block) = k;
    Key::new(
        RANGE_FIXED_BITS + u32::from(block.bits),
        RangeKey {
            generation,
            direction,
            proto,
            _pad: 0,
            identity: identity.to_be_bytes(),
            remote: remote.to_be_bytes(),
            port: block.port.to_be_bytes(),
        },
    )
}

fn ipcache_key(&(addr, len): &([u8; 16], u8), generation: u8) -> Key<IpcacheKey> {
    Key::new(8 + u32::from(len), IpcacheKey { generation, addr })
}

/// The length of a whole address: such ipcache entries go to the hash, not the trie.
const HOST: u8 = 128;

/// Whole-address ipcache entries of a generation.
fn hosts(m: &Mirror) -> usize {
    m.ipcache.keys().filter(|(_, len)| *len == HOST).count()
}

/// Removes the first `left` keys of `m` (fewer if it has fewer), counting them off `left`.
fn drop_first<K: Ord + Clone, V>(m: &mut BTreeMap<K, V>, left: &mut usize) {
    let keys: Vec<K> = m.keys().take(*left).cloned().collect();
    *left -= keys.len();
    for k in keys {
        m.remove(&k);
    }
}

/// The maps that hold compiled policy.
pub struct Tables {
    pub(super) rules: HashMap<MapData, NetRuleKey, NetRuleValue>,
    pub(super) ranges: LpmTrie<MapData, RangeKey, NetRuleValue>,
    pub(super) ipcache: LpmTrie<MapData, IpcacheKey, u32>,
    pub(super) hosts: HashMap<MapData, IpcacheKey, u32>,
    pub(super) files: LpmTrie<MapData, FileKey, FileValue>,
    mirrors: [Mirror; 2],
}

impl Tables {
    /// Entries in each policy map (both generations), with its capacity.
    #[must_use]
    pub fn fill_levels(&self) -> [(&'static str, usize, u32); 5] {
        let sum = |f: fn(&Mirror) -> usize| self.mirrors.iter().map(f).sum::<usize>();
        [
            (maps::NET_RULES, sum(|m| m.exact.len()), maps::NET_RULES_MAX),
            (maps::NET_RANGES, sum(|m| m.blocks.len()), maps::NET_RANGES_MAX),
            (maps::IPCACHE, sum(|m| m.ipcache.len() - hosts(m)), maps::IPCACHE_MAX),
            (maps::IPCACHE_HOSTS, sum(hosts), maps::IPCACHE_MAX),
            (maps::FILE_RULES, sum(|m| m.files.len()), maps::FILE_RULES_MAX),
        ]
    }
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> DatapathError {
    move |source| DatapathError::Map { name, source }
}

/// One change to a map.
enum Op<'a, K, V> {
    Remove(&'a K),
    Put(&'a K, &'a V),
}

/// Turns `old` into `new` through `apply`: removals first, then the entries that changed.
fn sync<K: Ord, V: PartialEq>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
    stats: &mut ApplyStats,
    mut apply: impl FnMut(Op<'_, K, V>) -> Result<(), DatapathError>,
) -> Result<(), DatapathError> {
    for k in old.keys().filter(|k| !new.contains_key(k)) {
        apply(Op::Remove(k))?;
        stats.removed += 1;
    }
    for (k, v) in new.iter().filter(|(k, v)| old.get(k) != Some(v)) {
        apply(Op::Put(k, v))?;
        stats.written += 1;
    }
    Ok(())
}

impl Tables {
    /// Wraps the maps and reads back what each generation holds.
    ///
    /// # Errors
    /// When a map cannot be iterated.
    pub(super) fn adopt(
        rules: HashMap<MapData, NetRuleKey, NetRuleValue>,
        ranges: LpmTrie<MapData, RangeKey, NetRuleValue>,
        ipcache: LpmTrie<MapData, IpcacheKey, u32>,
        hosts: HashMap<MapData, IpcacheKey, u32>,
        files: LpmTrie<MapData, FileKey, FileValue>,
    ) -> Result<Self, DatapathError> {
        let mut mirrors: [Mirror; 2] = Default::default();
        for item in &rules {
            let (k, v) = item.map_err(map_err(maps::NET_RULES))?;
            if let Some(m) = mirrors.get_mut(usize::from(k.generation)) {
                m.exact.insert((k.identity, k.remote, k.proto, k.direction, k.port), v);
            }
        }
        for item in &ranges {
            let (k, v) = item.map_err(map_err(maps::NET_RANGES))?;
            let d = k.data();
            let bits = u8::try_from(k.prefix_len().saturating_sub(RANGE_FIXED_BITS)).unwrap_or(16);
            let block = PortBlock { port: u16::from_be_bytes(d.port), bits };
            let key = (u32::from_be_bytes(d.identity), u32::from_be_bytes(d.remote), d.proto, d.direction, block);
            if let Some(m) = mirrors.get_mut(usize::from(d.generation)) {
                m.blocks.insert(key, v);
            }
        }
        for item in &ipcache {
            let (k, v) = item.map_err(map_err(maps::IPCACHE))?;
            let d = k.data();
            let len = u8::try_from(k.prefix_len().saturating_sub(8)).unwrap_or(128);
            if let Some(m) = mirrors.get_mut(usize::from(d.generation)) {
                m.ipcache.insert((d.addr, len), v);
            }
        }
        for item in &hosts {
            let (k, v) = item.map_err(map_err(maps::IPCACHE_HOSTS))?;
            if let Some(m) = mirrors.get_mut(usize::from(k.generation)) {
                m.ipcache.insert((k.addr, HOST), v);
            }
        }
        for item in &files {
            let (k, v) = item.map_err(map_err(maps::FILE_RULES))?;
            let d = k.data();
            let n = usize::try_from(k.prefix_len().saturating_sub(FILE_FIXED_BITS) / 8).unwrap_or(0).min(FILE_PATH_LEN);
            if let Some(m) = mirrors.get_mut(usize::from(d.generation)) {
                m.files.insert((u32::from_be_bytes(d.identity), d.path[..n].to_vec()), v);
            }
        }
        Ok(Self { rules, ranges, ipcache, hosts, files, mirrors })
    }

    /// What generation `g` holds.
    #[must_use]
    pub fn mirror(&self, g: u8) -> &Mirror {
        &self.mirrors[usize::from(g & 1)]
    }

    /// Makes generation `g` hold exactly `new`.
    ///
    /// # Errors
    /// When a map write fails. The generation then holds an unknown mix and must not be
    /// flipped to; its mirror is left empty so the next fill writes every entry again.
    pub(super) fn fill(&mut self, g: u8, new: &Compiled, files: &FileCompiled, stats: &mut ApplyStats) -> Result<(), DatapathError> {
        let g = g & 1;
        let old = std::mem::take(&mut self.mirrors[usize::from(g)]);
        let new = Mirror {
            exact: new.exact.clone(),
            blocks: new.blocks.clone(),
            ipcache: new.ipcache.clone(),
            files: files.entries.iter().map(|(k, e)| (k.clone(), file_value(e))).collect(),
        };
        self.write(g, &old, &new, stats)?;
        self.mirrors[usize::from(g)] = new;
        Ok(())
    }

    /// Removes up to `budget` entries of generation `g` (one not in force). Returns how many.
    ///
    /// # Errors
    /// When a removal fails; the mirror then keeps every entry it held, a superset of what
    /// the kernel holds, which the next write handles (a missing entry is not an error).
    pub(super) fn trim(&mut self, g: u8, budget: usize) -> Result<usize, DatapathError> {
        let g = g & 1;
        let old = &self.mirrors[usize::from(g)];
        if old.exact.is_empty() && old.blocks.is_empty() && old.ipcache.is_empty() && old.files.is_empty() {
            return Ok(0);
        }
        let mut kept = old.clone();
        let mut left = budget;
        drop_first(&mut kept.exact, &mut left);
        drop_first(&mut kept.blocks, &mut left);
        drop_first(&mut kept.ipcache, &mut left);
        drop_first(&mut kept.files, &mut left);
        let old = std::mem::take(&mut self.mirrors[usize::from(g)]);
        let mut stats = ApplyStats::default();
        match self.write(g, &old, &kept, &mut stats) {
            Ok(()) => {
                self.mirrors[usize::from(g)] = kept;
                Ok(stats.removed)
            }
            Err(e) => {
                self.mirrors[usize::from(g)] = old;
                Err(e)
            }
        }
    }

    fn write(&mut self, g: u8, old: &Mirror, new: &Mirror, stats: &mut ApplyStats) -> Result<(), DatapathError> {
        let rules = &mut self.rules;
        sync(&old.exact, &new.exact, stats, |op| match op {
            Op::Remove(k) => ignore_missing(rules.remove(&exact_key(k, g)), maps::NET_RULES),
            Op::Put(k, v) => rules.insert(exact_key(k, g), *v, 0).map_err(map_err(maps::NET_RULES)),
        })?;
        let ranges = &mut self.ranges;
        sync(&old.blocks, &new.blocks, stats, |op| match op {
            Op::Remove(k) => ignore_missing(ranges.remove(&block_key(k, g)), maps::NET_RANGES),
            Op::Put(k, v) => ranges.insert(&block_key(k, g), *v, 0).map_err(map_err(maps::NET_RANGES)),
        })?;
        let (ipcache, hosts) = (&mut self.ipcache, &mut self.hosts);
        sync(&old.ipcache, &new.ipcache, stats, |op| match op {
            Op::Remove(&(addr, HOST)) => {
                ignore_missing(hosts.remove(&IpcacheKey { generation: g, addr }), maps::IPCACHE_HOSTS)
            }
            Op::Put(&(addr, HOST), v) => {
                hosts.insert(IpcacheKey { generation: g, addr }, *v, 0).map_err(map_err(maps::IPCACHE_HOSTS))
            }
            Op::Remove(k) => ignore_missing(ipcache.remove(&ipcache_key(k, g)), maps::IPCACHE),
            Op::Put(k, v) => ipcache.insert(&ipcache_key(k, g), *v, 0).map_err(map_err(maps::IPCACHE)),
        })?;
        let files = &mut self.files;
        sync(&old.files, &new.files, stats, |op| match op {
            Op::Remove(k) => ignore_missing(files.remove(&file_key(k, g)), maps::FILE_RULES),
            Op::Put(k, v) => files.insert(&file_key(k, g), *v, 0).map_err(map_err(maps::FILE_RULES)),
        })?;
        Ok(())
    }
}
