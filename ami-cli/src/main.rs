//! `ami`: builds Amazon Machine Images without root.
//!
//! Commands: `ami mkfs` writes an ext4 image of a host directory; `ami
//! inspect` looks inside one with the project's own reader. Errors go to stderr as `error: ...` with the chain of
//! causes, and the exit status is 1 (2 for usage errors). stdout only
//! carries machine-readable output (`--json`).

mod boot;
mod bootstrap;
mod boottest;
mod build;
mod bundle;
mod imds;
mod inspect;
mod json;
mod keys;
mod mkfs;
mod progress;
mod publish;
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
    /// Developer and benchmark command: resolve, download and unpack a
    /// Debian package set (maintainer scripts not run) into memory, and
    /// optionally write it into an ext4 image with --image.
    Bootstrap(bootstrap::BootstrapArgs),
    /// Build a Debian disk image from a recipe (the embedded default when
    /// none is given): disk.img, build.json and ami.lock in --out.
    Build(build::BuildArgs),
    /// Make an EC2 instance-store bundle of a disk image: encrypted,
    /// compressed 10 MiB parts and a signed manifest, as Amazon's
    /// ec2-bundle-image writes them.
    Bundle(bundle::BundleArgs),
    /// Check an instance-store bundle (signature, part and image digests)
    /// and write its disk image back.
    Unbundle(bundle::UnbundleArgs),
    /// Make the RSA key and self-signed X.509 certificate that bundles are
    /// signed with and encrypted for.
    Keys(keys::KeysArgs),
    /// Upload an instance-store bundle to S3 (parts in parallel with the
    /// aws-exec-read ACL, the manifest last); prints the manifest location.
    UploadBundle(publish::UploadBundleArgs),
    /// Register an AMI from a bundle in S3 or an EBS snapshot; prints the
    /// AMI id.
    Register(publish::RegisterArgs),
    /// Deregister an AMI and optionally delete its bundle or snapshots.
    Deregister(publish::DeregisterArgs),
    /// Make an EBS snapshot of a disk image through the EBS direct APIs
    /// (no instance, no volume); prints the snapshot id.
    Snapshot(publish::SnapshotArgs),
    /// Snapshot a disk image and register it as an EBS-backed AMI, checked
    /// against the image first; prints the AMI id.
    Publish(publish::PublishArgs),
    /// Boot a disk image in QEMU the way EC2 does, serve an SSH key
    /// through a fake instance metadata service, log in as admin and check
    /// the system.
    BootTest(boottest::BootTestArgs),
    /// Internal: relay stdin/stdout to the fake metadata service (run by
    /// QEMU per guest connection during `ami boot-test`).
    #[command(hide = true)]
    ImdsRelay(boottest::ImdsRelayArgs),
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Mkfs(args) => mkfs::run(args),
        Command::Resolve(args) => resolve::run(args),
        Command::Bootstrap(args) => bootstrap::run(args),
        Command::Build(args) => build::run(args),
        Command::Bundle(args) => bundle::run(args),
        Command::Unbundle(args) => bundle::run_unbundle(args),
        Command::Keys(args) => keys::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::UploadBundle(args) => publish::run_upload(args),
        Command::Register(args) => publish::run_register(args),
        Command::Deregister(args) => publish::run_deregister(args),
        Command::Snapshot(args) => publish::run_snapshot(args),
        Command::Publish(args) => publish::run_publish(args),
        Command::BootTest(args) => boottest::run(args),
        Command::ImdsRelay(args) => boottest::run_relay(args),
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
