//! The boot side of `ami build`: the boot packages taken from the mirror
//! (busybox-static for the initramfs; shim-signed and grub-efi-amd64-signed
//! for UEFI), the ESP's files and `grub.cfg`, and the disk assembly for
//! each layout (bare filesystem, MBR partition, GPT with ESP).
//!
//! The boot packages are resolved from the same verified repository as the
//! image's packages and downloaded into the same cache (size and SHA-256
//! checked), but not installed into the image: only the files the boot
//! needs are read out of their data archives. Nothing from them runs.

use std::fs::{self, File};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ami_core::progress::Progress;
use ami_core::recipe::Layout;
use ami_core::Tree;
use ami_deb::deb::{read_tar_index_from_bytes, DebFile, TarEntryKind};
use ami_deb::repo::Repository;
use ami_ext4::disk::esp::{write_esp, EspFile, EspOptions};
use ami_ext4::disk::{
    disk_byte_ranges, plan, write_partition_table, DiskIds, DiskPlan, Layout as DiskLayout, Window,
    DEFAULT_ESP_SIZE, MIB, SECTOR_SIZE,
};
use ami_ext4::{FormatOptions, Report, Size};
use anyhow::{bail, Context, Result};

/// A package read for its files, with what identifies it.
#[derive(Debug, Clone)]
pub struct BootPackage {
    /// Package name.
    pub name: String,
    /// Version.
    pub version: String,
    /// SHA-256 of the `.deb`.
    pub sha256: String,
}

/// The files the boot needs from the archive.
#[derive(Debug, Default)]
pub struct BootAssets {
    /// The static busybox binary (initramfs userspace).
    pub busybox: Vec<u8>,
    /// shim, signed for Secure Boot (UEFI layouts).
    pub shim: Option<Vec<u8>>,
    /// Debian's signed, monolithic GRUB EFI image (UEFI layouts).
    pub grub: Option<Vec<u8>>,
    /// The packages they came from.
    pub packages: Vec<BootPackage>,
}

/// (package, file in its data archive) pairs a layout needs.
fn wanted(layout: Layout) -> Vec<(&'static str, &'static str)> {
    let mut w = vec![("busybox-static", "bin/busybox")];
    if layout == Layout::Uefi {
        w.push(("shim-signed", "usr/lib/shim/shimx64.efi.signed"));
        w.push((
            "grub-efi-amd64-signed",
            "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
        ));
    }
    w
}

/// Resolves, downloads (verified, cached) and reads the boot packages.
pub fn fetch(
    repository: &Repository,
    layout: Layout,
    progress: &dyn Progress,
) -> Result<BootAssets> {
    let index = repository
        .update(progress)
        .context("reading the repository for the boot packages")?;
    let wanted = wanted(layout);
    let mut packages = Vec::new();
    for (name, _) in &wanted {
        let p = index.packages().candidate(name).with_context(|| {
            format!("the repository has no {name}, which the {layout} layout needs")
        })?;
        packages.push(p.clone());
    }
    let files = repository
        .download(&index, &packages, progress)
        .context("downloading the boot packages")?;
    let mut assets = BootAssets::default();
    for ((name, member), (package, path)) in wanted.iter().zip(files) {
        let data = read_member(&path, member)
            .with_context(|| format!("reading {member} from {}", path.display()))?;
        match *name {
            "busybox-static" => assets.busybox = data,
            "shim-signed" => assets.shim = Some(data),
            _ => assets.grub = Some(data),
        }
        assets.packages.push(BootPackage {
            name: package.name().to_owned(),
            version: package.version().to_string(),
            sha256: package.sha256().unwrap_or_default().to_owned(),
        });
    }
    Ok(assets)
}

/// One regular file of a `.deb`'s data archive.
fn read_member(deb: &Path, member: &str) -> Result<Vec<u8>> {
    let deb = DebFile::open(deb)?;
    let mut tar = Vec::new();
    deb.copy_data_tar(&mut tar, 512 << 20)?;
    let entries = read_tar_index_from_bytes(&tar)?;
    for e in entries {
        if &*e.path == member.as_bytes() {
            if let TarEntryKind::File { offset, size } = e.kind {
                let (o, s) = (offset as usize, size as usize);
                return Ok(tar[o..o + s].to_vec());
            }
            bail!("{member} is not a regular file");
        }
    }
    bail!("no {member} in the package")
}

/// The GRUB configuration on the ESP: serial and screen consoles, the root
/// found by its label, the kernel and initrd read from the ext4 root.
pub fn grub_cfg(kernel: &str, initrd: Option<&str>, cmdline: &str) -> String {
    let mut s = String::from(
        "# Written by ami: boot the image's kernel from the ext4 root.\n\
         set timeout=0\n\
         serial --unit=0 --speed=115200\n\
         terminal_input serial console\n\
         terminal_output serial console\n\
         search --no-floppy --label rootfs --set=root\n",
    );
    s.push_str(&format!("echo 'Loading {kernel} ...'\n"));
    s.push_str(&format!("linux {kernel} {cmdline}\n"));
    if let Some(i) = initrd {
        s.push_str(&format!("initrd {i}\n"));
    }
    s.push_str("boot\n");
    s
}

