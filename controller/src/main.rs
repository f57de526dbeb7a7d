use clap::{CommandFactory, Parser};
use sessionguard_controller::{Command, Config, LogFormat};
use tracing_subscriber::EnvFilter;

/// jemalloc gives freed pages back (dirty pages decay within a second, in a
/// background thread) and keeps few arenas, where glibc's malloc kept an
/// arena per thread holding the buffers of the initial lists long after
/// they were freed. Figures: the README's memory breakdown.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its first allocation.
#[cfg(feature = "jemalloc")]
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8] =
    b"background_thread:true,narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    if let Err(e) = config.check() {
        // Exit as clap does for any other bad flag: status 2, the reason.
        Config::command()
            .error(clap::error::ErrorKind::ArgumentConflict, e)
            .exit();
    }
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }
    match config.command.clone() {
        Some(Command::Cleanup(args)) => sessionguard_controller::cleanup::run(config, args).await?,
        Some(Command::DeleteReports(args)) => {
            sessionguard_controller::cleanup_reports::run(config, args).await?
        }
        None => sessionguard_controller::run::run(config).await?,
    }
    Ok(())
}
