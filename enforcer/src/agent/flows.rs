//! Reads decisions from the kernel's ring buffer and logs them as flow events.

use aya::maps::{MapData, RingBuf};
use tokio::io::{Interest, unix::AsyncFd};

use super::{AgentError, state::Names};
use crate::events;

/// Reads the ring buffer until the task is dropped.
///
/// # Errors
/// When the ring buffer cannot be polled.
pub(super) async fn read(ring: RingBuf<MapData>, names: Names) -> Result<(), AgentError> {
    let clock = events::Clock::now().map_err(|e| AgentError::Events(e.into()))?;
    // SAFETY: the ring buffer owns its map fd for its whole life and `as_raw_fd` always
    // returns that same fd, which is what `register_with_interest` requires.
    #[expect(unsafe_code, reason = "tokio's I/O-safety contract for registering a raw fd")]
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| AgentError::Events(e.into()))?;
    loop {
        let mut guard = fd.readable_mut().await.map_err(AgentError::Events)?;
        let ring = guard.get_inner_mut();
        while let Some(item) = ring.next() {
            match events::decode(&item) {
                Ok(record) => {
                    let cgroup_id = record.header().cgroup_id;
                    let workload = names
                        .read()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .get(&cgroup_id)
                        .cloned();
                    log(&events::describe(&record, &clock, workload));
                }
                Err(error) => tracing::error!(%error, "undecodable kernel event"),
            }
        }
        guard.clear_ready();
    }
}

fn log(e: &events::Event) {
    let workload = e.workload.as_deref().unwrap_or("-");
    match &e.detail {
        events::Detail::Network { direction, protocol, src, dst, remote_identity, rule_id } => {
            tracing::info!(
                target: "enforcer::flow",
                kind = e.kind, verdict = e.verdict, workload, identity = e.identity,
                pid = e.pid, uid = e.uid, comm = %e.comm, direction, protocol = %protocol,
                src = %src, dst = %dst, remote_identity, rule_id = ?rule_id,
                "flow"
            );
        }
        events::Detail::File { access } => {
            tracing::info!(
                target: "enforcer::flow",
                kind = e.kind, verdict = e.verdict, workload, identity = e.identity,
                pid = e.pid, uid = e.uid, comm = %e.comm, access = ?access,
                "file"
            );
        }
    }
}
