//! Registering and deregistering AMIs (EC2 `RegisterImage`,
//! `DescribeImages`, `DeregisterImage`).
//!
//! [`Register`] describes the AMI: instance-store (a bundle's manifest
//! location in S3) or EBS-backed (a snapshot id), with the fields EC2
//! would otherwise default badly: the architecture is always sent (the
//! API's default is i386), HVM images get `ena-support`, `sriov-net-support
//! simple` and `imds-support v2.0` unless told otherwise, the root volume is
//! gp3 and deleted on termination. [`Register::check`] refuses
//! contradictions between the request and what the image holds
//! ([`ImageFacts`]): UEFI boot without an EFI system partition, ENA support
//! without the `ena` driver, HVM without any boot loader, PV without a
//! kernel id.
//!
//! [`deregister`] removes the AMI and, on request, what it was made from:
//! the bundle's objects in S3, or the EBS snapshots of its block device
//! mappings.

use aws_sdk_ec2::types::{
    ArchitectureValues, BlockDeviceMapping, BootModeValues, EbsBlockDevice, Filter, Image,
    ImdsSupportValues, TpmSupportValues, VolumeType,
};

use aws_sdk_s3::error::ProvideErrorMetadata as _;

use super::{Aws, PublishError};

/// The CPU architecture of an AMI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// 64-bit x86.
    X86_64,
    /// 32-bit x86 (paravirtual instance-store images of old).
    I386,
    /// 64-bit ARM.
    Arm64,
}

impl Architecture {
    /// The API value.
    pub fn as_str(self) -> &'static str {
        match self {
            Architecture::X86_64 => "x86_64",
            Architecture::I386 => "i386",
            Architecture::Arm64 => "arm64",
        }
    }
}

impl std::str::FromStr for Architecture {
    type Err = PublishError;
    fn from_str(s: &str) -> Result<Self, PublishError> {
        match s {
            "x86_64" | "amd64" => Ok(Architecture::X86_64),
            "i386" => Ok(Architecture::I386),
            "arm64" | "aarch64" => Ok(Architecture::Arm64),
            _ => Err(PublishError::Invalid {
                what: "architecture",
                value: s.to_owned(),
                reason: "expected x86_64, i386 or arm64".to_owned(),
            }),
        }
    }
}

/// How instances of the AMI boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Virtualization {
    /// Hardware virtual machine: the image's own boot loader (UEFI or BIOS).
    Hvm,
    /// Paravirtual: Xen's PV-GRUB (a kernel id) reads the image's
    /// `/boot/grub/menu.lst`.
    Paravirtual,
}

impl std::str::FromStr for Virtualization {
    type Err = PublishError;
    fn from_str(s: &str) -> Result<Self, PublishError> {
        match s {
            "hvm" => Ok(Virtualization::Hvm),
            "paravirtual" | "pv" => Ok(Virtualization::Paravirtual),
            _ => Err(PublishError::Invalid {
                what: "virtualization type",
                value: s.to_owned(),
                reason: "expected hvm or paravirtual".to_owned(),
            }),
        }
    }
}

/// The firmware an HVM instance starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootMode {
    /// UEFI (needs an EFI system partition).
    Uefi,
    /// BIOS (needs BIOS boot code).
    LegacyBios,
    /// UEFI where the instance type has it, else BIOS (needs both).
    UefiPreferred,
}

impl BootMode {
    /// The API value.
    pub fn as_str(self) -> &'static str {
        match self {
            BootMode::Uefi => "uefi",
            BootMode::LegacyBios => "legacy-bios",
            BootMode::UefiPreferred => "uefi-preferred",
        }
    }

    /// The boot mode an image's loaders call for: UEFI with an ESP only,
    /// legacy BIOS with BIOS boot code only, UEFI-preferred with both.
    pub fn for_image(facts: &ImageFacts) -> Option<BootMode> {
        match (facts.has_esp, facts.has_bios_loader) {
            (true, true) => Some(BootMode::UefiPreferred),
            (true, false) => Some(BootMode::Uefi),
            (false, true) => Some(BootMode::LegacyBios),
            (false, false) => None,
        }
    }
}

impl std::str::FromStr for BootMode {
    type Err = PublishError;
    fn from_str(s: &str) -> Result<Self, PublishError> {
        match s {
            "uefi" => Ok(BootMode::Uefi),
            "legacy-bios" => Ok(BootMode::LegacyBios),
            "uefi-preferred" => Ok(BootMode::UefiPreferred),
            _ => Err(PublishError::Invalid {
                what: "boot mode",
                value: s.to_owned(),
                reason: "expected uefi, legacy-bios or uefi-preferred".to_owned(),
            }),
        }
    }
}

