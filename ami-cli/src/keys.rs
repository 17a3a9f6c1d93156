//! `ami keys`: a signing key and self-signed certificate for bundles.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The key's file name (as in the AMI tutorial).
const KEY_FILE: &str = "private-key.pem";
/// The certificate's file name (as in the AMI tutorial).
const CERT_FILE: &str = "certificate.pem";

/// Arguments of `ami keys`.
#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    /// Directory for private-key.pem (mode 0600) and certificate.pem
    /// (created if missing; existing files are never replaced).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,

    /// Validity of the certificate, in days from now (EC2 never checks
    /// it).
    #[arg(long, value_name = "N", default_value_t = 365,
          value_parser = clap::value_parser!(u32).range(1..=36500))]
    days: u32,

    /// RSA key size: 2048, 3072 or 4096.
    #[arg(long, value_name = "BITS", default_value_t = 2048, value_parser = parse_bits)]
    bits: u32,

    /// The certificate's subject common name.
    #[arg(long, value_name = "NAME", default_value = "ami bundle signing key")]
    common_name: String,

    /// Also register the certificate with IAM (UploadSigningCertificate);
    /// prints its certificate id.
    #[arg(long)]
    upload: bool,

    /// The IAM user the certificate belongs to (default: the user whose
    /// credentials are used).
    #[arg(long, value_name = "NAME", requires = "upload")]
    iam_user: Option<String>,

    #[command(flatten)]
    aws: crate::publish::AwsArgs,
}

fn parse_bits(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(bits) if ami_bundle::keys::KEY_BITS.contains(&bits) => Ok(bits),
        _ => Err(format!("{text:?}: the key size must be 2048, 3072 or 4096")),
    }
}

/// Writes `data` to `dir/name` with `mode`, atomically, failing if the
/// file exists.
fn write_new(dir: &Path, name: &str, data: &[u8], mode: u32) -> Result<PathBuf> {
    let path = dir.join(name);
    let mut tmp = tempfile::Builder::new()
        .prefix(".ami-keys-")
        .permissions(fs::Permissions::from_mode(mode))
        .tempfile_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    tmp.write_all(data)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    // The umask does not apply to an explicit chmod.
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    tmp.persist_noclobber(&path).map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!(
                "{} already exists; remove it or choose another --out",
                path.display()
            )
        } else {
            anyhow::Error::new(e.error).context(format!("writing {}", path.display()))
        }
    })?;
    Ok(path)
}

/// Runs `ami keys`.
pub fn run(args: &KeysArgs) -> Result<()> {
    fs::create_dir_all(&args.out)
        .with_context(|| format!("creating the directory {}", args.out.display()))?;
    for name in [KEY_FILE, CERT_FILE] {
        let path = args.out.join(name);
        if path.symlink_metadata().is_ok() {
            bail!(
                "{} already exists; remove it or choose another --out",
                path.display()
            );
        }
    }
    let keys = ami_bundle::keys::generate(args.bits, args.days, &args.common_name)
        .context("generating the key and certificate")?;
    let key_path = write_new(&args.out, KEY_FILE, &keys.key.to_pem()?, 0o600)?;
    let cert_path = match write_new(&args.out, CERT_FILE, &keys.cert.to_pem()?, 0o644) {
        Ok(path) => path,
        Err(e) => {
            // Leave no key without its certificate.
            let _ = fs::remove_file(&key_path);
            return Err(e);
        }
    };
    eprintln!(
        "wrote {} (RSA {}, mode 0600) and {} ({}, valid for {} days)",
        key_path.display(),
        args.bits,
        cert_path.display(),
        keys.cert.subject(),
        args.days
    );
    if args.upload {
        let pem = String::from_utf8(keys.cert.to_pem()?).context("the certificate PEM")?;
        let rt = crate::publish::runtime()?;
        let id = rt
            .block_on(async {
                let aws = ami_bundle::aws::Aws::connect(&args.aws.options()).await?;
                ami_bundle::aws::iam::upload_signing_certificate(
                    &aws,
                    &pem,
                    args.iam_user.as_deref(),
                )
                .await
            })
            .with_context(|| {
                format!(
                    "registering {} with IAM (the key and certificate are written; retry with \
                     `aws iam upload-signing-certificate --certificate-body file://{}`)",
                    cert_path.display(),
                    cert_path.display()
                )
            })?;
        eprintln!("registered the certificate with IAM as {id}");
        crate::publish::print_stdout(&id)?;
    }
    Ok(())
}
