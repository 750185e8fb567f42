//! Loading, attaching and pinning each program, and recording what happened to it.
//!
//! A program that cannot attach is reported, never silently skipped: its
//! [`EnforcementPoint`] carries the error for `enforcer status`.

use std::os::fd::BorrowedFd;

use aya::{
    Btf, Ebpf,
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, Lsm, SockOps, links::FdLink},
};
use serde::Serialize;

use super::{bpffs, probe};

/// One place where the kernel decides, and whether it is live.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EnforcementPoint {
    /// Program name (`connect4`, `file_open`, …).
    pub name: &'static str,
    /// Where it hooks in (`cgroup/connect4`, `lsm/file_open`).
    pub hook: &'static str,
    /// `None` when attached; otherwise why not.
    pub error: Option<String>,
}

impl EnforcementPoint {
    /// Whether the program is attached and deciding.
    #[must_use]
    pub fn attached(&self) -> bool {
        self.error.is_none()
    }
}

const CGROUP_PROGRAMS: [(&str, &str); 4] = [
    ("connect4", "cgroup/connect4"),
    ("connect6", "cgroup/connect6"),
    ("sendmsg4", "cgroup/sendmsg4"),
    ("sendmsg6", "cgroup/sendmsg6"),
];

/// Attaches every program; the result has one entry per program, in a fixed order.
pub(super) fn all(
    ebpf: &mut Ebpf,
    cgroup: BorrowedFd<'_>,
    layout: &bpffs::Layout,
    file_offsets_missing: Option<String>,
) -> Vec<EnforcementPoint> {
    let mut points: Vec<EnforcementPoint> = CGROUP_PROGRAMS
        .iter()
        .map(|&(name, hook)| EnforcementPoint { name, hook, error: cgroup_program(ebpf, name, cgroup, layout).err() })
        .collect();
    points.push(EnforcementPoint {
        name: "stamp",
        hook: "cgroup/sock_ops",
        error: sock_ops_program(ebpf, "stamp", cgroup, layout).err(),
    });
    points.push(EnforcementPoint {
        name: "ingress",
        hook: "cgroup_skb/ingress",
        error: skb_program(ebpf, "ingress", cgroup, layout).err(),
    });
    points.push(EnforcementPoint {
        name: "file_open",
        hook: "lsm/file_open",
        error: match file_offsets_missing {
            Some(why) => Some(format!("struct file offsets from BTF: {why}")),
            None => lsm_program(ebpf, "file_open", layout).err(),
        },
    });
    for p in &points {
        match &p.error {
            None => tracing::info!(program = p.name, hook = p.hook, "attached"),
            Some(error) => tracing::error!(program = p.name, hook = p.hook, %error, "not attached"),
        }
    }
    points
}

/// The program `name` of type `P`, loaded with `load`.
fn program<'a, P>(ebpf: &'a mut Ebpf, name: &str, load: impl FnOnce(&mut P) -> Result<(), aya::programs::ProgramError>) -> Result<&'a mut P, String>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog: &mut P = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} missing from the object"))?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    load(prog).map_err(|e| format!("load: {}", chain(&e)))?;
    Ok(prog)
}

/// A cgroup link as an owned `bpf_link`, which is what can be pinned.
fn fd_link<L>(link: Result<L, aya::programs::ProgramError>) -> Result<FdLink, String>
where
    FdLink: TryFrom<L, Error = aya::programs::links::LinkError>,
{
    link.map_err(|e| format!("{e}"))?.try_into().map_err(|e| format!("link is not a bpf_link (kernel < 5.7?): {e}"))
}

// A bpf_link on a cgroup always coexists with other links (multi-attach); the kernel refuses
// attach flags for links, hence `Single` (no flags) below.

fn cgroup_program(ebpf: &mut Ebpf, name: &str, cgroup: BorrowedFd<'_>, layout: &bpffs::Layout) -> Result<(), String> {
    let prog = program::<CgroupSockAddr>(ebpf, name, CgroupSockAddr::load)?;
    let id = prog.attach(cgroup, CgroupAttachMode::Single).map_err(|e| format!("attach: {}", chain(&e)))?;
    let link = fd_link(prog.take_link(id))?;
    pin(prog, link, name, layout)
}

