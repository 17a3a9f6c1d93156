//! Progress reporting chosen by the caller.
//!
//! Libraries never print: long-running operations take a `&dyn Progress`
//! and report stages and amounts through it. The CLI turns these calls into
//! progress bars; [`NoProgress`] ignores them.

/// A stage of work that reports progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Stage {
    /// Reading a host directory into a tree (amount: entries).
    Scan,
    /// Planning a filesystem layout (amount: inodes).
    Plan,
    /// Copying file contents into an image (amount: bytes).
    WriteData,
    /// Writing filesystem metadata (amount: bytes).
    WriteMetadata,
    /// Fetching and verifying repository indices (amount: files).
    Update,
    /// Downloading packages (amount: bytes).
    Download,
    /// Uploading to a cloud service: bundle parts to S3, blocks to an EBS
    /// snapshot (amount: bytes).
    Upload,
}

impl Stage {
    /// A short human-readable name.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Scan => "scan",
            Stage::Plan => "plan",
            Stage::WriteData => "write data",
            Stage::WriteMetadata => "write metadata",
            Stage::Update => "update",
            Stage::Download => "download",
            Stage::Upload => "upload",
        }
    }
}

/// Receives progress reports. All methods have empty defaults.
pub trait Progress: Sync {
    /// A stage starts; `total` is the expected amount if known.
    fn begin(&self, stage: Stage, total: Option<u64>) {
        let _ = (stage, total);
    }
    /// `amount` more units of `stage` are done.
    fn advance(&self, stage: Stage, amount: u64) {
        let _ = (stage, amount);
    }
    /// A stage is finished.
    fn end(&self, stage: Stage) {
        let _ = stage;
    }
}

/// A [`Progress`] that ignores every report.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
