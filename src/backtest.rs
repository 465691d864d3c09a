//! A backtest's output: `entries.ndjson` and `sends.ndjson`, sorted with bounded memory
//! ([`SortedFile`]), with the counts for the summary. Each engine writes its own part of
//! both files as it decides, on its own thread ([`run`]), and the parts are merged at the
//! end: what the engines decide never crosses to another thread.

use std::borrow::Cow;
use std::io;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::engine::{self, Sink};
use crate::fx::FxMap;
use crate::model::Model;
use crate::outcome::{count_entry, Entry, Fate, Send, Summary};
use crate::outcome::{write_entry_head, write_entry_tail};
use crate::sorted_file::{at_once, Key, KeyReader, Restore, SortedFile, DEFAULT_BUDGET};
use crate::value::Record;

/// Backtests `model` over `records` up to `to`, reporting the entries triggered from
/// `from` on, with `engines` engines side by side, into the files in `dir` (which must
/// exist); each engine holds up to `budget` bytes of each file in memory (16 MiB when
/// `None`). Returns what was written and the number of evaluations that ran out of fuel.
pub fn run(
    model: &Model,
    records: impl Iterator<Item = Record>,
    (from, to): (Option<DateTime<Utc>>, DateTime<Utc>),
    engines: usize,
    dir: &Path,
    budget: Option<usize>,
) -> io::Result<(Written, u64)> {
    let mut parts: Vec<BacktestFiles> = (0..engines.max(1))
        .map(|part| BacktestFiles::part(dir, model, part, budget))
        .collect();
    let sinks = parts
        .iter_mut()
        .map(|part| part as &mut (dyn Sink + std::marker::Send))
        .collect();
    let out_of_fuel = engine::run_partitioned(model, records, from, to, sinks)?;
    Ok((BacktestFiles::finish_all(parts)?, out_of_fuel))
}

/// The fates an entry can have, and pending.
const FATES: usize = Fate::ALL.len() + 1;

/// One engine's part of the files of a backtest being written.
pub struct BacktestFiles {
    /// Each moment id's place among the campaigns' ids, in order: an entry's sort key
    /// starts with it rather than with the id, so that the sort tells most keys apart by
    /// their first bytes (see `SortedFile`).
    ranks: FxMap<String, u16>,
    entries: SortedFile,
    sends: SortedFile,
    /// The entries of each moment (by rank) by fate (by place in `Fate::ALL`, then
    /// pending): counted without looking texts up per entry.
    counts: Vec<(String, [u64; FATES])>,
    /// The entries of moments without a rank.
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
    /// Part `part` of the files in `dir` (which must exist) for the entries and sends of
    /// `model`'s moments, for one engine, holding up to `budget` bytes of each in memory:
    /// see [`BacktestFiles::finish_all`].
    pub fn part(dir: &Path, model: &Model, part: usize, budget: Option<usize>) -> BacktestFiles {
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
        let counts = model
            .moments
            .iter()
            .take(u16::MAX as usize)
            .map(|m| (m.id.clone(), [0; FATES]))
            .collect();
        BacktestFiles {
            ranks,
            entries: SortedFile::part(&dir.join("entries.ndjson"), part, budget)
                .restoring(Arc::new(EntryLines::new(model))),
            sends: SortedFile::part(&dir.join("sends.ndjson"), part, budget),
            counts,
            summary: Summary::new(),
            key: Key::new(),
            error: None,
        }
    }

    /// Write out the files of which `parts` are the parts, merged: both files at once, on
    /// two threads when a second one can be had.
    ///
    /// INVARIANT: lines with equal sort keys come from one part. An entry's key holds its
    /// customer, and a send's its send id, which holds the customer; an engine decides for
    /// whole customers. So the files do not depend on how the customers were split.
    pub fn finish_all(parts: Vec<BacktestFiles>) -> io::Result<Written> {
        let mut summary = Summary::new();
        let mut entries = Vec::with_capacity(parts.len());
        let mut sends = Vec::with_capacity(parts.len());
        for part in parts {
            if let Some(e) = part.error {
                return Err(e);
            }
            let counted = part.counts.into_iter().flat_map(|(moment, counts)| {
                let fates = Fate::ALL.iter().map(|f| f.as_str()).chain(["pending"]);
                fates
                    .zip(counts)
                    .filter(|(_, n)| *n > 0)
                    .map(move |(fate, n)| (moment.clone(), fate.to_string(), n))
            });
            let others = part.summary.into_iter().flat_map(|(moment, fates)| {
                fates
                    .into_iter()
                    .map(move |(fate, n)| (moment.clone(), fate, n))
            });
            for (moment, fate, n) in counted.chain(others) {
                *summary.entry(moment).or_default().entry(fate).or_default() += n;
            }
            entries.push(part.entries);
            sends.push(part.sends);
        }
        // The sends on a thread of their own.
        let (entries_written, sends_written) = at_once(
            "moments-sends",
            || SortedFile::finish_all(entries),
            || SortedFile::finish_all(sends),
        )?;
        Ok(Written {
            entries: entries_written,
            sends: sends_written,
            summary,
        })
    }
}

impl Sink for BacktestFiles {
    fn entry(&mut self, entry: Entry) {
        let rank = self.ranks.get(&*entry.moment).copied();
        let fate = entry
            .fate
            .and_then(|f| Fate::ALL.iter().position(|a| *a == f))
            .unwrap_or(FATES - 1);
        match rank.and_then(|r| self.counts.get_mut(usize::from(r))) {
            Some((_, counts)) => counts[fate] += 1,
            None => count_entry(&mut self.summary, &entry),
        }
        if self.error.is_none() {
            // The order of `engine::entry_order`: the moment's rank is in the order of the
            // ids.
            let key = std::mem::take(&mut self.key).reuse();
            let key = match rank {
                Some(rank) => key.rank(rank),
                None => key.rank(u16::MAX).text(&entry.moment),
            };
            let key = key
                .text(&entry.customer_id)
                .instant(entry.trigger_at)
                .opt_text(entry.send_id.as_deref());
            self.error = self
                .entries
                .push_stripped(&key, |line| entry.write_json_split(line))
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

/// Entries as their runs keep them: without their moment, customer, trigger instant and
/// send id, which their sort keys hold (see `Sink::entry`), written back when the files are
/// merged. The runs are a third smaller, and so are the reads and writes of the merge.
struct EntryLines {
    /// The moments' ids by rank.
    moments: Vec<String>,
}

impl EntryLines {
    fn new(model: &Model) -> EntryLines {
        let moments = model.moments.iter().take(u16::MAX as usize);
        EntryLines {
            moments: moments.map(|m| m.id.clone()).collect(),
        }
    }
}

impl Restore for EntryLines {
    fn restore(&self, key: &[u8], kept: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let mut key = KeyReader::new(key);
        let mut fields = || {
            let moment = match key.rank()? {
                u16::MAX => key.text()?,
                rank => Cow::Borrowed(self.moments.get(usize::from(rank))?.as_str()),
            };
            Some((moment, key.text()?, key.instant()?, key.opt_text()?))
        };
        let (moment, customer_id, trigger_at, send_id) =
            fields().ok_or_else(|| io::Error::other("an entry's sort key does not read back"))?;
        write_entry_head(out, &moment, &customer_id, trigger_at);
        out.extend_from_slice(kept);
        write_entry_tail(out, send_id.as_deref());
        Ok(())
    }
}
