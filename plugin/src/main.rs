use clap::Parser;
use sessionguard_core::printable::printable;
use sessionguard_plugin::cli::{self, Cli, Command};
use sessionguard_plugin::drains;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Cli::parse();
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let result = match &args.command {
        Command::Get {
            pods,
            all_namespaces,
            all,
            display,
        } => {
            cli::get(
                &args.kube,
                pods,
                *all_namespaces,
                *all,
                display.output,
                display.watch,
                &mut out,
            )
            .await
        }
        Command::Nodes { display } => {
            drains::nodes_command(&args.kube, display.output, display.watch, &mut out).await
        }
        Command::Extend {
            pods,
            duration,
            all,
        } => cli::extend(&args.kube, pods, duration, *all, &mut out, &mut err).await,
    };
    if let Err(e) = result {
        // API errors carry text the cluster chose (object names, a webhook's message).
        eprintln!("error: {}", printable(&e.to_string(), 4096));
        std::process::exit(e.exit_code());
    }
}
