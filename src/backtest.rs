//! A backtest's output: `entries.ndjson` and `sends.ndjson`, written as the engines decide,
//! with the counts for the summary.
//!
//! Each engine writes the lines of what it decides into a [`BacktestPart`], on its own
//! thread, and hands them over in batches with a mark of how far it has come. One more
//! thread merges the engines' lines in decision order and writes the files as it goes
//! ([`write_files`]): nothing is sorted at the end, and memory holds only the lines the
//! engines have not all passed yet.
//!
//! The files' order:
//! - `entries.ndjson`: the order of decisions: by instant, then priority (higher first),
//!   moment id and customer id (`docs/language.md`, "what running means"), a customer's
//!   entries of one moment at one instant in the order they were triggered; then the entries
//!   left pending, by the instant they are due to be decided, then customer id.
//! - `sends.ndjson`: by `sent_at`, then send id.
//!
//! INVARIANT: lines that compare equal come from one engine, which hands them over in
//! order: an entry's order holds its customer, a send's its send id, and an engine decides
//! for whole customers. So the files do not depend on how the customers were split.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::path::Path;
use std::sync::mpsc::{channel, Receiver, Sender};

use chrono::{DateTime, Utc};

use crate::direct_io::BlockWriter;
use crate::engine::{self, Sink};
use crate::model::Model;
use crate::outcome::{count_entry, EntryView, Fate, SendView, Summary};
use crate::value::Record;

/// Backtests `model` over `records` up to `to`, reporting the entries triggered from
/// `from` on, with `engines` engines side by side, into the files in `dir` (which must
/// exist). Returns what was written and the number of evaluations that ran out of fuel.
pub fn run(
    model: &Model,
    records: impl Iterator<Item = Record>,
    (from, to): (Option<DateTime<Utc>>, DateTime<Utc>),
    engines: usize,
    dir: &Path,
) -> io::Result<(Written, u64)> {
    let engines = engines.max(1);
    // Before any work: a directory that cannot be written to is known at once.
    let create = |name: &str| {
        let path = dir.join(name);
        BlockWriter::create(&path, WRITE_BUFFER)
            .map_err(|e| io::Error::new(e.kind(), format!("`{}`: {e}", path.display())))
    };
    // The last run's files are moved aside first and removed beside this run.
    let old: Vec<_> = ["entries.ndjson", "sends.ndjson"]
        .iter()
        .filter_map(|name| crate::direct_io::set_aside(&dir.join(name)))
        .collect();
    let files = (create("entries.ndjson")?, create("sends.ndjson")?);
    let (batches, received) = channel();
    // Each part's spent batches, back from the writer to be filled again.
    let (spent, spare): (Vec<_>, Vec<_>) = (0..engines).map(|_| channel()).unzip();
    std::thread::scope(|scope| {
        if !old.is_empty() {
            // Best effort: a file left behind is replaced by the next run's.
            let _ = std::thread::Builder::new()
                .name("moments-clear".to_string())
                .spawn_scoped(scope, || {
                    old.iter().for_each(|f| drop(std::fs::remove_file(f)))
                });
        }
        let writer = std::thread::Builder::new()
            .name("moments-write".to_string())
            .spawn_scoped(scope, || write_files(files, engines, received, spent))?;
        let mut parts: Vec<BacktestPart> = spare
            .into_iter()
            .enumerate()
            .map(|(part, spare)| BacktestPart::new(model, part, batches.clone(), spare))
            .collect();
        drop(batches);
        let sinks = parts
            .iter_mut()
            .map(|part| part as &mut (dyn Sink + std::marker::Send))
            .collect();
        let ran = engine::run_partitioned(model, records, from, to, sinks);
        let mut summary = Summary::new();
        for part in parts {
            part.finish(&mut summary);
        }
        let (entries, sends) = match writer.join() {
            Ok(written) => written?,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        Ok((
            Written {
                entries,
                sends,
                summary,
            },
            ran?,
        ))
    })
}

/// What a finished backtest wrote.
#[derive(Debug)]
pub struct Written {
    pub entries: u64,
    pub sends: u64,
    pub summary: Summary,
}

/// The fates an entry can have, and pending.
const FATES: usize = Fate::ALL.len() + 1;

/// A part hands its lines over once it holds this many bytes or lines, or once the engine
/// has moved on this many times without handing any over.
const BATCH_BYTES: usize = 1 << 20;
const BATCH_LINES: usize = 8192;
const BATCH_MOVES: u32 = 4096;

/// The buffer of each file's writer.
const WRITE_BUFFER: usize = 4 << 20;

/// How far an engine has come: every line it hands over from here on is at this place or
/// after it (see [`Line`]).
type Mark = (Phase, DateTime<Utc>);

/// Decided entries and sends, then the entries left pending, then nothing more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Decided,
    Pending,
    Done,
}

