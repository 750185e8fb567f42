//! Which map layout an object needs: a short digest of every pinned map's definition (name,
//! type, key and value size, capacity, flags), read from the object itself.
//!
//! Pinned maps live in `maps/<layout>/`: an agent whose object has the same layout reuses the
//! maps (and the state in them) as they are; one with a different layout gets fresh maps
//! beside the old ones, fills them while the old programs keep enforcing from the old maps,
//! then swaps its programs in and removes the old maps. No upgrade leaves a gap or makes a
//! program read a map laid out for another.

use std::fmt::Write as _;

use aya_obj::maps::PinningType;

/// The layout id of `object` (12 hex digits), with the capacities in `max_entries` (map name →
/// capacity) overriding the object's.
///
/// # Errors
/// When the object cannot be parsed.
pub fn id(object: &[u8], max_entries: &[(&str, u32)]) -> Result<String, String> {
    let obj = aya_obj::Object::parse(object).map_err(|e| format!("parsing the eBPF object: {e}"))?;
    let mut maps: Vec<_> = obj.maps.iter().filter(|(_, m)| m.pinning() == PinningType::ByName).collect();
    maps.sort_by(|a, b| a.0.cmp(b.0));
    let mut text = String::new();
    for (name, m) in maps {
        let _ = writeln!(
            text,
            "{name} {} {} {} {} {}",
            m.map_type(),
            m.key_size(),
            m.value_size(),
            max_entries.iter().find(|(n, _)| n == name).map_or(m.max_entries(), |(_, v)| *v),
            m.map_flags()
        );
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    Ok(digest.as_ref()[..6].iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_shipped_object_has_a_stable_layout_id() {
        let object = super::super::OBJECT;
        let a = super::id(object, &[]).expect("layout");
        assert_eq!(a.len(), 12);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a, super::id(object, &[]).expect("layout"));
        let workloads = enforcer_common::maps::WORKLOADS;
        assert_eq!(a, super::id(object, &[(workloads, enforcer_common::maps::WORKLOADS_MAX)]).expect("same capacity"));
        assert_ne!(a, super::id(object, &[(workloads, 4096)]).expect("other capacity"), "a capacity is part of the layout");
        assert!(super::id(b"not an object", &[]).is_err());
    }
}
