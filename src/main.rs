//! The `portcullis` command: parses the arguments and hands over to [`cli`].

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    cli::main(cli::Cli::parse())
}
