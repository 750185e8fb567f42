//! Struct member offsets from the running kernel's BTF (`/sys/kernel/btf/vmlinux`), so kernel
//! programs that must reach into kernel structs (the file programs: `file->f_path`,
//! `file->f_mode`, `file->f_flags`) get the offsets of the kernel they run on, never ones hard-coded for one
//! build. The format is `include/uapi/linux/btf.h`; only what offset lookup needs is read, and
//! every length is checked, so a malformed blob is an error, not a panic.

use std::path::Path;

/// Where the kernel exposes its BTF.
pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
/// Types that wrap another without changing its layout, followed to reach a struct.
const KIND_TYPEDEF: u32 = 8;

/// Why an offset could not be found.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BtfError {
    /// The blob is not BTF or is cut short.
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    /// The BTF has a type kind this reader does not know (a newer kernel).
    #[error("BTF type kind {0} is unknown to this agent")]
    UnknownKind(u32),
    /// No struct of that name.
    #[error("the kernel's BTF has no struct {0}")]
    NoStruct(String),
    /// The struct has no such member (or it is a bitfield).
    #[error("struct {strukt} has no byte-aligned member {member} in the kernel's BTF")]
    NoMember {
        /// The struct.
        strukt: String,
        /// The member.
        member: String,
    },
}

struct Type {
    name_off: u32,
    kind: u32,
    kind_flag: bool,
    /// `size` or `type` (for typedefs).
    size_or_ref: u32,
    /// (`name_off`, type id, bit offset) for struct and union members.
    members: Vec<(u32, u32, u32)>,
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, BtfError> {
    b.get(at..at + 2).map(|s| u16::from_le_bytes([s[0], s[1]])).ok_or(BtfError::Malformed("truncated"))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, BtfError> {
    b.get(at..at + 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]])).ok_or(BtfError::Malformed("truncated"))
}

/// Bytes that follow a type's 12-byte header, by kind (`btf.h`).
fn trailer(kind: u32, vlen: usize) -> Result<usize, BtfError> {
    Ok(match kind {
        2 | 7..=12 | 16 | 18 => 0,
        1 | 14 | 17 => 4,
        3 => 12,
        4 | 5 | 15 | 19 => 12 * vlen,
        6 | 13 => 8 * vlen,
        k => return Err(BtfError::UnknownKind(k)),
    })
}

/// Parsed types (index = type id - 1) and the string section.
struct Btf<'a> {
    types: Vec<Type>,
    strings: &'a [u8],
}

