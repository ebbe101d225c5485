use clap::Parser;
use tcpstate::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    tcpstate::messages::init(cli.verbose);

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => fail(&anyhow::Error::new(e).context("starting the async runtime")),
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Trace(args) => tcpstate::commands::trace::run(args, cli.verbose).await,
            Command::Life(args) => tcpstate::commands::life::run(args, cli.verbose).await,
            Command::Stat(args) => tcpstate::commands::stat::run(args, cli.verbose).await,
            Command::Leaks(args) => tcpstate::commands::leaks::run(args, cli.verbose).await,
            Command::Top(args) => tcpstate::commands::top::run(args, cli.verbose).await,
            Command::Record(args) => tcpstate::commands::record::run(args, cli.verbose).await,
            Command::Report(args) => tcpstate::commands::report::run(args).await,
            Command::Export(args) => tcpstate::commands::export::run(args).await,
            Command::Doctor(args) => tcpstate::commands::doctor::run(args, cli.verbose).await,
            Command::Serve(args) => tcpstate::commands::serve::run(args, cli.verbose).await,
            Command::Kill(args) => tcpstate::commands::kill::run(args),
            Command::Stale(args) => tcpstate::commands::stale::run(args),
            Command::Ports(args) => tcpstate::commands::ports::run(args, cli.verbose).await,
        }
    });
    if let Err(e) = result {
        fail(&e);
    }
}

/// One line, the whole cause chain, no backtrace.
fn fail(e: &anyhow::Error) -> ! {
    tcpstate::messages::error(format_args!("{e:#}"));
    std::process::exit(1);
}
