//! The bundle manifest (`NAME.manifest.xml`, version 2007-10-10).
//!
//! The manifest is written exactly as Amazon's Ruby tool (REXML) writes it
//! (notes §9): one line with no whitespace between tags and no trailing
//! newline, the declaration `<?xml version='1.0'?>`, single-quoted
//! attributes, absent values left out (never empty elements), text escaped
//! as `&amp; &lt; &gt; &quot; &apos;`, and the elements in this order
//! (EC2 is known to be order-sensitive):
//!
//! ```text
//! manifest
//!   version                  2007-10-10
//!   bundler                  name, version, release
//!   machine_configuration    architecture, block_device_mapping (mapping:
//!                            virtual, device; sorted by virtual),
//!                            kernel_id, ramdisk_id, product_codes
//!   image                    name, user, type, kernel_name, ancestry,
//!                            digest algorithm='SHA1', size, bundled_size,
//!                            ec2_encrypted_key algorithm='AES-128-CBC',
//!                            user_encrypted_key algorithm='AES-128-CBC',
//!                            ec2_encrypted_iv, user_encrypted_iv,
//!                            parts count='N' (part index='i': filename,
//!                            digest algorithm='SHA1')
//!   signature
//! ```
//!
//! The signature (notes §10) is RSA-SHA1 over the text of the
//! `<machine_configuration>` element immediately followed by the text of
//! the `<image>` element, as they appear in the file. [`signed_text`] cuts
//! them out of any manifest text; for the manifests written here that is
//! the same as what the Ruby tools' verifier (which re-serializes with
//! REXML) checks.
//!
//! [`Manifest::parse`] reads manifests of any producer (Amazon's tools,
//! euca2ools, go_ami_tools, this crate): quoting and whitespace do not
//! matter there, and unknown elements are ignored.

use std::fmt::Write as _;

use crate::crypto::PublicKey;
use crate::error::{Error, Result};
use crate::hex;

/// The manifest format version this crate writes.
pub const MANIFEST_VERSION: &str = "2007-10-10";

/// The tool named in `<bundler>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundlerInfo {
    /// Tool name.
    pub name: String,
    /// Tool version.
    pub version: String,
    /// Tool release.
    pub release: String,
}

impl Default for BundlerInfo {
    /// This crate: name `ami`, version `MAJOR.MINOR`, release `PATCH` of
    /// the crate version (no consumer is known to check these, notes §9.2).
    fn default() -> BundlerInfo {
        BundlerInfo {
            name: "ami".to_owned(),
            version: format!(
                "{}.{}",
                env!("CARGO_PKG_VERSION_MAJOR"),
                env!("CARGO_PKG_VERSION_MINOR")
            ),
            release: env!("CARGO_PKG_VERSION_PATCH").to_owned(),
        }
    }
}

/// One block device mapping: a virtual name (`ami`, `root`, `swap`,
/// `ephemeral0`, ...) and the device it maps to (`sda1`, `/dev/sda1`, ...).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mapping {
    /// The virtual name.
    pub virtual_name: String,
    /// The device name.
    pub device: String,
}

/// `<machine_configuration>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachineConfiguration {
    /// `i386` or `x86_64`.
    pub architecture: Option<String>,
    /// Block device mappings (written sorted by virtual name).
    pub block_device_mapping: Vec<Mapping>,
    /// Kernel id (`aki-...`).
    pub kernel_id: Option<String>,
    /// Ramdisk id (`ari-...`).
    pub ramdisk_id: Option<String>,
    /// Product codes, one `<product_code>` each.
    pub product_codes: Vec<String>,
}

impl MachineConfiguration {
    fn is_empty(&self) -> bool {
        self.architecture.is_none()
            && self.block_device_mapping.is_empty()
            && self.kernel_id.is_none()
            && self.ramdisk_id.is_none()
            && self.product_codes.is_empty()
    }
}

/// One `<part>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestPart {
    /// Position in the bundle, from 0.
    pub index: u64,
    /// File name (no directory).
    pub filename: String,
    /// SHA-1 of the part, 40 lowercase hex digits.
    pub digest: String,
}

