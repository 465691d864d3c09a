//! A backtest's output: `entries.ndjson` and `sends.ndjson`, written as the engine decides,
//! sorted with bounded memory ([`SortedFile`]), with the counts for the summary. `moments
//! backtest` writes them on a thread of their own, beside the engines
//! ([`crate::lanes::run_beside`]).

use std::io;
use std::path::Path;

use crate::engine::Sink;
use crate::outcome::{count_entry, Entry, Send, Summary};
use crate::sorted_file::{Key, SortedFile, DEFAULT_BUDGET};

/// The files of one backtest being written.
pub struct BacktestFiles {
    entries: SortedFile,
    sends: SortedFile,
    summary: Summary,
    /// The first write error; later lines are not written.
    error: Option<io::Error>,
}

/// What a finished backtest wrote.
#[derive(Debug)]
pub struct Written {
    pub entries: u64,
    pub sends: u64,
    pub summary: Summary,
}

impl BacktestFiles {
    /// Files in `dir` (which must exist), holding up to `budget` bytes of each in memory.
    pub fn new(dir: &Path, budget: Option<usize>) -> BacktestFiles {
        let budget = budget.unwrap_or(DEFAULT_BUDGET);
        BacktestFiles {
            entries: SortedFile::new(&dir.join("entries.ndjson"), budget),
            sends: SortedFile::new(&dir.join("sends.ndjson"), budget),
            summary: Summary::new(),
            error: None,
        }
    }

    /// Write the files out.
    pub fn finish(self) -> io::Result<Written> {
        if let Some(e) = self.error {
            return Err(e);
        }
        Ok(Written {
            entries: self.entries.finish()?,
            sends: self.sends.finish()?,
            summary: self.summary,
        })
    }
}

impl Sink for BacktestFiles {
    fn entry(&mut self, entry: Entry) {
        count_entry(&mut self.summary, &entry);
        if self.error.is_none() {
            // The order of `engine::entry_order`.
            let key = Key::new()
                .text(&entry.moment)
                .text(&entry.customer_id)
                .instant(entry.trigger_at)
                .opt_text(entry.send_id.as_deref());
            self.error = self.entries.push_json(&key, &entry).err();
        }
    }

    fn send(&mut self, send: Send) {
        if self.error.is_none() {
            // The order of `engine::send_order`.
            let key = Key::new().instant(send.sent_at).text(&send.send_id);
            self.error = self.sends.push_json(&key, &send).err();
        }
    }
}
