//! `ami bundle` and `ami unbundle`: EC2 instance-store bundles.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ami_bundle::manifest::Mapping;
use ami_bundle::{
    parse_block_device_mapping, unbundle_to_dir, AccountId, Arch, Bundle, BundleOptions, Bundler,
    Certificate, Ec2Cert, ParallelGzip, PrivateKey, SignatureCheck,
};
use ami_core::progress::{Progress, Stage};
use anyhow::{bail, Context, Result};
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::json::JsonObject;

/// Block device mappings as given on the command line.
#[derive(Debug, Clone)]
pub struct Mappings(Vec<Mapping>);

fn parse_mappings(text: &str) -> Result<Mappings, String> {
    parse_block_device_mapping(text)
        .map(Mappings)
        .map_err(|e| e.to_string())
}

fn parse_account(text: &str) -> Result<AccountId, String> {
    text.parse().map_err(|e: ami_bundle::Error| e.to_string())
}

fn parse_arch(text: &str) -> Result<Arch, String> {
    text.parse().map_err(|e: ami_bundle::Error| e.to_string())
}

/// Arguments of `ami bundle`.
#[derive(Debug, clap::Args)]
pub struct BundleArgs {
    /// Your X.509 certificate (PEM): the bundle's key is also encrypted for
    /// it, so that you can unbundle it. `ami keys` makes one.
    #[arg(long, short = 'c', value_name = "CERT.pem")]
    cert: PathBuf,

    /// The private key of the certificate (PEM, unencrypted): signs the
    /// manifest.
    #[arg(long, short = 'k', value_name = "KEY.pem")]
    privatekey: PathBuf,

    /// Your AWS account id (12 digits; hyphens are ignored).
    #[arg(long, short = 'u', value_name = "ACCOUNT_ID", value_parser = parse_account)]
    user: AccountId,

    /// Image architecture: x86_64 or i386.
    #[arg(long, short = 'r', value_name = "ARCH", value_parser = parse_arch)]
    arch: Arch,

    /// Directory the parts and the manifest are written to (it must
    /// exist).
    #[arg(long, short = 'd', value_name = "DIR")]
    destination: PathBuf,

    /// Bundle name: the file name inside the bundle and the stem of
    /// NAME.part.NN and NAME.manifest.xml. Default: the image's file name.
    #[arg(long, short = 'p', value_name = "NAME")]
    prefix: Option<String>,

    /// Kernel id to write to the manifest (aki-...).
    #[arg(long, value_name = "AKI")]
    kernel: Option<String>,

    /// Ramdisk id to write to the manifest (ari-...).
    #[arg(long, value_name = "ARI")]
    ramdisk: Option<String>,

    /// Block device mappings, VIRTUAL=DEVICE,... e.g.
    /// ami=sda1,root=/dev/sda1,ephemeral0=sdb.
    #[arg(long, short = 'B', value_name = "MAPPINGS", value_parser = parse_mappings)]
    block_device_mapping: Option<Mappings>,

    /// Product codes, comma-separated (one manifest element each).
    #[arg(long, value_name = "CODE,...", value_delimiter = ',')]
    productcodes: Vec<String>,

    /// EC2's certificate (PEM) to encrypt EC2's copy of the key for.
    /// Default: the one of --region.
    #[arg(long, value_name = "PEM", conflicts_with = "region")]
    ec2cert: Option<PathBuf>,

    /// Region the AMI will be registered in; picks EC2's certificate
    /// (us-gov-west-1 and cn-north-1 have their own). Default: the
    /// commercial regions' certificate.
    #[arg(long, value_name = "REGION")]
    region: Option<String>,

    /// gzip level, 1 (fastest) to 9 (smallest, as Amazon's tool).
    #[arg(long, value_name = "N", default_value_t = 9,
          value_parser = clap::value_parser!(u32).range(1..=9))]
    level: u32,

    /// Compression threads. Default: one per core.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    threads: Option<u32>,

    /// Print a JSON report on stdout.
    #[arg(long)]
    json: bool,

    /// The disk image to bundle (1 byte to 10 GiB). Holes in a sparse
    /// image are stored as holes (as `tar -S` does).
    #[arg(value_name = "IMAGE")]
    image: PathBuf,
}

/// Arguments of `ami unbundle`.
#[derive(Debug, clap::Args)]
pub struct UnbundleArgs {
    /// The bundle's manifest (NAME.manifest.xml).
    #[arg(long, short = 'm', value_name = "MANIFEST")]
    manifest: PathBuf,

    /// The private key the bundle was made for (PEM).
    #[arg(long, short = 'k', value_name = "KEY.pem")]
    privatekey: PathBuf,