impl<'a> Btf<'a> {
    fn parse(b: &'a [u8]) -> Result<Self, BtfError> {
        if u16_at(b, 0)? != MAGIC {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let hdr = u32_at(b, 4)? as usize;
        let (type_off, type_len) = (u32_at(b, 8)? as usize, u32_at(b, 12)? as usize);
        let (str_off, str_len) = (u32_at(b, 16)? as usize, u32_at(b, 20)? as usize);
        let section = |off: usize, len: usize| {
            hdr.checked_add(off).and_then(|s| Some((s, s.checked_add(len)?))).and_then(|(s, e)| b.get(s..e))
        };
        let types_bytes = section(type_off, type_len).ok_or(BtfError::Malformed("type section out of bounds"))?;
        let strings = section(str_off, str_len).ok_or(BtfError::Malformed("string section out of bounds"))?;
        let mut types = Vec::new();
        let mut at = 0;
        while at < types_bytes.len() {
            let (name_off, info, size_or_ref) = (u32_at(types_bytes, at)?, u32_at(types_bytes, at + 4)?, u32_at(types_bytes, at + 8)?);
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let body = at + 12;
            let mut members = Vec::new();
            if kind == KIND_STRUCT || kind == KIND_UNION {
                for m in 0..vlen {
                    let o = body + 12 * m;
                    members.push((u32_at(types_bytes, o)?, u32_at(types_bytes, o + 4)?, u32_at(types_bytes, o + 8)?));
                }
            }
            types.push(Type { name_off, kind, kind_flag: info >> 31 == 1, size_or_ref, members });
            at = body + trailer(kind, vlen)?;
        }
        Ok(Self { types, strings })
    }

    fn name(&self, off: u32) -> &[u8] {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        &rest[..rest.iter().position(|c| *c == 0).unwrap_or(rest.len())]
    }

    fn get(&self, id: u32) -> Option<&Type> {
        self.types.get((id as usize).checked_sub(1)?)
    }

    /// Byte offset of `member` in struct/union type `id`, looking through anonymous members.
    fn offset_in(&self, id: u32, member: &str, depth: u32) -> Option<u32> {
        let mut t = self.get(id)?;
        while t.kind == KIND_TYPEDEF {
            t = self.get(t.size_or_ref)?;
        }
        if depth > 8 || !(t.kind == KIND_STRUCT || t.kind == KIND_UNION) {
            return None;
        }
        for &(name_off, ty, raw) in &t.members {
            // With kind_flag the low 24 bits are the bit offset and the top 8 a bitfield size.
            let (bits, bitfield) = if t.kind_flag { (raw & 0x00ff_ffff, raw >> 24 != 0) } else { (raw, false) };
            if name_off == 0 {
                if let Some(inner) = self.offset_in(ty, member, depth + 1) {
                    return Some(bits / 8 + inner);
                }
            } else if self.name(name_off) == member.as_bytes() && !bitfield && bits % 8 == 0 {
                return Some(bits / 8);
            }
        }
        None
    }
}

/// Byte offset of `strukt.member` in the BTF blob `b`.
///
/// # Errors
/// [`BtfError`] when the blob is malformed or has no such struct or member.
pub fn member_offset(b: &[u8], strukt: &str, member: &str) -> Result<u32, BtfError> {
    let btf = Btf::parse(b)?;
    let ids = (1..=u32::try_from(btf.types.len()).unwrap_or(u32::MAX))
        .filter(|id| btf.get(*id).is_some_and(|t| t.kind == KIND_STRUCT && !t.members.is_empty() && btf.name(t.name_off) == strukt.as_bytes()));
    let mut found_struct = false;
    for id in ids {
        found_struct = true;
        if let Some(off) = btf.offset_in(id, member, 0) {
            return Ok(off);
        }
    }
    if found_struct {
        Err(BtfError::NoMember { strukt: strukt.to_owned(), member: member.to_owned() })
    } else {
        Err(BtfError::NoStruct(strukt.to_owned()))
    }
}

/// Byte offset of `strukt.member` in the running kernel.
///
/// # Errors
/// As [`member_offset`], or when the kernel's BTF cannot be read.
pub fn kernel_member_offset(strukt: &str, member: &str) -> Result<u32, String> {
    let b = std::fs::read(Path::new(VMLINUX)).map_err(|e| format!("{VMLINUX}: {e}"))?;
    member_offset(&b, strukt, member).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A hand-built BTF blob: `struct file { int a; union { long b; }; struct path f_path; }`.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0file\0a\0f_path\0path\0b\0long\0";
        let s = |name: &str| u32::try_from(strings.windows(name.len() + 1).position(|w| &w[..name.len()] == name.as_bytes() && w[name.len()] == 0).expect("string")).expect("u32");
        let mut types = Vec::new();
        let mut push = |words: &[u32]| words.iter().for_each(|w| types.extend_from_slice(&w.to_le_bytes()));
        push(&[s("int"), 1 << 24, 4, 0x20]); // 1: int
        push(&[s("long"), 1 << 24, 8, 0x40]); // 2: long
        push(&[s("path"), (4 << 24) | 1, 16, s("a"), 1, 0]); // 3: struct path { int a; }
        push(&[0, (5 << 24) | 1, 8, s("b"), 2, 0]); // 4: anonymous union { long b; }
        push(&[s("file"), (4 << 24) | 3, 64, s("a"), 1, 0, 0, 4, 64, s("f_path"), 3, 128]); // 5: struct file
        let mut b = Vec::new();
        b.extend_from_slice(&MAGIC.to_le_bytes());
        b.extend_from_slice(&[1, 0]);
        for w in [24u32, 0, u32::try_from(types.len()).expect("len"), u32::try_from(types.len()).expect("len"), u32::try_from(strings.len()).expect("len")] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.extend_from_slice(&types);
        b.extend_from_slice(strings);
        b
    }

    #[test]
    fn offsets_from_a_built_blob() {
        let b = blob();
        assert_eq!(member_offset(&b, "file", "f_path"), Ok(16));
        assert_eq!(member_offset(&b, "file", "b"), Ok(8), "through an anonymous union");
        assert_eq!(member_offset(&b, "file", "nope"), Err(BtfError::NoMember { strukt: "file".into(), member: "nope".into() }));
        assert_eq!(member_offset(&b, "inode", "x"), Err(BtfError::NoStruct("inode".into())));
        assert!(matches!(member_offset(&b[..30], "file", "f_path"), Err(BtfError::Malformed(_))));
    }

    #[test]
    fn the_running_kernel_has_the_members_the_file_programs_read() {
        if !Path::new(VMLINUX).exists() {
            eprintln!("SKIP: no {VMLINUX}");
            return;
        }
        let f_path = kernel_member_offset("file", "f_path").expect("file.f_path");
        let f_mode = kernel_member_offset("file", "f_mode").expect("file.f_mode");
        let f_flags = kernel_member_offset("file", "f_flags").expect("file.f_flags");
        assert_ne!(f_path, f_mode);
        assert_ne!(f_flags, f_mode);
        assert!(f_path < 512 && f_mode < 512, "{f_path} {f_mode}");
    }

    proptest! {
        #[test]
        fn damaged_blobs_never_panic(cut in 0usize..200, flip in 0usize..200, byte in any::<u8>()) {
            let mut b = blob();
            if flip < b.len() {
                b[flip] = byte;
            }
            b.truncate(cut.max(1));
            let _ = member_offset(&b, "file", "f_path");
        }
    }
}