/// What the image holds, as far as registering is concerned. The CLI
/// reads it from the image (partition table, ESP, kernel modules).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageFacts {
    /// A GPT with an EFI system partition.
    pub has_esp: bool,
    /// BIOS boot code (an MBR boot sector with code, or a BIOS boot
    /// partition).
    pub has_bios_loader: bool,
    /// A PV-GRUB `menu.lst` (`/boot/grub/menu.lst`).
    pub has_menu_lst: bool,
    /// The `ena` network driver (as a module or built in), `None` if
    /// unknown.
    pub has_ena: Option<bool>,
    /// The NVMe driver, `None` if unknown.
    pub has_nvme: Option<bool>,
}

/// Where the AMI's root comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An instance-store bundle: `bucket/prefix/NAME.manifest.xml`.
    InstanceStore {
        /// The manifest location.
        manifest_location: String,
    },
    /// An EBS snapshot as the root volume.
    Ebs {
        /// The snapshot id.
        snapshot_id: String,
        /// Root volume size in GiB (`None`: the snapshot's size).
        volume_size: Option<i32>,
        /// Root volume type (default gp3).
        volume_type: String,
        /// Whether the root volume is deleted when the instance ends.
        delete_on_termination: bool,
    },
}

/// A `RegisterImage` request. Built with [`Register::new`] and the
/// setters; [`register`] sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Register {
    /// The AMI name (3-128 characters).
    pub name: String,
    /// A description.
    pub description: Option<String>,
    /// The architecture (always sent).
    pub architecture: Architecture,
    /// The root source.
    pub source: Source,
    /// HVM or paravirtual.
    pub virtualization: Virtualization,
    /// The root device name (default `/dev/xvda` for HVM, `/dev/sda1`
    /// for paravirtual, as the tutorial).
    pub root_device_name: Option<String>,
    /// The PV-GRUB kernel (AKI) for paravirtual images.
    pub kernel_id: Option<String>,
    /// A ramdisk (ARI).
    pub ramdisk_id: Option<String>,
    /// `ena-support` (HVM default: true).
    pub ena_support: bool,
    /// `sriov-net-support simple` (HVM default: true).
    pub sriov_simple: bool,
    /// `imds-support v2.0`: instances require IMDSv2 (default: true).
    pub imds_v2: bool,
    /// The boot mode (default: derived from the image with
    /// [`BootMode::for_image`]).
    pub boot_mode: Option<BootMode>,
    /// `tpm-support v2.0` (needs UEFI).
    pub tpm: bool,
    /// Instance-store volumes: (device name, `ephemeralN`).
    pub ephemeral: Vec<(String, String)>,
}

impl Register {
    /// An HVM request with the defaults above.
    pub fn new(name: impl Into<String>, architecture: Architecture, source: Source) -> Register {
        Register {
            name: name.into(),
            description: None,
            architecture,
            source,
            virtualization: Virtualization::Hvm,
            root_device_name: None,
            kernel_id: None,
            ramdisk_id: None,
            ena_support: true,
            sriov_simple: true,
            imds_v2: true,
            boot_mode: None,
            tpm: false,
            ephemeral: Vec::new(),
        }
    }

    /// The root device name sent.
    pub fn root_device(&self) -> &str {
        match (&self.root_device_name, self.virtualization) {
            (Some(name), _) => name,
            (None, Virtualization::Hvm) => "/dev/xvda",
            (None, Virtualization::Paravirtual) => "/dev/sda1",
        }
    }