/// `<image>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSection {
    /// The bundle name (also the tar member name).
    pub name: String,
    /// The AWS account id, 12 digits.
    pub user: String,
    /// `machine`, `kernel` or `ramdisk`.
    pub image_type: String,
    /// Only for kernel images.
    pub kernel_name: Option<String>,
    /// Ancestor AMI ids (written by `ec2-bundle-vol` only).
    pub ancestry: Vec<String>,
    /// SHA-1 of the tar stream, 40 lowercase hex digits.
    pub digest: String,
    /// Image size in bytes.
    pub size: u64,
    /// Sum of the part sizes (the ciphertext length).
    pub bundled_size: u64,
    /// The AES key (as hex text) encrypted for EC2, hex.
    pub ec2_encrypted_key: String,
    /// The AES key (as hex text) encrypted for the user, hex.
    pub user_encrypted_key: String,
    /// The AES IV (as hex text) encrypted for EC2, hex.
    pub ec2_encrypted_iv: String,
    /// The AES IV (as hex text) encrypted for the user, hex.
    pub user_encrypted_iv: String,
    /// The parts, in index order.
    pub parts: Vec<ManifestPart>,
}

/// A bundle manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The format version (`2007-10-10`).
    pub version: String,
    /// The producing tool.
    pub bundler: BundlerInfo,
    /// Architecture, block devices, kernel, ramdisk, product codes.
    pub machine_configuration: MachineConfiguration,
    /// The image and its parts.
    pub image: ImageSection,
    /// RSA-SHA1 signature over [`Manifest::signed_text`], hex; empty if
    /// not signed yet.
    pub signature: String,
}

/// Escapes text as REXML does.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn element(out: &mut String, name: &str, text: &str) {
    let _ = write!(out, "<{name}>{}</{name}>", escape(text));
}

impl Manifest {
    /// The `<machine_configuration>` element as written (empty when there
    /// is nothing to write).
    fn machine_configuration_xml(&self) -> String {
        let mc = &self.machine_configuration;
        if mc.is_empty() {
            return String::new();
        }
        let mut out = String::from("<machine_configuration>");
        if let Some(arch) = &mc.architecture {
            element(&mut out, "architecture", arch);
        }
        if !mc.block_device_mapping.is_empty() {
            let mut mappings = mc.block_device_mapping.clone();
            mappings.sort_by(|a, b| a.virtual_name.as_bytes().cmp(b.virtual_name.as_bytes()));
            out.push_str("<block_device_mapping>");
            for m in &mappings {
                out.push_str("<mapping>");
                element(&mut out, "virtual", &m.virtual_name);
                element(&mut out, "device", &m.device);
                out.push_str("</mapping>");
            }
            out.push_str("</block_device_mapping>");
        }
        if let Some(kernel) = &mc.kernel_id {
            element(&mut out, "kernel_id", kernel);
        }
        if let Some(ramdisk) = &mc.ramdisk_id {
            element(&mut out, "ramdisk_id", ramdisk);
        }
        if !mc.product_codes.is_empty() {
            out.push_str("<product_codes>");
            for code in &mc.product_codes {
                element(&mut out, "product_code", code);
            }
            out.push_str("</product_codes>");
        }
        out.push_str("</machine_configuration>");
        out
    }