/// One line of a file, in its part's bytes: its sort key, then the line and its newline.
#[derive(Debug, Clone, Copy)]
struct Line {
    phase: Phase,
    /// When the entry was decided (or is due to be, when pending), or the send sent.
    at: DateTime<Utc>,
    /// An entry's moment by decision order; 0 for a send.
    rank: u16,
    start: usize,
    /// Where the key (the customer id, or the send id) ends and the line starts.
    key_end: usize,
    end: usize,
}

impl Line {
    fn place(&self) -> Mark {
        (self.phase, self.at)
    }
}

/// Lines of one file handed over at once.
#[derive(Debug, Default)]
struct Lines {
    bytes: Vec<u8>,
    lines: Vec<Line>,
}

impl Lines {
    /// Room for a batch: its bytes are written once, not copied again as they grow.
    fn with_room() -> Lines {
        Lines {
            bytes: Vec::with_capacity(BATCH_BYTES + (64 << 10)),
            lines: Vec::with_capacity(BATCH_LINES),
        }
    }

    fn push(&mut self, place: Mark, rank: u16, key: &str, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(key.as_bytes());
        let key_end = self.bytes.len();
        write(&mut self.bytes);
        self.bytes.push(b'\n');
        debug_assert!(
            self.lines.last().is_none_or(|l| l.place() <= place),
            "lines handed over out of order"
        );
        self.lines.push(Line {
            phase: place.0,
            at: place.1,
            rank,
            start,
            key_end,
            end: self.bytes.len(),
        });
    }

    fn key(&self, line: &Line) -> (u16, &[u8]) {
        (line.rank, &self.bytes[line.start..line.key_end])
    }

    fn text(&self, line: &Line) -> &[u8] {
        &self.bytes[line.key_end..line.end]
    }
}

/// What a part hands over: its lines since the last batch, and how far it has come.
struct Batch {
    part: usize,
    entries: Lines,
    sends: Lines,
    mark: Mark,
}

/// One engine's way to the files: formats each line as the engine decides, counts the
/// entries for the summary, and hands batches to the writer.
pub struct BacktestPart {
    part: usize,
    /// Each moment's place in decision order (priority, higher first, then id), by its
    /// place in `Model::moments`.
    ranks: Vec<u16>,
    /// The entries of each moment by fate (by place in `Fate::ALL`, then pending), by its
    /// place in `Model::moments`: counted without looking texts up per entry.
    counts: Vec<(String, [u64; FATES])>,
    /// The entries of moments that are not among the campaigns.
    summary: Summary,
    mark: Mark,
    entries: Lines,
    sends: Lines,
    /// Times the engine moved on since the last batch.
    moves: u32,
    batches: Sender<Batch>,
    /// Batches the writer is done with, emptied: filled again rather than allocated, as
    /// memory taken anew costs the kernel a page cleared for every 4 KiB written.
    spare: Receiver<Lines>,
}

impl BacktestPart {
    fn new(
        model: &Model,
        part: usize,
        batches: Sender<Batch>,
        spare: Receiver<Lines>,
    ) -> BacktestPart {
        // The engine's order of decisions at one instant: priority, then the moment's index
        // (`Model::moments` is sorted by id). INVARIANT: ranks below `u16::MAX` only; the
        // moments past them share the last one, and are told apart by customer.
        let mut by_priority: Vec<usize> = (0..model.moments.len()).collect();
        by_priority.sort_by_key(|&i| std::cmp::Reverse(model.moments[i].priority));
        let mut ranks = vec![u16::MAX; model.moments.len()];
        for (rank, &i) in by_priority.iter().enumerate() {
            ranks[i] = u16::try_from(rank).unwrap_or(u16::MAX);
        }
        let counts = model
            .moments
            .iter()
            .map(|m| (m.id.clone(), [0; FATES]))
            .collect();
        BacktestPart {
            part,
            ranks,
            counts,
            summary: Summary::new(),
            mark: (Phase::Decided, DateTime::<Utc>::MIN_UTC),
            entries: Lines::with_room(),
            sends: Lines::with_room(),
            moves: 0,
            batches,
            spare,
        }
    }

