use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = devsup::cli::Cli::parse();
    devsup::log::init(cli.quiet, cli.verbose);
    match cli.into_config().and_then(devsup::supervisor::run) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("devsup: error: {err:#}");
            ExitCode::from(2)
        }
    }
}