    /// Checks the request on its own and against the image; fills in the
    /// boot mode from the image when none was given. Errors name the
    /// contradiction and what to change.
    pub fn check(&mut self, facts: Option<&ImageFacts>) -> Result<(), PublishError> {
        let contradiction = |s: String| Err(PublishError::Contradiction(s));
        if self.name.len() < 3 || self.name.len() > 128 {
            return Err(PublishError::Invalid {
                what: "AMI name",
                value: self.name.clone(),
                reason: "an AMI name has 3 to 128 characters".to_owned(),
            });
        }
        if let Some(bad) = self
            .name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "()[] ./-'@_".contains(*c)))
        {
            return Err(PublishError::Invalid {
                what: "AMI name",
                value: self.name.clone(),
                reason: format!(
                    "{bad:?} is not allowed (letters, digits, spaces and ( ) [ ] . / - ' @ _ are)"
                ),
            });
        }
        match self.virtualization {
            Virtualization::Paravirtual => {
                if self.kernel_id.is_none() {
                    return contradiction(
                        "a paravirtual AMI boots through PV-GRUB: give its kernel id (--kernel-id aki-...)"
                            .to_owned(),
                    );
                }
                if self.boot_mode.is_some() || self.tpm {
                    return contradiction(
                        "boot mode and TPM apply to HVM AMIs only, not paravirtual ones".to_owned(),
                    );
                }
                if self.architecture == Architecture::Arm64 {
                    return contradiction("arm64 AMIs are HVM only".to_owned());
                }
                // ENA and SR-IOV are HVM features.
                self.ena_support = false;
                self.sriov_simple = false;
                if let Some(f) = facts {
                    if !f.has_menu_lst {
                        return contradiction(
                            "PV-GRUB reads /boot/grub/menu.lst, which the image does not have"
                                .to_owned(),
                        );
                    }
                }
            }
            Virtualization::Hvm => {
                if self.kernel_id.is_some() || self.ramdisk_id.is_some() {
                    return contradiction(
                        "kernel and ramdisk ids are for paravirtual AMIs; an HVM image boots its own loader \
                         (drop --kernel-id or use --virtualization-type paravirtual)"
                            .to_owned(),
                    );
                }
                if let Some(f) = facts {
                    let derived = BootMode::for_image(f);
                    match (self.boot_mode, derived) {
                        (_, None) => {
                            return contradiction(
                                "the image has no boot loader (no EFI system partition, no BIOS boot code): \
                                 an HVM instance cannot boot it; build it with a bootable layout, or register \
                                 a PV-GRUB image as paravirtual with --kernel-id"
                                    .to_owned(),
                            )
                        }
                        (None, Some(mode)) => self.boot_mode = Some(mode),
                        (Some(BootMode::Uefi | BootMode::UefiPreferred), _) if !f.has_esp => {
                            return contradiction(format!(
                                "boot mode {} needs an EFI system partition, and the image has none",
                                self.boot_mode.map(BootMode::as_str).unwrap_or_default()
                            ))
                        }
                        (Some(BootMode::LegacyBios | BootMode::UefiPreferred), _)
                            if !f.has_bios_loader =>
                        {
                            return contradiction(format!(
                                "boot mode {} needs BIOS boot code, and the image has none",
                                self.boot_mode.map(BootMode::as_str).unwrap_or_default()
                            ))
                        }
                        _ => {}
                    }
                    if self.ena_support && f.has_ena == Some(false) {
                        return contradiction(
                            "ENA support requested, but the image has no ena driver: instances would have \
                             no network (use a kernel with ena, or --no-ena-support)"
                                .to_owned(),
                        );
                    }
                }
                if self.tpm && self.boot_mode == Some(BootMode::LegacyBios) {
                    return contradiction("NitroTPM needs UEFI boot, not legacy-bios".to_owned());
                }
            }
        }
        if let Source::Ebs {
            volume_size: Some(size),
            ..
        } = &self.source
        {
            if !(1..=65536).contains(size) {
                return Err(PublishError::Invalid {
                    what: "root volume size",
                    value: size.to_string(),
                    reason: "expected 1 to 65536 GiB".to_owned(),
                });
            }
        }
        for (device, virtual_name) in &self.ephemeral {
            if !virtual_name.starts_with("ephemeral")
                || virtual_name["ephemeral".len()..].parse::<u8>().is_err()
            {
                return Err(PublishError::Invalid {
                    what: "ephemeral mapping",
                    value: format!("{device}={virtual_name}"),
                    reason: "the virtual name is ephemeral0 to ephemeral23".to_owned(),
                });
            }
        }
        Ok(())
    }
}