/// The ESP's files for a UEFI disk: shim as the removable-media loader
/// `EFI/BOOT/BOOTX64.EFI`, the signed GRUB beside it as `grubx64.efi`
/// (shim loads that name from its own directory), and `grub.cfg` both where
/// Debian's GRUB looks first (`EFI/debian`, its built-in prefix) and beside
/// it (`$cmdpath`).
pub fn esp_files(assets: &BootAssets, grub_cfg: &str) -> Result<Vec<EspFile>> {
    let (Some(shim), Some(grub)) = (&assets.shim, &assets.grub) else {
        bail!("the UEFI layout needs shim and GRUB, which were not fetched");
    };
    Ok(vec![
        EspFile::new("EFI/BOOT/BOOTX64.EFI", shim.clone()),
        EspFile::new("EFI/BOOT/grubx64.efi", grub.clone()),
        EspFile::new("EFI/BOOT/grub.cfg", grub_cfg.as_bytes().to_vec()),
        EspFile::new("EFI/debian/grub.cfg", grub_cfg.as_bytes().to_vec()),
    ])
}

/// The disk layout of a recipe layout.
pub fn disk_layout(layout: Layout) -> DiskLayout {
    match layout {
        Layout::Pvgrub => DiskLayout::Plain,
        Layout::PvgrubMbr => DiskLayout::Mbr,
        Layout::Uefi => DiskLayout::Gpt {
            esp_size: DEFAULT_ESP_SIZE,
        },
    }
}

/// What [`write_disk`] wrote.
pub struct Disk {
    /// The root filesystem's report.
    pub report: Report,
    /// The plan (partition ranges).
    pub plan: DiskPlan,
    /// Every byte range of the disk that holds something (tables, the ESP,
    /// the filesystem's allocated blocks), sorted.
    pub allocated: Vec<Range<u64>>,
}

/// Writes `disk.img` in `dir` for `layout`: the partition table, the ESP
/// (when `esp` is given) and the root filesystem, into a temporary file
/// renamed at the end. `size` is the whole disk's size (or fit to the
/// tree).
#[allow(clippy::too_many_arguments)]
pub fn write_disk(
    tree: &Tree,
    dir: &Path,
    layout: Layout,
    size: Size,
    options: FormatOptions,
    seed: &[u8],
    epoch: i64,
    esp: Option<&[EspFile]>,
    progress: &dyn Progress,
) -> Result<Disk> {
    let dl = disk_layout(layout);
    let overhead = match dl {
        DiskLayout::Plain => 0,
        DiskLayout::Mbr => MIB,
        DiskLayout::Gpt { esp_size } => MIB + esp_size + MIB,
    };
    let (fs_size, disk_size) = match size {
        Size::Bytes(total) => {
            let fs = total
                .checked_sub(overhead)
                .filter(|&f| f >= 16 * MIB)
                .with_context(|| {
                    format!("a {total}-byte disk is too small for the {layout} layout")
                })?;
            // Whole sectors for the filesystem; the plan aligns the rest.
            (fs / SECTOR_SIZE * SECTOR_SIZE, Some(total))
        }
        Size::Fit { .. } => {
            let fs = ami_ext4::required_size(tree, &options.clone().size(size))
                .context("sizing the root filesystem")?;
            (fs, None)
        }
    };
    let disk_size = disk_size.map(|d| {
        if dl == DiskLayout::Plain {
            d / SECTOR_SIZE * SECTOR_SIZE
        } else {
            d / MIB * MIB
        }
    });
    let fs_size = if dl == DiskLayout::Plain {
        fs_size
    } else {
        fs_size.min(disk_size.map_or(u64::MAX, |d| d - overhead))
    };
    let plan = plan(dl, fs_size, disk_size).context("planning the disk layout")?;

    let path = dir.join("disk.img");
    let mut tmp = tempfile::Builder::new()
        .prefix(".disk.img-")
        .permissions(fs::Permissions::from_mode(0o644))
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let file: &mut File = tmp.as_file_mut();
    file.set_len(plan.disk_size).context("sizing disk.img")?;
    write_partition_table(file, &plan, &DiskIds::derive(seed))
        .context("writing the partition table")?;
    let mut allocated = plan.table_ranges();
    if let (Some(range), Some(files)) = (plan.esp.clone(), esp) {
        let volume_id = u32::from_le_bytes(
            ami_ext4::disk::Guid::derive(seed, "esp-volume-id").0[..4]
                .try_into()
                .expect("4 bytes"),
        );
        let options = EspOptions::new(volume_id)
            .label("ESP")
            .timestamp(epoch)
            .assume_zeroed(true);
        write_esp(&mut Window::new(&mut *file, range.clone()), files, &options)
            .context("writing the EFI system partition")?;
        allocated.push(range);
    }
    let root = plan.root.clone();
    let root_len = root.end - root.start;
    let report = {
        let mut writer = BufWriter::with_capacity(1 << 20, &mut *file);
        let report = {
            let mut window = Window::new(&mut writer, root.clone());
            ami_ext4::format(
                &mut window,
                tree,
                &options.size(Size::Bytes(root_len)),
                progress,
            )
            .with_context(|| format!("writing the root filesystem of {}", path.display()))?
        };
        writer.flush().context("writing the image")?;
        report
    };
    allocated.extend(disk_byte_ranges(&report.allocated, root.start));
    allocated.sort_by_key(|r| r.start);
    // Merge touching ranges.
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(allocated.len());
    for r in allocated {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    let file = tmp.as_file_mut();
    file.seek(SeekFrom::End(0))?;
    file.sync_all().context("finishing the image")?;
    tmp.persist(&path)
        .map_err(|e| e.error)
        .with_context(|| format!("renaming the finished image to {}", path.display()))?;
    Ok(Disk {
        report,
        plan,
        allocated: merged,
    })
}