    /// Directory holding the parts. Default: the manifest's directory.
    #[arg(long, short = 's', value_name = "DIR")]
    source: Option<PathBuf>,

    /// Directory the image is written to (as the file name stored in the
    /// bundle, replacing a file of that name).
    #[arg(long, short = 'd', value_name = "DIR", default_value = ".")]
    destination: PathBuf,

    /// Check the manifest signature with this certificate (PEM) instead of
    /// the public half of --privatekey.
    #[arg(long, value_name = "CERT.pem", conflicts_with = "no_signature_check")]
    cert: Option<PathBuf>,

    /// Do not check the manifest signature (neither EC2 nor Amazon's
    /// ec2-unbundle does). Part and image digests are still checked.
    #[arg(long)]
    no_signature_check: bool,

    /// Print a JSON report on stdout.
    #[arg(long)]
    json: bool,
}

/// One progress bar with a fixed label, bytes and throughput.
struct ByteBar {
    label: &'static str,
    bar: Mutex<Option<ProgressBar>>,
}

impl ByteBar {
    fn new(label: &'static str) -> ByteBar {
        ByteBar {
            label,
            bar: Mutex::new(None),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Option<ProgressBar>) -> R) -> R {
        let mut bar = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut bar)
    }
}

impl Progress for ByteBar {
    fn begin(&self, _stage: Stage, total: Option<u64>) {
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{prefix:>10} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(self.label);
        bar.enable_steady_tick(Duration::from_millis(200));
        self.with(|b| *b = Some(bar));
    }

    fn advance(&self, _stage: Stage, amount: u64) {
        self.with(|b| {
            if let Some(bar) = b {
                bar.inc(amount);
            }
        });
    }

    fn end(&self, _stage: Stage) {
        self.with(|b| {
            if let Some(bar) = b.take() {
                bar.finish_and_clear();
            }
        });
    }
}

impl Drop for ByteBar {
    fn drop(&mut self) {
        self.with(|b| {
            if let Some(bar) = b.take() {
                bar.finish_and_clear();
            }
        });
    }
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("reading {what} {}", path.display()))
}

/// The bundle name: --prefix, or the image's file name.
fn bundle_name(args: &BundleArgs) -> Result<String> {
    if let Some(prefix) = &args.prefix {
        return Ok(prefix.clone());
    }
    match args.image.file_name().map(|n| n.to_str()) {
        Some(Some(name)) => Ok(name.to_owned()),
        Some(None) => bail!(
            "the image's file name {:?} is not UTF-8; give the bundle a name with --prefix",
            args.image
        ),
        None => bail!("IMAGE {} does not name a file", args.image.display()),
    }
}

fn ec2_certificate(args: &BundleArgs) -> Result<Certificate> {
    if let Some(path) = &args.ec2cert {
        let pem = read_pem(path, "the EC2 certificate")?;
        return Certificate::from_pem(&pem)
            .with_context(|| format!("reading the EC2 certificate {}", path.display()));
    }
    let cert = match &args.region {
        Some(region) => Ec2Cert::for_region(region)
            .map_err(anyhow::Error::new)
            .context("choosing EC2's certificate (give it with --ec2cert)")?,
        None => Ec2Cert::Standard,
    };
    Ok(cert.certificate()?)
}

/// Checks IMAGE and --destination before any work is done.
fn check_paths(args: &BundleArgs) -> Result<()> {
    let meta =
        fs::metadata(&args.image).with_context(|| format!("IMAGE {}", args.image.display()))?;
    if !meta.is_file() {
        bail!("IMAGE {} is not a regular file", args.image.display());
    }
    let dest = fs::metadata(&args.destination)
        .with_context(|| format!("--destination {}", args.destination.display()))?;
    if !dest.is_dir() {
        bail!(
            "--destination {} is not a directory",
            args.destination.display()
        );
    }
    Ok(())
}