/// Registers the AMI; returns its id. Call [`Register::check`] first.
pub async fn register(aws: &Aws, request: &Register) -> Result<String, PublishError> {
    let ec2 = aws.ec2();
    let mut call = ec2
        .register_image()
        .name(&request.name)
        .architecture(ArchitectureValues::from(request.architecture.as_str()))
        .virtualization_type(match request.virtualization {
            Virtualization::Hvm => "hvm",
            Virtualization::Paravirtual => "paravirtual",
        })
        .root_device_name(request.root_device());
    if let Some(d) = &request.description {
        call = call.description(d);
    }
    if let Some(k) = &request.kernel_id {
        call = call.kernel_id(k);
    }
    if let Some(r) = &request.ramdisk_id {
        call = call.ramdisk_id(r);
    }
    match &request.source {
        Source::InstanceStore { manifest_location } => {
            call = call.image_location(manifest_location);
        }
        Source::Ebs {
            snapshot_id,
            volume_size,
            volume_type,
            delete_on_termination,
        } => {
            let ebs = EbsBlockDevice::builder()
                .snapshot_id(snapshot_id)
                .set_volume_size(*volume_size)
                .volume_type(VolumeType::from(volume_type.as_str()))
                .delete_on_termination(*delete_on_termination)
                .build();
            call = call.block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name(request.root_device())
                    .ebs(ebs)
                    .build(),
            );
        }
    }
    for (device, virtual_name) in &request.ephemeral {
        call = call.block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name(device)
                .virtual_name(virtual_name)
                .build(),
        );
    }
    if request.ena_support {
        call = call.ena_support(true);
    }
    if request.sriov_simple {
        call = call.sriov_net_support("simple");
    }
    if request.imds_v2 {
        call = call.imds_support(ImdsSupportValues::V20);
    }
    if let Some(mode) = request.boot_mode {
        call = call.boot_mode(BootModeValues::from(mode.as_str()));
    }
    if request.tpm {
        call = call.tpm_support(TpmSupportValues::V20);
    }
    let out = call
        .send()
        .await
        .map_err(|e| PublishError::api("RegisterImage", e))?;
    out.image_id
        .filter(|id| !id.is_empty())
        .ok_or_else(|| PublishError::Api {
            operation: "RegisterImage",
            code: None,
            message: "the response has no image id".to_owned(),
        })
}

/// Describes one AMI (`None` if it does not exist).
pub async fn describe(aws: &Aws, image_id: &str) -> Result<Option<Image>, PublishError> {
    let out = aws.ec2().describe_images().image_ids(image_id).send().await;
    match out {
        Ok(out) => Ok(out
            .images
            .unwrap_or_default()
            .into_iter()
            .find(|i| i.image_id() == Some(image_id))),
        Err(e) if e.code().is_some_and(|c| c.starts_with("InvalidAMIID")) => Ok(None),
        Err(e) => Err(PublishError::api("DescribeImages", e)),
    }
}

/// Finds AMIs of this account by name.
pub async fn find_by_name(aws: &Aws, name: &str) -> Result<Vec<Image>, PublishError> {
    let out = aws
        .ec2()
        .describe_images()
        .owners("self")
        .filters(Filter::builder().name("name").values(name).build())
        .send()
        .await
        .map_err(|e| PublishError::api("DescribeImages", e))?;
    Ok(out.images.unwrap_or_default())
}

/// What [`deregister`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deregistered {
    /// The AMI id.
    pub image_id: String,
    /// S3 keys of the bundle that were deleted.
    pub deleted_objects: Vec<String>,
    /// Snapshots that were deleted.
    pub deleted_snapshots: Vec<String>,
}

/// Deregisters an AMI. With `delete_bundle`, also deletes its bundle from
/// S3 (`bundle_location`, else the AMI's own image location); with
/// `delete_snapshots`, the EBS snapshots of its block device mappings.
pub async fn deregister(
    aws: &Aws,
    image_id: &str,
    delete_bundle: bool,
    bundle_location: Option<&str>,
    delete_snapshots: bool,
) -> Result<Deregistered, PublishError> {
    let image = describe(aws, image_id)
        .await?
        .ok_or_else(|| PublishError::Invalid {
            what: "AMI",
            value: image_id.to_owned(),
            reason: "no such image in this region".to_owned(),
        })?;
    let snapshots: Vec<String> = image
        .block_device_mappings()
        .iter()
        .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()).map(str::to_owned))
        .collect();
    let location = bundle_location
        .map(str::to_owned)
        .or_else(|| image.image_location().map(str::to_owned))
        .filter(|l| l.ends_with(".manifest.xml"));
    if delete_bundle && location.is_none() {
        return Err(PublishError::Invalid {
            what: "AMI",
            value: image_id.to_owned(),
            reason: "EC2 reports no bundle manifest location for it; give the location \
                     (bucket/prefix/NAME.manifest.xml) explicitly"
                .to_owned(),
        });
    }
    aws.ec2()
        .deregister_image()
        .image_id(image_id)
        .send()
        .await
        .map_err(|e| PublishError::api("DeregisterImage", e))?;
    let mut report = Deregistered {
        image_id: image_id.to_owned(),
        ..Deregistered::default()
    };
    if delete_bundle {
        if let Some(location) = location {
            report.deleted_objects = super::s3::delete_bundle(aws, &location).await?;
        }
    }
    if delete_snapshots {
        for id in snapshots {
            aws.ec2()
                .delete_snapshot()
                .snapshot_id(&id)
                .send()
                .await
                .map_err(|e| PublishError::api("DeleteSnapshot", e))?;
            report.deleted_snapshots.push(id);
        }
    }
    Ok(report)
}
