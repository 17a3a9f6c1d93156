//! Progress bars on stderr for the library's [`Progress`] reports.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use ami_core::progress::{Progress, Stage};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Shows one bar per running stage on stderr. indicatif hides them when
/// stderr is not a terminal, so logs and pipes stay clean.
pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<Stage, ProgressBar>>,
}

impl Bars {
    /// Bars drawn on stderr (hidden when `quiet` or when stderr is not a
    /// terminal).
    pub fn stderr(quiet: bool) -> Self {
        let target = if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        Bars {
            multi: MultiProgress::with_draw_target(target),
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn style(stage: Stage, total: Option<u64>) -> ProgressStyle {
        let bytes = matches!(
            stage,
            Stage::WriteData | Stage::WriteMetadata | Stage::Download | Stage::Upload
        );
        let template = match (total.is_some(), bytes) {
            (true, true) => {
                "{prefix:>14} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}"
            }
            (true, false) => "{prefix:>14} [{bar:30}] {human_pos}/{human_len} {per_sec}",
            (false, true) => "{prefix:>14} {spinner} {bytes} {binary_bytes_per_sec}",
            (false, false) => "{prefix:>14} {spinner} {human_pos} entries {per_sec}",
        };
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ")
    }

    fn with_bars<R>(&self, f: impl FnOnce(&mut HashMap<Stage, ProgressBar>) -> R) -> R {
        // A poisoned lock only means another thread panicked while drawing;
        // the map itself is still usable.
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut bars)
    }
}

impl Progress for Bars {
    fn begin(&self, stage: Stage, total: Option<u64>) {
        let bar = match total {
            Some(total) => ProgressBar::new(total),
            None => ProgressBar::new_spinner(),
        };
        let bar = self.multi.add(bar);
        bar.set_style(Self::style(stage, total));
        bar.set_prefix(stage.name());
        if total.is_none() {
            bar.enable_steady_tick(Duration::from_millis(200));
        }
        if let Some(old) = self.with_bars(|bars| bars.insert(stage, bar)) {
            old.finish_and_clear();
        }
    }

    fn advance(&self, stage: Stage, amount: u64) {
        self.with_bars(|bars| {
            if let Some(bar) = bars.get(&stage) {
                bar.inc(amount);
            }
        });
    }

    fn end(&self, stage: Stage) {
        // Bars are transient: the command prints a summary when done.
        if let Some(bar) = self.with_bars(|bars| bars.remove(&stage)) {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        // Bars of stages that never ended (after an error) are cleared too,
        // so the error message starts on a clean line.
        self.with_bars(|bars| {
            for (_, bar) in bars.drain() {
                bar.finish_and_clear();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_are_tracked_independently() {
        let bars = Bars::stderr(true);
        bars.begin(Stage::Scan, None);
        bars.begin(Stage::WriteData, Some(100));
        bars.advance(Stage::Scan, 3);
        bars.advance(Stage::WriteData, 40);
        bars.advance(Stage::WriteData, 2);
        // Reports for a stage that is not running are ignored.
        bars.advance(Stage::Plan, 5);
        bars.with_bars(|b| {
            assert_eq!(b[&Stage::Scan].position(), 3);
            assert_eq!(b[&Stage::WriteData].position(), 42);
            assert_eq!(b[&Stage::WriteData].length(), Some(100));
            assert!(!b.contains_key(&Stage::Plan));
        });
        bars.end(Stage::Scan);
        bars.with_bars(|b| assert!(!b.contains_key(&Stage::Scan)));
    }
}