/// Runs `ami bundle`.
pub fn run(args: &BundleArgs) -> Result<()> {
    let started = Instant::now();
    check_paths(args)?;
    let cert = Certificate::from_pem(&read_pem(&args.cert, "--cert")?)
        .with_context(|| format!("reading the certificate {}", args.cert.display()))?;
    let key = PrivateKey::from_pem(&read_pem(&args.privatekey, "--privatekey")?)
        .with_context(|| format!("reading the private key {}", args.privatekey.display()))?;
    if !key.matches(&cert) {
        bail!(
            "the private key {} does not belong to the certificate {} (their public keys differ)",
            args.privatekey.display(),
            args.cert.display()
        );
    }
    let name = bundle_name(args)?;
    let mut gzip = ParallelGzip::new().level(args.level)?;
    if let Some(threads) = args.threads {
        gzip = gzip.threads(threads as usize);
    }
    let options = BundleOptions::new(&name, args.user.clone(), args.arch, cert, key)
        .ec2_cert(ec2_certificate(args)?)
        .kernel_id(args.kernel.clone())
        .ramdisk_id(args.ramdisk.clone())
        .block_device_mapping(
            args.block_device_mapping
                .clone()
                .map(|m| m.0)
                .unwrap_or_default(),
        )
        .product_codes(args.productcodes.clone())
        .gzip(gzip);
    let bundler = Bundler::new(options)?;

    let bar = ByteBar::new("bundle");
    let bundle = bundler
        .bundle_file(&args.image, &args.destination, &mut rand::rngs::OsRng, &bar)
        .with_context(|| format!("bundling {}", args.image.display()))?;
    drop(bar);

    let seconds = started.elapsed().as_secs_f64();
    let manifest_path = args.destination.join(&bundle.manifest_name);
    eprint!("{}", human_summary(args, &bundle, &manifest_path, seconds));
    if args.json {
        let mut o = JsonObject::new();
        o.string("manifest", &manifest_path.to_string_lossy());
        o.string("name", &bundle.manifest.image.name);
        o.number("image_bytes", bundle.manifest.image.size);
        o.number("tar_bytes", bundle.tar_bytes);
        o.number("gzip_bytes", bundle.gzip_bytes);
        o.number("bundled_bytes", bundle.manifest.image.bundled_size);
        o.number("parts", bundle.part_sizes.len() as u64);
        o.string("digest", &bundle.manifest.image.digest);
        o.float("seconds", seconds);
        print_json(o)?;
    }
    Ok(())
}

fn human_summary(args: &BundleArgs, bundle: &Bundle, manifest: &Path, seconds: f64) -> String {
    let image = &bundle.manifest.image;
    let rate = image.size as f64 / seconds.max(1e-9) / 1e6;
    format!(
        "bundled {} ({}) in {seconds:.2} s ({rate:.0} MB/s): {} parts, {} (gzip -{} {:.1}% of the \
         tar stream)\nmanifest: {}\n",
        args.image.display(),
        HumanBytes(image.size),
        bundle.part_sizes.len(),
        HumanBytes(image.bundled_size),
        args.level,
        bundle.gzip_bytes as f64 * 100.0 / bundle.tar_bytes.max(1) as f64,
        manifest.display(),
    )
}

fn print_json(o: JsonObject) -> Result<()> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{}", o.finish())
        .and_then(|()| stdout.flush())
        .context("writing the report to stdout")
}

/// Runs `ami unbundle`.
pub fn run_unbundle(args: &UnbundleArgs) -> Result<()> {
    let started = Instant::now();
    let key = PrivateKey::from_pem(&read_pem(&args.privatekey, "--privatekey")?)
        .with_context(|| format!("reading the private key {}", args.privatekey.display()))?;
    let check = if args.no_signature_check {
        SignatureCheck::Skip
    } else if let Some(path) = &args.cert {
        let cert = Certificate::from_pem(&read_pem(path, "--cert")?)
            .with_context(|| format!("reading the certificate {}", path.display()))?;
        SignatureCheck::Key(cert.public_key().clone())
    } else {
        SignatureCheck::PrivateKey
    };
    let source = match &args.source {
        Some(dir) => dir.clone(),
        None => match args.manifest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        },
    };
    if !args.destination.is_dir() {
        bail!(
            "--destination {} is not a directory",
            args.destination.display()
        );
    }
    let bar = ByteBar::new("unbundle");
    let result = unbundle_to_dir(
        &args.manifest,
        &key,
        &check,
        &source,
        &args.destination,
        &bar,
    );
    drop(bar);
    let (path, unbundled) = match result {
        Ok(ok) => ok,
        Err(ami_bundle::Error::BadSignature) if args.cert.is_none() => bail!(
            "unbundling {}: the manifest signature does not verify with the public half of {}; \
             if someone else signed it, give their certificate with --cert (or skip the check \
             with --no-signature-check)",
            args.manifest.display(),
            args.privatekey.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("unbundling {}", args.manifest.display())),
    };
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "unbundled {} ({}, {} parts, all digests checked) in {seconds:.2} s",
        path.display(),
        HumanBytes(unbundled.size),
        unbundled.manifest.image.parts.len(),
    );
    if args.json {
        let mut o = JsonObject::new();
        o.string("image", &path.to_string_lossy());
        o.number("image_bytes", unbundled.size);
        o.string("digest", &unbundled.manifest.image.digest);
        o.number("parts", unbundled.manifest.image.parts.len() as u64);
        o.string(
            "signature",
            match check {
                SignatureCheck::Skip => "not checked",
                _ => "verified",
            },
        );
        o.float("seconds", seconds);
        print_json(o)?;
    }
    Ok(())
}