    /// The `<image>` element as written.
    fn image_xml(&self) -> String {
        let i = &self.image;
        let mut out = String::from("<image>");
        element(&mut out, "name", &i.name);
        element(&mut out, "user", &i.user);
        element(&mut out, "type", &i.image_type);
        if let Some(kernel_name) = &i.kernel_name {
            element(&mut out, "kernel_name", kernel_name);
        }
        if !i.ancestry.is_empty() {
            out.push_str("<ancestry>");
            for ami in &i.ancestry {
                element(&mut out, "ancestor_ami_id", ami);
            }
            out.push_str("</ancestry>");
        }
        let _ = write!(
            out,
            "<digest algorithm='SHA1'>{}</digest>",
            escape(&i.digest)
        );
        element(&mut out, "size", &i.size.to_string());
        element(&mut out, "bundled_size", &i.bundled_size.to_string());
        let _ = write!(
            out,
            "<ec2_encrypted_key algorithm='AES-128-CBC'>{}</ec2_encrypted_key>",
            escape(&i.ec2_encrypted_key)
        );
        let _ = write!(
            out,
            "<user_encrypted_key algorithm='AES-128-CBC'>{}</user_encrypted_key>",
            escape(&i.user_encrypted_key)
        );
        element(&mut out, "ec2_encrypted_iv", &i.ec2_encrypted_iv);
        element(&mut out, "user_encrypted_iv", &i.user_encrypted_iv);
        let _ = write!(out, "<parts count='{}'>", i.parts.len());
        for p in &i.parts {
            let _ = write!(out, "<part index='{}'>", p.index);
            element(&mut out, "filename", &p.filename);
            let _ = write!(
                out,
                "<digest algorithm='SHA1'>{}</digest>",
                escape(&p.digest)
            );
            out.push_str("</part>");
        }
        out.push_str("</parts></image>");
        out
    }

    /// The bytes the signature covers: `<machine_configuration>...
    /// </machine_configuration>` immediately followed by `<image>...
    /// </image>`, as [`Manifest::to_xml`] writes them.
    pub fn signed_text(&self) -> String {
        self.machine_configuration_xml() + &self.image_xml()
    }

    /// The manifest file's contents: the exact one-line form of the Ruby
    /// tool (see the module docs), with no trailing newline.
    pub fn to_xml(&self) -> String {
        let mut out = String::from("<?xml version='1.0'?><manifest>");
        element(&mut out, "version", &self.version);
        out.push_str("<bundler>");
        element(&mut out, "name", &self.bundler.name);
        element(&mut out, "version", &self.bundler.version);
        element(&mut out, "release", &self.bundler.release);
        out.push_str("</bundler>");
        out.push_str(&self.signed_text());
        element(&mut out, "signature", &self.signature);
        out.push_str("</manifest>");
        out
    }

