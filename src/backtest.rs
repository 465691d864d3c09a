//! A backtest's output: `entries.ndjson` and `sends.ndjson`, written as the engine decides,
//! sorted with bounded memory ([`SortedFile`]), with the counts for the summary. The files
//! are written on a thread of their own ([`BacktestWriter`]), beside the engine.

use std::io;
use std::path::Path;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

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

/// Entries and sends handed to the writing thread at once, at most, and batches it may
/// have waiting.
const BATCH: usize = 4096;
const BATCHES_AHEAD: usize = 4;

#[derive(Default)]
struct Batch {
    entries: Vec<Entry>,
    sends: Vec<Send>,
}

impl Batch {
    fn len(&self) -> usize {
        self.entries.len() + self.sends.len()
    }
}

/// [`BacktestFiles`] written on a thread of their own: serialising and sorting the output
/// runs beside the engine instead of after each decision. The files are the same, byte
/// for byte, as entries and sends reach each file in the order they were decided.
pub struct BacktestWriter {
    batch: Batch,
    to: To,
}

enum To {
    Thread {
        batches: SyncSender<Batch>,
        thread: JoinHandle<io::Result<Written>>,
    },
    /// No thread could be had: written here.
    Here(Box<BacktestFiles>),
}

impl BacktestWriter {
    /// As [`BacktestFiles::new`].
    pub fn new(dir: &Path, budget: Option<usize>) -> BacktestWriter {
        let (batches, received) = sync_channel::<Batch>(BATCHES_AHEAD);
        let thread_dir = dir.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("moments-output".to_string())
            .spawn(move || {
                let mut files = BacktestFiles::new(&thread_dir, budget);
                for batch in received {
                    for entry in batch.entries {
                        files.entry(entry);
                    }
                    for send in batch.sends {
                        files.send(send);
                    }
                }
                files.finish()
            });
        let to = match thread {
            Ok(thread) => To::Thread { batches, thread },
            Err(_) => To::Here(Box::new(BacktestFiles::new(dir, budget))),
        };
        BacktestWriter {
            batch: Batch::default(),
            to,
        }
    }

    fn hand_over(&mut self) {
        if let To::Thread { batches, .. } = &self.to {
            // A send fails only when the thread has ended, which `finish` reports.
            let _ = batches.send(std::mem::take(&mut self.batch));
        }
    }

    /// Write the files out.
    pub fn finish(mut self) -> io::Result<Written> {
        self.hand_over();
        match self.to {
            To::Here(files) => files.finish(),
            To::Thread { batches, thread } => {
                drop(batches);
                thread
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("writing the backtest files failed")))
            }
        }
    }
}

impl Sink for BacktestWriter {
    fn entry(&mut self, entry: Entry) {
        match &mut self.to {
            To::Here(files) => files.entry(entry),
            To::Thread { .. } => {
                self.batch.entries.push(entry);
                if self.batch.len() >= BATCH {
                    self.hand_over();
                }
            }
        }
    }

    fn send(&mut self, send: Send) {
        match &mut self.to {
            To::Here(files) => files.send(send),
            To::Thread { .. } => {
                self.batch.sends.push(send);
                if self.batch.len() >= BATCH {
                    self.hand_over();
                }
            }
        }
    }
}
