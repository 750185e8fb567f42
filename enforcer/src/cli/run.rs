//! `enforcer run`: the daemon in the foreground.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use crate::{
    agent::{self, Agent},
    config::{self, Config, LogFormat},
};

/// Arguments of `enforcer run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Configuration file (TOML). Without it, /etc/enforcer/enforcer.toml if present, else
    /// the built-in defaults.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Remove everything pinned under `bpffs_dir` and exit, instead of running.
    #[arg(long)]
    pub cleanup: bool,
    /// Only validate the configuration: print it with every default filled in and exit 0, or
    /// name the file, line and key at fault and exit 1.
    #[arg(long, conflicts_with = "cleanup")]
    pub check: bool,
}

/// Loads the configuration named by `--config` or the default location.
///
/// # Errors
/// When the file is unreadable or invalid.
pub fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None if std::path::Path::new(config::DEFAULT_PATH).exists() => {
            Ok(Config::load(std::path::Path::new(config::DEFAULT_PATH))?)
        }
        None => Ok(Config::default()),
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ENFORCER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Runs the daemon until SIGINT or SIGTERM.
///
/// # Errors
/// When the configuration is invalid or enforcement cannot be brought up.
pub fn run(args: &RunArgs) -> anyhow::Result<i32> {
    let config = load_config(args.config.as_ref())?;
    if args.check {
        print!("{}", toml::to_string(&config).context("printing the configuration")?);
        return Ok(0);
    }
    init_tracing(config.log_format);
    if args.cleanup {
        let removed = agent::uninstall(&config.bpffs_dir)
            .with_context(|| format!("removing {}", config.bpffs_dir.display()))?;
        tracing::info!(bpffs_dir = %config.bpffs_dir.display(), removed, "cleanup done");
        return Ok(0);
    }
    // Before any thread exists: setns applies to the calling thread only.
    match crate::identity::cgroup::join_init_cgroup_namespace() {
        Ok(true) => tracing::info!("joined the host's cgroup namespace (PID 1's)"),
        Ok(false) => {}
        Err(error) => tracing::warn!(%error, "cannot join the host's cgroup namespace; cgroup paths are this container's"),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let agent = Agent::start(config).context("starting enforcement")?;
        agent.run(shutdown_signal()).await?;
        Ok(0)
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop the agent with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
