//! `cargo xtask run`: builds the agent and runs it on `examples/enforcer.toml`, which manages
//! a cgroup subtree it creates, then cleans up what it pinned and created when stopped.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;

use crate::process::{build_agent, root};

/// Reads one string key from a flat TOML file (the example has no nesting for these keys).
fn toml_key(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// Runs the agent until Ctrl-C, then removes its pins and the example cgroups.
///
/// # Errors
/// When the build fails or the agent cannot be started.
pub fn run(config: Option<PathBuf>) -> anyhow::Result<i32> {
    let config = config.unwrap_or_else(|| root().join("examples/enforcer.toml"));
    let text = std::fs::read_to_string(&config).with_context(|| format!("reading {}", config.display()))?;
    let cgroup_root = toml_key(&text, "cgroup_root").context("the config sets no cgroup_root")?;
    let bin = build_agent(false)?;
    let demo = Path::new(&cgroup_root).join("demo");
    println!(
        "\nenforcer is starting on {}.\n\
         The `demo` workload (cgroup {}) has no policy, so its network posture is default_network = \"deny\".\n\
         In another terminal, as root, watch a denial:\n\n    \
         python3 -m http.server 8000 --bind 127.0.0.1 &   # something to connect to\n    \
         curl -sS -o /dev/null http://127.0.0.1:8000/ && echo allowed   # outside any workload: allowed\n    \
         sh -c 'echo $$ > {}/cgroup.procs; exec curl -sS -o /dev/null http://127.0.0.1:8000/'   # denied\n\n\
         The second curl fails with \"Couldn't connect\" (EPERM) and this log shows a flow event with verdict=\"deny\".\n\
         Stop with Ctrl-C; the example's pins and cgroups are then removed.\n",
        cgroup_root,
        demo.display(),
        demo.display()
    );
    std::fs::create_dir_all(&demo).with_context(|| format!("creating {}", demo.display()))?;

    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)).context("installing the Ctrl-C handler")?;
    let mut child = Command::new(&bin).arg("run").arg("--config").arg(&config).spawn()?;
    let mut signalled = false;
    let code = loop {
        if let Some(st) = child.try_wait()? {
            break st.code().unwrap_or(1);
        }
        if stop.load(Ordering::SeqCst) && !signalled {
            signalled = true;
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    println!("cleaning up the example: pins and cgroups");
    let _ = Command::new(&bin).arg("uninstall").arg("--config").arg(&config).status();
    remove_cgroups(Path::new(&cgroup_root));
    Ok(code)
}

/// Removes the example's cgroup tree, deepest first; a cgroup still holding processes stays
/// and is reported.
fn remove_cgroups(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroups(&e.path());
            }
        }
    }
    if let Err(e) = std::fs::remove_dir(dir)
        && dir.exists()
    {
        println!("left {} in place: {e} (processes still in it?)", dir.display());
    }
}