    /// An empty batch to fill: a spent one when the writer has one back.
    fn room(&self) -> Lines {
        self.spare.try_recv().unwrap_or_else(|_| Lines::with_room())
    }

    fn hand_over(&mut self) {
        let (entries, sends) = (self.room(), self.room());
        let batch = Batch {
            part: self.part,
            entries: std::mem::replace(&mut self.entries, entries),
            sends: std::mem::replace(&mut self.sends, sends),
            mark: self.mark,
        };
        self.moves = 0;
        // A send fails only when the writer has stopped, on an error it reports.
        let _ = self.batches.send(batch);
    }

    fn hand_over_when_full(&mut self) {
        let bytes = self.entries.bytes.len() + self.sends.bytes.len();
        let lines = self.entries.lines.len() + self.sends.lines.len();
        if bytes >= BATCH_BYTES || lines >= BATCH_LINES {
            self.hand_over();
        }
    }

    /// Hand over the last lines and the part's end.
    fn end(&mut self) {
        self.mark = (Phase::Done, DateTime::<Utc>::MAX_UTC);
        self.hand_over();
    }

    /// [`BacktestPart::end`] (again, when its engine ended it), and add its counts to
    /// `summary`.
    fn finish(mut self, summary: &mut Summary) {
        self.end();
        let counted = self.counts.into_iter().flat_map(|(moment, counts)| {
            let fates = Fate::ALL.iter().map(|f| f.as_str()).chain(["pending"]);
            fates
                .zip(counts)
                .filter(|(_, n)| *n > 0)
                .map(move |(fate, n)| (moment.clone(), fate.to_string(), n))
        });
        let others = self.summary.into_iter().flat_map(|(moment, fates)| {
            fates
                .into_iter()
                .map(move |(fate, n)| (moment.clone(), fate, n))
        });
        for (moment, fate, n) in counted.chain(others) {
            *summary.entry(moment).or_default().entry(fate).or_default() += n;
        }
    }
}

impl Sink for BacktestPart {
    fn entry(&mut self, entry: EntryView<'_>) {
        let fate = entry
            .fate
            .and_then(|f| Fate::ALL.iter().position(|a| *a == f))
            .unwrap_or(FATES - 1);
        // The moment at its place among the campaigns, or one that is not.
        let known = self
            .counts
            .get_mut(entry.index)
            .filter(|(id, _)| **id == **entry.moment);
        let rank = match known {
            Some((_, counts)) => {
                counts[fate] += 1;
                self.ranks.get(entry.index).copied().unwrap_or(u16::MAX)
            }
            None => {
                count_entry(&mut self.summary, &entry);
                u16::MAX
            }
        };
        // Pending entries are in order of due instant, then customer.
        let rank = if self.mark.0 == Phase::Decided {
            rank
        } else {
            0
        };
        self.entries
            .push(self.mark, rank, entry.customer_id, |line| {
                entry.write_json(line)
            });
        self.hand_over_when_full();
    }

    fn send(&mut self, send: SendView<'_>) {
        let place = (self.mark.0, send.sent_at.max(self.mark.1));
        self.sends
            .push(place, 0, send.send_id, |line| send.write_json(line));
        self.hand_over_when_full();
    }

    fn reached(&mut self, instant: DateTime<Utc>) {
        self.mark.1 = instant;
        self.moves += 1;
        if self.moves >= BATCH_MOVES {
            self.hand_over();
        }
    }

    fn left_pending(&mut self) {
        self.mark = (Phase::Pending, DateTime::<Utc>::MIN_UTC);
    }

    /// The engine ended: its end is handed over at once, so that the lines of engines
    /// still at work are written as they come, not held until they all end.
    fn finished(&mut self) {
        self.end();
    }
}

/// Writes the entries' and the sends' files from the parts' batches, merged, as soon as
/// every part has passed their lines; returns how many entries and sends were written. An
/// error when a file cannot be written, or when a part stopped without its end (its
/// engine failed).
fn write_files(
    (entries, sends): (BlockWriter, BlockWriter),
    parts: usize,
    batches: Receiver<Batch>,
    spent: Vec<Sender<Lines>>,
) -> io::Result<(u64, u64)> {
    let mut entries = Merge::new(parts, entries, spent.clone());
    let mut sends = Merge::new(parts, sends, spent);
    let mut marks = vec![(Phase::Decided, DateTime::<Utc>::MIN_UTC); parts];
    for batch in batches {
        let Some(mark) = marks.get_mut(batch.part) else {
            continue;
        };
        *mark = batch.mark;
        entries.add(batch.part, batch.entries);
        sends.add(batch.part, batch.sends);
        // INVARIANT: every part hands over its lines in order, and none before its mark.
        if let Some(&passed) = marks.iter().min() {
            entries.write_before(passed)?;
            sends.write_before(passed)?;
        }
    }
    if marks.iter().any(|(phase, _)| *phase != Phase::Done) {
        return Err(io::Error::other(
            "an engine stopped before the end of the backtest",
        ));
    }
    Ok((entries.finish()?, sends.finish()?))
}

