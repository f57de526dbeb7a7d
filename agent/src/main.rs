use std::process::ExitCode;

use clap::Parser;
use sessionguard_agent::config::{Cli, Command, LogFormat, Output};
use sessionguard_agent::scan::{ProcFs, Scanner, ScannerConfig};
use sessionguard_agent::{daemon, notify, output, report};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format, &cli.log);
    let result = match cli.command {
        Command::Scan(args) => scan(args),
        Command::Run(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(daemon::run(args)).map_err(anyhow::Error::from)),
        Command::Notifier(args) => {
            notify::server::serve(&args.socket, &args.proc_root, args.client_uid)
                .map_err(anyhow::Error::from)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sessionguard-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn scan(args: sessionguard_agent::config::ScanArgs) -> anyhow::Result<()> {
    let mut scanner = Scanner::new(
        ProcFs::open(&args.proc.proc_root)?,
        ScannerConfig {
            terminal_idle: args.proc.terminal_idle,
            ..ScannerConfig::default()
        },
    )?;
    let (mut sessions, stats) = scanner.scan(true)?;
    if let Some(kubeconfig) = &args.kubeconfig {
        let pods = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(report::list_with(kubeconfig, args.node_name.as_deref()))?;
        report::name(&pods, &mut sessions);
    }
    for (kind, n) in &stats.errors {
        tracing::warn!(
            kind,
            count = n,
            "skipped unreadable or malformed proc entries"
        );
    }
    match args.output {
        Output::Json => println!("{}", output::json(&sessions)),
        Output::Table => print!("{}", output::table(&sessions)),
    }
    Ok(())
}

fn init_logs(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
