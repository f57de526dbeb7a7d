use clap::{CommandFactory, Parser};
use sessionguard_controller::{Command, Config, LogFormat};
use tracing_subscriber::EnvFilter;

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
        None => sessionguard_controller::run::run(config).await?,
    }
    Ok(())
}