/// One file being written from its parts' lines, merged.
struct Merge {
    /// Each part's lines not written yet: batches, and where the first one's next line is.
    queues: Vec<(VecDeque<Lines>, usize)>,
    out: BlockWriter,
    written: u64,
    /// The lines of one place, gathered from every part: (part, batch, line).
    group: Vec<(usize, usize, usize)>,
    /// Per part, where its lines after that place start: (batch, line).
    ends: Vec<(usize, usize)>,
    /// Per part, where its written batches go back, emptied (none: they are dropped).
    spent: Vec<Sender<Lines>>,
}

impl Merge {
    fn new(parts: usize, out: BlockWriter, spent: Vec<Sender<Lines>>) -> Merge {
        Merge {
            queues: (0..parts).map(|_| (VecDeque::new(), 0)).collect(),
            out,
            written: 0,
            group: Vec::new(),
            ends: vec![(0, 0); parts],
            spent,
        }
    }

    fn add(&mut self, part: usize, lines: Lines) {
        if lines.lines.is_empty() {
            self.give_back(part, lines);
        } else if let Some((queue, _)) = self.queues.get_mut(part) {
            queue.push_back(lines);
        }
    }

    /// A written batch back to its part, emptied.
    fn give_back(&self, part: usize, mut lines: Lines) {
        if let Some(spent) = self.spent.get(part) {
            lines.bytes.clear();
            lines.lines.clear();
            // Refused only when the part has ended; the batch is dropped then.
            let _ = spent.send(lines);
        }
    }

    /// The next line of `part` not written yet.
    fn front(&self, part: usize) -> Option<&Line> {
        let (queue, next) = &self.queues[part];
        queue.front().and_then(|lines| lines.lines.get(*next))
    }

