//! The kernel maps of identity across hosts: this agent's id, the pairwise token keys of its
//! peers, which addresses belong to a peer's workloads (whose SYNs to stamp), and which local
//! identity a verified remote workload has. Each setter makes the map equal to what it is
//! given, writing only what changed.

use std::collections::BTreeMap;

use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use enforcer_common::{
    ClusterConfig, PeerKey, RemoteKey, maps,
    token::counter,
};

use super::{DatapathError, ignore_missing};

/// The maps.
pub struct ClusterMaps {
    pub(super) config: Array<MapData, ClusterConfig>,
    pub(super) keys: HashMap<MapData, u32, PeerKey>,
    pub(super) addrs: HashMap<MapData, [u8; 16], u32>,
    pub(super) remote: HashMap<MapData, RemoteKey, u32>,
    pub(super) counters: PerCpuArray<MapData, u64>,
}

fn err(name: &'static str) -> impl Fn(aya::maps::MapError) -> DatapathError {
    move |source| DatapathError::Map { name, source }
}

/// Makes `map` hold exactly `want`.
fn sync<K, V>(map: &mut HashMap<MapData, K, V>, want: &BTreeMap<K, V>, name: &'static str) -> Result<(), DatapathError>
where
    K: aya::Pod + Ord,
    V: aya::Pod + PartialEq,
{
    let have: Vec<(K, V)> = map.iter().collect::<Result<_, _>>().map_err(err(name))?;
    for (k, _) in have.iter().filter(|(k, _)| !want.contains_key(k)) {
        ignore_missing(map.remove(k), name)?;
    }
    for (k, v) in want {
        if !have.iter().any(|(hk, hv)| hk == k && hv == v) {
            map.insert(k, v, 0).map_err(err(name))?;
        }
    }
    Ok(())
}

impl ClusterMaps {
    /// Turns tokens on with this agent's id (0: off).
    ///
    /// # Errors
    /// When the map write fails.
    pub fn set_agent_id(&mut self, agent_id: u32) -> Result<(), DatapathError> {
        self.config.set(0, ClusterConfig { agent_id, _pad: 0 }, 0).map_err(err(maps::CLUSTER))
    }

    /// The pairwise keys, by peer agent id.
    ///
    /// # Errors
    /// When a map operation fails.
    pub fn set_peer_keys(&mut self, keys: &BTreeMap<u32, PeerKey>) -> Result<(), DatapathError> {
        sync(&mut self.keys, keys, maps::PEER_KEYS)
    }

    /// Addresses of peers' workloads (IPv4-mapped for IPv4) → peer agent id.
    ///
    /// # Errors
    /// When a map operation fails.
    pub fn set_peer_addrs(&mut self, addrs: &BTreeMap<[u8; 16], u32>) -> Result<(), DatapathError> {
        sync(&mut self.addrs, addrs, maps::PEER_ADDRS)
    }

    /// Verified remote workloads → local identity.
    ///
    /// # Errors
    /// When a map operation fails.
    pub fn set_remote_ids(&mut self, ids: &BTreeMap<RemoteKey, u32>) -> Result<(), DatapathError> {
        sync(&mut self.remote, ids, maps::REMOTE_IDS)
    }

    /// Token counters summed over CPUs, by `token::counter` slot.
    ///
    /// # Errors
    /// When a counter cannot be read.
    pub fn counters(&self) -> Result<[u64; counter::LEN as usize], DatapathError> {
        let mut out = [0u64; counter::LEN as usize];
        for (slot, total) in (0u32..).zip(out.iter_mut()) {
            *total = self.counters.get(&slot, 0).map_err(err(maps::TOKEN_COUNTERS))?.iter().sum();
        }
        Ok(out)
    }
}
