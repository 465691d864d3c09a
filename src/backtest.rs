//! A backtest's output: `entries.ndjson` and `sends.ndjson`, written as the engine decides,
//! sorted with bounded memory ([`SortedFile`]), with the counts for the summary. The files
//! are written on a thread of their own ([`BacktestWriter`]), beside the engine.

use std::io;
use std::marker::PhantomData;
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
/// have waiting, from all lanes together.
const BATCH: usize = 4096;
const BATCHES_AHEAD: usize = 4;

#[derive(Default)]
struct Batch {
    entries: Vec<Entry>,
    sends: Vec<Send>,
}

/// [`BacktestFiles`] written on a thread of their own, so that serialising and sorting the
/// output runs beside the engine. Engines hand it entries and sends through [`Lane`]s.
pub struct BacktestWriter {
    batches: SyncSender<Batch>,
    thread: JoinHandle<io::Result<Written>>,
}

/// One engine's way into a [`BacktestWriter`]: a [`Sink`] that hands over batches. A
/// lane's lines reach each file in the order it was given them; lines with equal keys come
/// from one customer, so from one lane, and the files do not depend on how many lanes
/// there are.
pub struct Lane<'w> {
    batch: Batch,
    batches: SyncSender<Batch>,
    writer: PhantomData<&'w BacktestWriter>,
}

impl BacktestWriter {
    /// As [`BacktestFiles::new`]; an error when the thread cannot be started.
    pub fn new(dir: &Path, budget: Option<usize>) -> io::Result<BacktestWriter> {
        // The lanes share the channel; a lane waits when the writer is behind.
        let (batches, received) = sync_channel::<Batch>(BATCHES_AHEAD);
        let dir = dir.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("moments-output".to_string())
            .spawn(move || {
                let mut files = BacktestFiles::new(&dir, budget);
                for batch in received {
                    for entry in batch.entries {
                        files.entry(entry);
                    }
                    for send in batch.sends {
                        files.send(send);
                    }
                }
                files.finish()
            })?;
        Ok(BacktestWriter { batches, thread })
    }

    /// A new lane into the files.
    pub fn lane(&self) -> Lane<'_> {
        Lane {
            batch: Batch::default(),
            batches: self.batches.clone(),
            writer: PhantomData,
        }
    }

    /// Write the files out, once every lane is dropped.
    pub fn finish(self) -> io::Result<Written> {
        drop(self.batches);
        self.thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("writing the backtest files failed")))
    }
}

impl Lane<'_> {
    fn hand_over(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        if !batch.entries.is_empty() || !batch.sends.is_empty() {
            // A send fails only when the writing thread has ended, which `finish` reports.
            let _ = self.batches.send(batch);
        }
    }

    fn full(&self) -> bool {
        self.batch.entries.len() + self.batch.sends.len() >= BATCH
    }
}

impl Sink for Lane<'_> {
    fn entry(&mut self, entry: Entry) {
        self.batch.entries.push(entry);
        if self.full() {
            self.hand_over();
        }
    }

    fn send(&mut self, send: Send) {
        self.batch.sends.push(send);
        if self.full() {
            self.hand_over();
        }
    }
}

impl Drop for Lane<'_> {
    /// What is left goes to the writer.
    fn drop(&mut self) {
        self.hand_over();
    }
}
