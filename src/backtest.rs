//! A backtest's output: `entries.ndjson` and `sends.ndjson`, written as the engine decides,
//! sorted with bounded memory ([`SortedFile`]), with the counts for the summary. `moments
//! backtest` writes them on a thread of their own, beside the engines
//! ([`crate::lanes::run_beside`]).

use std::io;
use std::path::Path;

use crate::engine::Sink;
use crate::fx::FxMap;
use crate::model::Model;
use crate::outcome::{count_entry, Entry, Send, Summary};
use crate::sorted_file::{Key, SortedFile, DEFAULT_BUDGET};

/// The files of one backtest being written.
pub struct BacktestFiles {
    /// Each moment id's place among the campaigns' ids, in order: an entry's sort key
    /// starts with it rather than with the id, so that the sort tells most keys apart by
    /// their first bytes (see `SortedFile`).
    ranks: FxMap<String, u16>,
    entries: SortedFile,
    sends: SortedFile,
    summary: Summary,
    /// Room for the next line's sort key.
    key: Key,
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
    /// Files in `dir` (which must exist) for the entries and sends of `model`'s moments,
    /// holding up to `budget` bytes of each in memory.
    pub fn new(dir: &Path, model: &Model, budget: Option<usize>) -> BacktestFiles {
        let budget = budget.unwrap_or(DEFAULT_BUDGET);
        // `Model::moments` is sorted by id, so a moment's index is its rank. INVARIANT: ranks
        // below `u16::MAX` only; a moment past them, or not among the campaigns, sorts by
        // its id after them (see `Sink::entry`).
        let ranks = model
            .moments
            .iter()
            .zip(0..u16::MAX)
            .map(|(m, rank)| (m.id.clone(), rank))
            .collect();
        BacktestFiles {
            ranks,
            entries: SortedFile::new(&dir.join("entries.ndjson"), budget),
            sends: SortedFile::new(&dir.join("sends.ndjson"), budget),
            summary: Summary::new(),
            key: Key::new(),
            error: None,
        }
    }

    /// Write the files out: both at once, on two threads when a second one can be had
    /// (each merges its own runs).
    pub fn finish(self) -> io::Result<Written> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let BacktestFiles {
            entries,
            sends,
            summary,
            ..
        } = self;
        // The sends on a thread of their own; here when one cannot be had.
        let mut sends = Some(sends);
        let mut sends_written = None;
        let entries_written = std::thread::scope(|scope| {
            let sends_thread = std::thread::Builder::new()
                .name("moments-sends".to_string())
                .spawn_scoped(scope, || sends.take().map(SortedFile::finish));
            let entries_written = entries.finish();
            if let Ok(thread) = sends_thread {
                sends_written = thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            }
            entries_written
        });
        let sends_written = match sends.take() {
            Some(file) => file.finish(),
            None => sends_written
                .unwrap_or_else(|| Err(io::Error::other("the sends file was not finished"))),
        };
        Ok(Written {
            entries: entries_written?,
            sends: sends_written?,
            summary,
        })
    }
}

impl Sink for BacktestFiles {
    fn entry(&mut self, entry: Entry) {
        count_entry(&mut self.summary, &entry);
        if self.error.is_none() {
            // The order of `engine::entry_order`: the moment's rank is in the order of the
            // ids.
            let key = std::mem::take(&mut self.key).reuse();
            let key = match self.ranks.get(&*entry.moment) {
                Some(&rank) => key.rank(rank),
                None => key.rank(u16::MAX).text(&entry.moment),
            };
            let key = key
                .text(&entry.customer_id)
                .instant(entry.trigger_at)
                .opt_text(entry.send_id.as_deref());
            self.error = self
                .entries
                .push_with(&key, |line| entry.write_json(line))
                .err();
            self.key = key;
        }
    }

    fn send(&mut self, send: Send) {
        if self.error.is_none() {
            // The order of `engine::send_order`.
            let key = std::mem::take(&mut self.key)
                .reuse()
                .instant(send.sent_at)
                .text(&send.send_id);
            self.error = self
                .sends
                .push_with(&key, |line| send.write_json(line))
                .err();
            self.key = key;
        }
    }
}
