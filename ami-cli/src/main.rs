//! `ami`: builds Amazon Machine Images without root.
//!
//! Commands: `ami mkfs` writes an ext4 image of a host directory; `ami
//! inspect` looks inside one with the project's own reader. Errors go to stderr as `error: ...` with the chain of
//! causes, and the exit status is 1 (2 for usage errors). stdout only
//! carries machine-readable output (`--json`).

mod inspect;
mod json;
mod mkfs;
mod progress;
mod resolve;
mod size;
mod uuid;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Builds Amazon Machine Images without root.
#[derive(Debug, Parser)]
#[command(name = "ami", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write an ext4 filesystem image of a directory, without root, loop
    /// devices or mke2fs.
    Mkfs(mkfs::MkfsArgs),
    /// Look inside an ext4 image (summary, directory listing, metadata, or
    /// file contents with --cat), without mounting it.
    Inspect(inspect::InspectArgs),
    /// Read and verify a Debian repository (the host's apt sources by
    /// default) and print the packages of a variant plus the requested
    /// ones.
    Resolve(resolve::ResolveArgs),
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Mkfs(args) => mkfs::run(args),
        Command::Resolve(args) => resolve::run(args),
        Command::Inspect(args) => inspect::run(args),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