fn skb_program(ebpf: &mut Ebpf, name: &str, cgroup: BorrowedFd<'_>, layout: &bpffs::Layout) -> Result<(), String> {
    let prog = program::<CgroupSkb>(ebpf, name, CgroupSkb::load)?;
    let id = prog
        .attach(cgroup, CgroupSkbAttachType::Ingress, CgroupAttachMode::Single)
        .map_err(|e| format!("attach: {}", chain(&e)))?;
    let link = fd_link(prog.take_link(id))?;
    pin(prog, link, name, layout)
}

fn sock_ops_program(ebpf: &mut Ebpf, name: &str, cgroup: BorrowedFd<'_>, layout: &bpffs::Layout) -> Result<(), String> {
    let prog = program::<SockOps>(ebpf, name, SockOps::load)?;
    let id = prog.attach(cgroup, CgroupAttachMode::Single).map_err(|e| format!("attach: {}", chain(&e)))?;
    let link = fd_link(prog.take_link(id))?;
    pin(prog, link, name, layout)
}

fn lsm_program(ebpf: &mut Ebpf, name: &str, layout: &bpffs::Layout) -> Result<(), String> {
    let lsms = probe::active_lsms()?;
    if !lsms.iter().any(|l| l == "bpf") {
        return Err(format!(
            "`bpf` is not an active LSM ({}: {}); add it to the kernel's lsm= boot parameter",
            probe::LSM_LIST,
            lsms.join(",")
        ));
    }
    if !probe::has_btf() {
        return Err("the kernel exposes no BTF (/sys/kernel/btf/vmlinux); BPF-LSM needs CONFIG_DEBUG_INFO_BTF".into());
    }
    let btf = Btf::from_sys_fs().map_err(|e| format!("reading kernel BTF: {e}"))?;
    let prog: &mut Lsm = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} missing from the object"))?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    prog.load(name, &btf).map_err(|e| {
        let text = chain(&e);
        if text.contains("Operation not permitted") {
            format!(
                "load: {text}; the kernel refused the BPF-LSM program although `bpf` is an active \
                 LSM: it cannot build BPF trampolines here (no JIT support for them, or lockdown)"
            )
        } else {
            format!("load: {text}")
        }
    })?;
    let id = prog.attach().map_err(|e| format!("attach: {}", chain(&e)))?;
    let link: FdLink = prog.take_link(id).map_err(|e| format!("{e}"))?.into();
    pin(prog, link, name, layout)
}

/// An error and all its sources, `: `-separated (aya's messages leave the errno in the source).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Pins the program and its link, replacing an older agent's pins without a gap.
fn pin<P: Pinnable>(prog: &mut P, link: FdLink, name: &str, layout: &bpffs::Layout) -> Result<(), String> {
    bpffs::pin_replacing(&layout.prog(name), |p| prog.pin_at(p)).map_err(|e| format!("pin program: {e}"))?;
    bpffs::pin_replacing(&layout.link(name), |p| link.pin(p).map(drop)).map_err(|e| format!("pin link: {e}"))
}

/// The programs' `pin` methods are generated per type; this lets one function pin either.
trait Pinnable {
    fn pin_at(&mut self, path: &std::path::Path) -> Result<(), aya::pin::PinError>;
}

impl Pinnable for CgroupSockAddr {
    fn pin_at(&mut self, path: &std::path::Path) -> Result<(), aya::pin::PinError> {
        self.pin(path)
    }
}

impl Pinnable for CgroupSkb {
    fn pin_at(&mut self, path: &std::path::Path) -> Result<(), aya::pin::PinError> {
        self.pin(path)
    }
}

impl Pinnable for SockOps {
    fn pin_at(&mut self, path: &std::path::Path) -> Result<(), aya::pin::PinError> {
        self.pin(path)
    }
}

impl Pinnable for Lsm {
    fn pin_at(&mut self, path: &std::path::Path) -> Result<(), aya::pin::PinError> {
        self.pin(path)
    }
}