    /// Reads a manifest. Quoting, whitespace and unknown elements do not
    /// matter; the elements needed to unbundle must be present.
    ///
    /// # Errors
    ///
    /// [`Error::ManifestSyntax`] if it is not well-formed XML,
    /// [`Error::ManifestInvalid`] if an element is missing or a number or
    /// digest is invalid.
    pub fn parse(text: &str) -> Result<Manifest> {
        let doc = roxmltree::Document::parse(text).map_err(Error::ManifestSyntax)?;
        let root = doc.root_element();
        if root.tag_name().name() != "manifest" {
            return Err(invalid(format!(
                "the root element is <{}>, not <manifest>",
                root.tag_name().name()
            )));
        }
        let bundler = child(root, "bundler");
        let bundler = BundlerInfo {
            name: bundler.and_then(|b| text_of(b, "name")).unwrap_or_default(),
            version: bundler
                .and_then(|b| text_of(b, "version"))
                .unwrap_or_default(),
            release: bundler
                .and_then(|b| text_of(b, "release"))
                .unwrap_or_default(),
        };
        let machine_configuration = match child(root, "machine_configuration") {
            None => MachineConfiguration::default(),
            Some(mc) => MachineConfiguration {
                architecture: text_of(mc, "architecture"),
                block_device_mapping: child(mc, "block_device_mapping")
                    .map(|bdm| {
                        children(bdm, "mapping")
                            .map(|m| Mapping {
                                virtual_name: text_of(m, "virtual").unwrap_or_default(),
                                device: text_of(m, "device").unwrap_or_default(),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                kernel_id: text_of(mc, "kernel_id"),
                ramdisk_id: text_of(mc, "ramdisk_id"),
                product_codes: child(mc, "product_codes")
                    .map(|pc| {
                        children(pc, "product_code")
                            .map(|c| c.text().unwrap_or_default().trim().to_owned())
                            .collect()
                    })
                    .unwrap_or_default(),
            },
        };
        let image = child(root, "image").ok_or_else(|| invalid("no <image> element"))?;
        let required = |name: &str| {
            text_of(image, name).ok_or_else(|| invalid(format!("no <image><{name}> element")))
        };
        let number = |name: &str| -> Result<u64> {
            let text = required(name)?;
            text.parse()
                .map_err(|_| invalid(format!("<image><{name}> {text:?} is not a number")))
        };
        let parts_node = child(image, "parts").ok_or_else(|| invalid("no <image><parts>"))?;
        let mut parts = Vec::new();
        for p in children(parts_node, "part") {
            let index = p
                .attribute("index")
                .and_then(|i| i.trim().parse().ok())
                .ok_or_else(|| invalid("a <part> has no valid index"))?;
            let filename = text_of(p, "filename")
                .ok_or_else(|| invalid(format!("part {index} has no <filename>")))?;
            let digest = text_of(p, "digest")
                .ok_or_else(|| invalid(format!("part {index} has no <digest>")))?;
            parts.push(ManifestPart {
                index,
                filename,
                digest: digest.to_ascii_lowercase(),
            });
        }
        parts.sort_by_key(|p| p.index);
        for (i, p) in parts.iter().enumerate() {
            if p.index != i as u64 {
                return Err(invalid(format!(
                    "the part indices are not 0, 1, 2, ...: part {} is missing or repeated",
                    i
                )));
            }
            if !is_sha1_hex(&p.digest) {
                return Err(invalid(format!(
                    "the digest of part {} is not 40 hex digits",
                    p.index
                )));
            }
        }
        if parts.is_empty() {
            return Err(invalid("the manifest lists no parts"));
        }
        if let Some(count) = parts_node.attribute("count") {
            if count.trim().parse::<usize>().ok() != Some(parts.len()) {
                return Err(invalid(format!(
                    "<parts count='{count}'> but {} parts are listed",
                    parts.len()
                )));
            }
        }
        let digest = required("digest")?;
        if !is_sha1_hex(&digest) {
            return Err(invalid("<image><digest> is not 40 hex digits"));
        }
        let image = ImageSection {
            name: required("name")?,
            user: text_of(image, "user").unwrap_or_default(),
            image_type: text_of(image, "type").unwrap_or_else(|| "machine".to_owned()),
            kernel_name: text_of(image, "kernel_name"),
            ancestry: child(image, "ancestry")
                .map(|a| {
                    children(a, "ancestor_ami_id")
                        .map(|c| c.text().unwrap_or_default().trim().to_owned())
                        .collect()
                })
                .unwrap_or_default(),
            digest,
            size: number("size")?,
            bundled_size: number("bundled_size")?,
            ec2_encrypted_key: text_of(image, "ec2_encrypted_key").unwrap_or_default(),
            user_encrypted_key: required("user_encrypted_key")?,
            ec2_encrypted_iv: text_of(image, "ec2_encrypted_iv").unwrap_or_default(),
            user_encrypted_iv: required("user_encrypted_iv")?,
            parts,
        };
        Ok(Manifest {
            version: text_of(root, "version").unwrap_or_default(),
            bundler,
            machine_configuration,
            image,
            signature: text_of(root, "signature").unwrap_or_default(),
        })
    }
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::ManifestInvalid(msg.into())
}

fn is_sha1_hex(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn children<'a, 'input>(
    node: roxmltree::Node<'a, 'input>,
    name: &'a str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'input>> + 'a {
    node.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == name)
}

fn child<'a, 'input>(
    node: roxmltree::Node<'a, 'input>,
    name: &str,
) -> Option<roxmltree::Node<'a, 'input>> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

/// The trimmed text of the child element `name`.
fn text_of(node: roxmltree::Node<'_, '_>, name: &str) -> Option<String> {
    child(node, name).map(|c| c.text().unwrap_or_default().trim().to_owned())
}

/// The text the signature of a manifest covers, cut out of the manifest
/// exactly as written: from the first `<machine_configuration>` to the first
/// `</machine_configuration>`, then from the first `<image>` to the first
/// `</image>` (notes §10). A manifest with no machine configuration
/// contributes only the image.
///
/// # Errors
///
/// [`Error::ManifestInvalid`] if there is no `<image>` element.
pub fn signed_text(manifest: &str) -> Result<String> {
    let cut = |open: &str, close: &str| -> Option<&str> {
        let start = manifest.find(open)?;
        let end = manifest[start..].find(close)? + start + close.len();
        Some(&manifest[start..end])
    };
    let mc = cut("<machine_configuration>", "</machine_configuration>").unwrap_or("");
    let image = cut("<image>", "</image>").ok_or_else(|| invalid("no <image> element"))?;
    Ok(format!("{mc}{image}"))
}

/// Checks the signature of the manifest text `manifest` with `key`.
///
/// # Errors
///
/// [`Error::BadSignature`] if the signature is missing, not hex, or does
/// not verify; the errors of [`Manifest::parse`] and [`signed_text`].
pub fn verify_signature(manifest: &str, key: &PublicKey) -> Result<()> {
    let parsed = Manifest::parse(manifest)?;
    let signature = hex::decode(&parsed.signature).ok_or(Error::BadSignature)?;
    if signature.is_empty() {
        return Err(Error::BadSignature);
    }
    let data = signed_text(manifest)?;
    if key.verify_sha1(data.as_bytes(), &signature) {
        Ok(())
    } else {
        Err(Error::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            version: MANIFEST_VERSION.to_owned(),
            bundler: BundlerInfo {
                name: "ec2-ami-tools".to_owned(),
                version: "1.5".to_owned(),
                release: "3".to_owned(),
            },
            machine_configuration: MachineConfiguration {
                architecture: Some("x86_64".to_owned()),
                block_device_mapping: vec![
                    Mapping {
                        virtual_name: "root".to_owned(),
                        device: "/dev/sda1".to_owned(),
                    },
                    Mapping {
                        virtual_name: "ami".to_owned(),
                        device: "sda1".to_owned(),
                    },
                ],
                kernel_id: Some("aki-919dcaf8".to_owned()),
                ramdisk_id: None,
                product_codes: vec!["A".to_owned(), "B".to_owned()],
            },
            image: ImageSection {
                name: "a&b'.img".to_owned(),
                user: "123456789012".to_owned(),
                image_type: "machine".to_owned(),
                kernel_name: None,
                ancestry: vec![],
                digest: "15389f68beede4ec1ac9af6f60c42b2ce86d024e".to_owned(),
                size: 20_971_520,
                bundled_size: 87_536,
                ec2_encrypted_key: "aa".to_owned(),
                user_encrypted_key: "bb".to_owned(),
                ec2_encrypted_iv: "cc".to_owned(),
                user_encrypted_iv: "dd".to_owned(),
                parts: vec![ManifestPart {
                    index: 0,
                    filename: "x.part.0".to_owned(),
                    digest: "0123456789abcdef0123456789abcdef01234567".to_owned(),
                }],
            },
            signature: "ee".to_owned(),
        }
    }

    #[test]
    fn writes_the_ruby_form() {
        let xml = sample().to_xml();
        assert_eq!(
            xml,
            "<?xml version='1.0'?><manifest><version>2007-10-10</version><bundler><name>ec2-ami-tools</name>\
             <version>1.5</version><release>3</release></bundler><machine_configuration>\
             <architecture>x86_64</architecture><block_device_mapping><mapping><virtual>ami</virtual>\
             <device>sda1</device></mapping><mapping><virtual>root</virtual><device>/dev/sda1</device>\
             </mapping></block_device_mapping><kernel_id>aki-919dcaf8</kernel_id><product_codes>\
             <product_code>A</product_code><product_code>B</product_code></product_codes>\
             </machine_configuration><image><name>a&amp;b&apos;.img</name><user>123456789012</user>\
             <type>machine</type><digest algorithm='SHA1'>15389f68beede4ec1ac9af6f60c42b2ce86d024e</digest>\
             <size>20971520</size><bundled_size>87536</bundled_size><ec2_encrypted_key algorithm='AES-128-CBC'>aa\
             </ec2_encrypted_key><user_encrypted_key algorithm='AES-128-CBC'>bb</user_encrypted_key>\
             <ec2_encrypted_iv>cc</ec2_encrypted_iv><user_encrypted_iv>dd</user_encrypted_iv>\
             <parts count='1'><part index='0'><filename>x.part.0</filename><digest algorithm='SHA1'>\
             0123456789abcdef0123456789abcdef01234567</digest></part></parts></image>\
             <signature>ee</signature></manifest>"
        );
        let signed = signed_text(&xml).unwrap();
        assert_eq!(signed, sample().signed_text());
        assert!(signed.starts_with("<machine_configuration><architecture>"));
        assert!(signed.ends_with("</parts></image>"));
    }

    #[test]
    fn parse_round_trips() {
        let mut m = sample();
        let parsed = Manifest::parse(&m.to_xml()).unwrap();
        // Mappings come back in written (sorted) order.
        m.machine_configuration.block_device_mapping.sort();
        assert_eq!(parsed, m);
    }

    #[test]
    fn parse_accepts_other_producers_forms() {
        // Double quotes, indentation, declaration with encoding, unknown
        // elements, parts out of order.
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<manifest>
  <version>2007-10-10</version>
  <bundler><name>euca2ools</name><version>3.4</version><release>3.4</release></bundler>
  <machine_configuration><architecture>i386</architecture></machine_configuration>
  <image>
    <name>foreign.img</name><user>123456789012</user><type>machine</type>
    <digest algorithm="SHA1">15389F68BEEDE4EC1AC9AF6F60C42B2CE86D024E</digest>
    <size>1</size><bundled_size>32</bundled_size><extra/>
    <user_encrypted_key algorithm="AES-128-CBC">bb</user_encrypted_key>
    <user_encrypted_iv>dd</user_encrypted_iv>
    <parts count="2">
      <part index="1"><filename>b</filename><digest algorithm="SHA1">0123456789abcdef0123456789abcdef01234567</digest></part>
      <part index="0"><filename>a</filename><digest algorithm="SHA1">0123456789ABCDEF0123456789abcdef01234567</digest></part>
    </parts>
  </image>
  <signature>00</signature>
</manifest>"#;
        let m = Manifest::parse(xml).unwrap();
        assert_eq!(m.image.parts[0].filename, "a");
        assert_eq!(
            m.image.parts[0].digest,
            "0123456789abcdef0123456789abcdef01234567"
        );
        assert_eq!(m.image.parts[1].filename, "b");
        assert_eq!(
            m.machine_configuration.architecture.as_deref(),
            Some("i386")
        );
        assert_eq!(m.image.ec2_encrypted_key, "");
    }

    #[test]
    fn parse_rejects_incomplete_manifests() {
        let good = sample().to_xml();
        let cases = [
            good.replace("<parts count='1'>", "<parts count='2'>"),
            good.replace("<part index='0'>", "<part index='1'>"),
            good.replace("<size>20971520</size>", "<size>big</size>"),
            good.replace("15389f68beede4ec1ac9af6f60c42b2ce86d024e", "1538"),
            good.replace("<user_encrypted_iv>dd</user_encrypted_iv>", ""),
        ];
        for case in cases {
            assert!(
                matches!(Manifest::parse(&case), Err(Error::ManifestInvalid(_))),
                "{case}"
            );
        }
        assert!(matches!(
            Manifest::parse("<manifest>"),
            Err(Error::ManifestSyntax(_))
        ));
    }

    #[test]
    fn empty_machine_configuration_is_left_out() {
        let mut m = sample();
        m.machine_configuration = MachineConfiguration::default();
        let xml = m.to_xml();
        assert!(!xml.contains("machine_configuration"));
        assert!(signed_text(&xml).unwrap().starts_with("<image>"));
    }
}