    /// Write every line at a place before `passed`, in order.
    fn write_before(&mut self, passed: Mark) -> io::Result<()> {
        loop {
            let next = (0..self.queues.len())
                .filter_map(|part| self.front(part).map(Line::place))
                .min();
            let Some(place) = next.filter(|p| *p < passed) else {
                return Ok(());
            };
            // Every part's lines at this place: at the start of its queue, in order.
            self.group.clear();
            for (part, (queue, next)) in self.queues.iter().enumerate() {
                let mut end = (queue.len(), 0);
                'batches: for (batch, lines) in queue.iter().enumerate() {
                    let first = if batch == 0 { *next } else { 0 };
                    for (line, l) in lines.lines.iter().enumerate().skip(first) {
                        if l.place() != place {
                            end = (batch, line);
                            break 'batches;
                        }
                        self.group.push((part, batch, line));
                    }
                }
                self.ends[part] = end;
            }
            let queues = &self.queues;
            let line_of = |&(part, batch, line): &(usize, usize, usize)| {
                let lines = &queues[part].0[batch];
                (lines, &lines.lines[line])
            };
            // Stable: equal keys keep their part's order.
            self.group.sort_by(|a, b| {
                let (la, a) = line_of(a);
                let (lb, b) = line_of(b);
                la.key(a).cmp(&lb.key(b))
            });
            for item in &self.group {
                let (lines, line) = line_of(item);
                self.out.write_all(lines.text(line))?;
            }
            self.written += self.group.len() as u64;
            // Past the lines written.
            for (part, &(batch, line)) in self.ends.iter().enumerate() {
                let (queue, next) = &mut self.queues[part];
                let written: Vec<Lines> = queue.drain(..batch).collect();
                *next = line;
                for lines in written {
                    self.give_back(part, lines);
                }
            }
        }
    }

    /// Write what is left (every part has ended) and close the file.
    fn finish(mut self) -> io::Result<u64> {
        self.write_before((Phase::Done, DateTime::<Utc>::MAX_UTC))?;
        self.out.finish()?;
        Ok(self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A part's lines: (steps forward in place, rank, key), and whether a batch ends after
    /// each.
    type PartLines = Vec<((u8, u8), u16, String, bool)>;

    fn part_lines() -> impl Strategy<Value = PartLines> {
        let line = ((0u8..3, 0u8..3), 0u16..3, "[ab]{0,2}", any::<bool>());
        proptest::collection::vec(line, 0..40)
    }

    fn place_after(place: Mark, (phase, seconds): (u8, u8)) -> Mark {
        let phase = match (place.0, phase) {
            (Phase::Decided, 2) => Phase::Pending,
            (phase, _) => phase,
        };
        let at = match phase == place.0 {
            true => place.1 + chrono::Duration::seconds(i64::from(seconds)),
            false => DateTime::<Utc>::UNIX_EPOCH,
        };
        (phase, at)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Whatever the batches and the order the parts' batches come in, the file is every
        /// line stably sorted by place, then rank and key.
        #[test]
        fn the_parts_lines_are_merged_in_order(
            parts in proptest::collection::vec(part_lines(), 1..4),
            interleaving in proptest::collection::vec(0usize..4, 0..200),
        ) {
            let dir = std::env::temp_dir().join(format!(
                "moments-merge-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let mut batches: Vec<VecDeque<Batch>> = Vec::new();
            let mut expected = Vec::new();
            for (part, lines) in parts.iter().enumerate() {
                let mut place = (Phase::Decided, DateTime::<Utc>::UNIX_EPOCH);
                let mut queue = VecDeque::new();
                let mut batch = Lines::default();
                for (index, (step, rank, key, hand_over)) in lines.iter().enumerate() {
                    place = place_after(place, *step);
                    // Keys of different parts differ, as customers of different engines do.
                    let key = format!("{part}{key}");
                    let text = format!("{part}-{index}");
                    batch.push(place, *rank, &key, |out| out.extend_from_slice(text.as_bytes()));
                    expected.push((place, *rank, key, text));
                    if *hand_over {
                        let lines = std::mem::take(&mut batch);
                        queue.push_back((lines, place));
                    }
                }
                queue.push_back((batch, (Phase::Done, DateTime::<Utc>::MAX_UTC)));
                batches.push(
                    queue
                        .into_iter()
                        .map(|(entries, mark)| Batch {
                            part,
                            entries,
                            sends: Lines::default(),
                            mark,
                        })
                        .collect(),
                );
            }
            let (sender, receiver) = channel();
            // The parts' batches in any interleaving, each part's in order.
            for part in interleaving {
                if let Some(batch) = batches[part % parts.len()].pop_front() {
                    sender.send(batch).unwrap();
                }
            }
            for queue in &mut batches {
                while let Some(batch) = queue.pop_front() {
                    sender.send(batch).unwrap();
                }
            }
            drop(sender);
            let (entries, sends) =
                write_files(files_in(&dir), parts.len(), receiver, Vec::new()).unwrap();
            expected.sort_by(|a, b| (a.0, a.1, &a.2).cmp(&(b.0, b.1, &b.2)));
            let expected: String = expected.iter().map(|(_, _, _, text)| format!("{text}\n")).collect();
            let written = std::fs::read_to_string(dir.join("entries.ndjson")).unwrap();
            let _ = std::fs::remove_dir_all(&dir);
            prop_assert_eq!(written, expected);
            prop_assert_eq!(entries, expected_len(&parts));
            prop_assert_eq!(sends, 0);
        }
    }

    fn files_in(dir: &Path) -> (BlockWriter, BlockWriter) {
        (
            BlockWriter::create(&dir.join("entries.ndjson"), WRITE_BUFFER).unwrap(),
            BlockWriter::create(&dir.join("sends.ndjson"), WRITE_BUFFER).unwrap(),
        )
    }

    fn expected_len(parts: &[PartLines]) -> u64 {
        parts.iter().map(|p| p.len() as u64).sum()
    }

    #[test]
    fn a_part_that_stops_without_its_end_is_an_error() {
        let dir = std::env::temp_dir().join(format!("moments-merge-end-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (sender, receiver) = channel();
        let mark = (Phase::Done, DateTime::<Utc>::MAX_UTC);
        let batch = |part| Batch {
            part,
            entries: Lines::default(),
            sends: Lines::default(),
            mark,
        };
        sender.send(batch(0)).unwrap();
        drop(sender);
        let written = write_files(files_in(&dir), 2, receiver, Vec::new());
        let _ = std::fs::remove_dir_all(&dir);
        assert!(written.is_err());
    }
}
