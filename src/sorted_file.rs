//! Newline-delimited files written in sorted order with bounded memory.
//!
//! Lines come in any order, each with a sort key (bytes, compared lexicographically; see
//! [`Key`]). Up to a budget they are held in memory; past it the held lines are sorted and
//! written to a run file next to the output, and at the end the runs and what is still held
//! are merged. Lines with equal keys keep the order they came in, so the output is a
//! deterministic function of the lines pushed, whatever the budget.
//!
//! One file can be written in parts, each on a thread of its own ([`SortedFile::part`]),
//! and merged into one at the end ([`SortedFile::finish_all`]): lines with equal keys then
//! come part by part, in the order of the parts. A large file is merged in pieces at once,
//! split at keys taken from marks the runs keep, each piece written where it goes in the
//! file. Runs and files are written and read past the page cache ([`crate::direct_io`]).

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::direct_io::{BlockReader, BlockWriter};

/// Memory for held lines before a run is written, by default.
pub const DEFAULT_BUDGET: usize = 16 << 20;
/// The write buffer of runs and of the final file: writes of whole pages, a few hundred per
/// run, rather than one per 8 KiB.
const WRITE_BUFFER: usize = 1 << 20;
/// The read buffer of each run being merged.
const READ_BUFFER: usize = 1 << 20;
/// The read buffers of one file's merge, all pieces together, at most; a buffer is never
/// smaller than `READ_BUFFER_AT_LEAST`.
const READ_BUFFERS: usize = 256 << 20;
const READ_BUFFER_AT_LEAST: usize = 64 << 10;
/// A file of at least this many budgets with runs on disk (64 MiB by default) is merged in
/// up to `MERGE_PIECES` pieces at once, on threads of their own, each writing its own
/// stretch of the file: the merge is what is left to do when everything else is done.
const SPLIT_FROM_BUDGETS: u64 = 4;
/// The pieces a large file is merged in at once, at most: the merge reads and writes past
/// the page cache, so it waits on the disk more than on the CPU, and more pieces keep
/// more reads and writes under way.
const MERGE_PIECES: usize = 4;
/// Each piece opens every run: a file is merged in as many pieces as keep the runs open at
/// once to this many (two files are merged at once, and 1,024 open files is a usual
/// limit); past it, its runs are first merged into fewer, up to half as many at a time.
const MERGE_OPEN_AT_MOST: usize = 256;
/// A run keeps the key and place of one line in this many: where a piece can start.
const MARK_EVERY: usize = 1024;
/// The lengths before each line of a run.
const RUN_LINE_HEADER: u64 = 12;

/// A sort key whose byte order is the order of the values pushed into it.
#[derive(Debug, Default, Clone)]
pub struct Key(Vec<u8>);

impl Key {
    pub fn new() -> Key {
        Key::default()
    }

    /// This key emptied, keeping its room: for building keys one after another.
    pub fn reuse(mut self) -> Key {
        self.0.clear();
        self
    }

    /// A string: its bytes, with 0 escaped as `0 FF` and ended by `0 0`, so that a prefix
    /// sorts first and what follows does not bleed into the comparison.
    pub fn text(mut self, s: &str) -> Key {
        let bytes = s.as_bytes();
        if bytes.contains(&0) {
            for &b in bytes {
                self.0.push(b);
                if b == 0 {
                    self.0.push(0xFF);
                }
            }
        } else {
            self.0.extend_from_slice(bytes);
        }
        self.0.extend_from_slice(&[0, 0]);
        self
    }

    /// An optional string: `None` first.
    pub fn opt_text(mut self, s: Option<&str>) -> Key {
        match s {
            None => {
                self.0.push(0);
                self
            }
            Some(s) => {
                self.0.push(1);
                self.text(s)
            }
        }
    }

    /// A small number, in numeric order (a rank that stands for a longer text).
    pub fn rank(mut self, rank: u16) -> Key {
        self.0.extend_from_slice(&rank.to_be_bytes());
        self
    }

    /// An instant, in time order.
    pub fn instant(mut self, at: DateTime<Utc>) -> Key {
        let seconds = (at.timestamp() as u64) ^ (1 << 63);
        self.0.extend_from_slice(&seconds.to_be_bytes());
        self.0
            .extend_from_slice(&at.timestamp_subsec_nanos().to_be_bytes());
        self
    }
}

/// Writes back the head and tail of a line that a file leaves out of its runs, from the
/// line's key: what the key already says is not written twice.
pub trait Restore: std::marker::Send + Sync {
    /// Appends to `out` the whole line whose key is `key` and of which `kept` was kept.
    fn restore(&self, key: &[u8], kept: &[u8], out: &mut Vec<u8>) -> io::Result<()>;
}

/// Reads the values of a [`Key`] back, in the order they were put in; `None` where the
/// bytes do not hold what is asked for.
#[derive(Debug, Clone)]
pub struct KeyReader<'k>(&'k [u8]);

impl<'k> KeyReader<'k> {
    pub fn new(key: &'k [u8]) -> KeyReader<'k> {
        KeyReader(key)
    }

    fn take(&mut self, n: usize) -> Option<&'k [u8]> {
        let (taken, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(taken)
    }

    pub fn rank(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    pub fn text(&mut self) -> Option<Cow<'k, str>> {
        let end = memchr::memmem::find(self.0, &[0, 0])?;
        if !self.0[..end].contains(&0) {
            let text = std::str::from_utf8(&self.0[..end]).ok()?;
            self.0 = &self.0[end + 2..];
            return Some(Cow::Borrowed(text));
        }
        // Escaped zeros (`0 FF`): the text ends at the first zero not followed by `FF`.
        let mut bytes = Vec::new();
        loop {
            let zero = memchr::memchr(0, self.0)?;
            bytes.extend_from_slice(&self.0[..zero]);
            match self.0.get(zero + 1) {
                Some(0xFF) => {
                    bytes.push(0);
                    self.0 = &self.0[zero + 2..];
                }
                Some(0) => {
                    self.0 = &self.0[zero + 2..];
                    return String::from_utf8(bytes).ok().map(Cow::Owned);
                }
                _ => return None,
            }
        }
    }

    pub fn opt_text(&mut self) -> Option<Option<Cow<'k, str>>> {
        match self.take(1)? {
            [0] => Some(None),
            [1] => self.text().map(Some),
            _ => None,
        }
    }

    pub fn instant(&mut self) -> Option<DateTime<Utc>> {
        let seconds = u64::from_be_bytes(self.take(8)?.try_into().ok()?) ^ (1 << 63);
        let nanos = u32::from_be_bytes(self.take(4)?.try_into().ok()?);
        DateTime::from_timestamp(seconds as i64, nanos)
    }
}

/// A line held in memory: where its key and line are in `SortedFile::bytes`, and the
/// start of its key, so that a sort compares most keys without reading them there.
#[derive(Debug, Clone, Copy)]
struct Held {
    /// The key's first 16 bytes, big-endian, padded with zeros (as two halves: a `u128`
    /// would align the whole to 16 bytes and make it 48 bytes long).
    // INVARIANT: when two prefixes differ, they order the two whole keys: a key that ends
    // within the prefix is padded with zeros, and where the other has a zero there too the
    // prefixes go on equal, as the longer key sorts after its own prefix anyway.
    prefix: (u64, u64),
    start: usize,
    key_len: u32,
    /// The bytes kept of the line.
    line_len: u32,
    /// The bytes of the whole line (restored, where the file has a [`Restore`]).
    full_len: u32,
}

impl Held {
    fn key<'b>(&self, bytes: &'b [u8]) -> &'b [u8] {
        &bytes[self.start..self.start + self.key_len as usize]
    }

    fn line<'b>(&self, bytes: &'b [u8]) -> &'b [u8] {
        let from = self.start + self.key_len as usize;
        &bytes[from..from + self.line_len as usize]
    }
}

/// An NDJSON file (or a part of one) being written in key order.
pub struct SortedFile {
    path: PathBuf,
    /// Which part of the file this is: it names the part's run files.
    part: usize,
    budget: usize,
    /// Writes back what the lines leave out in runs; `None`: lines are kept whole.
    restore: Option<Arc<dyn Restore>>,
    /// Keys and lines held, back to back; `held` indexes them.
    bytes: Vec<u8>,
    /// The lines held, in the order pushed.
    held: Vec<Held>,
    runs: Vec<Run>,
    /// The run files made so far (merged ones included): it numbers the next.
    runs_made: usize,
    lines: u64,
    /// The bytes the lines take in the file, newlines included.
    written: u64,
}

/// A run on disk: its lines sorted, each as the lengths of its key, of what is kept of the
/// line and of the whole line (`u32`, little endian), the key and what is kept of the line.
struct Run {
    path: PathBuf,
    /// Its length in bytes.
    len: u64,
    /// One line in `MARK_EVERY`, from the first on, in order.
    marks: Vec<Mark>,
}

/// A run being written, line after line in key order; its file is removed if it is
/// dropped unfinished.
struct RunWriter {
    path: PathBuf,
    /// `None` once finished.
    out: Option<BlockWriter>,
    lines: usize,
    offset: u64,
    written: u64,
    marks: Vec<Mark>,
}

impl RunWriter {
    fn create(path: PathBuf) -> io::Result<RunWriter> {
        Ok(RunWriter {
            out: Some(BlockWriter::create(&path, WRITE_BUFFER)?),
            path,
            lines: 0,
            offset: 0,
            written: 0,
            marks: Vec::new(),
        })
    }

    /// The next line: its key, what is kept of it, and the whole line's length.
    fn push(&mut self, key: &[u8], line: &[u8], full_len: u32) -> io::Result<()> {
        if self.lines.is_multiple_of(MARK_EVERY) {
            self.marks.push(Mark {
                key: key.to_vec(),
                offset: self.offset,
                written: self.written,
            });
        }
        let too_long = || io::Error::other("a line of 4 GiB or more");
        let key_len = u32::try_from(key.len()).map_err(|_| too_long())?;
        let line_len = u32::try_from(line.len()).map_err(|_| too_long())?;
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| io::Error::other("a finished run"))?;
        out.write_all(&key_len.to_le_bytes())?;
        out.write_all(&line_len.to_le_bytes())?;
        out.write_all(&full_len.to_le_bytes())?;
        out.write_all(key)?;
        out.write_all(line)?;
        self.lines += 1;
        self.offset += RUN_LINE_HEADER + u64::from(key_len) + u64::from(line_len);
        self.written += u64::from(full_len) + 1;
        Ok(())
    }

    fn finish(mut self) -> io::Result<Run> {
        if let Some(out) = self.out.take() {
            out.finish()?;
        }
        Ok(Run {
            path: self.path.clone(),
            len: self.offset,
            marks: std::mem::take(&mut self.marks),
        })
    }
}

impl Drop for RunWriter {
    fn drop(&mut self) {
        if self.out.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A line of a run: its key, where it starts, and the bytes the run's lines before it take
/// in the file.
struct Mark {
    key: Vec<u8>,
    offset: u64,
    written: u64,
}

impl SortedFile {
    /// Part `part` of the sorted file at `path`, holding up to `budget` bytes of lines in
    /// memory; the parts are written out together by [`SortedFile::finish_all`].
    pub fn part(path: &Path, part: usize, budget: usize) -> SortedFile {
        SortedFile {
            path: path.to_path_buf(),
            part,
            budget: budget.max(1),
            bytes: Vec::new(),
            held: Vec::new(),
            runs: Vec::new(),
            runs_made: 0,
            lines: 0,
            written: 0,
            restore: None,
        }
    }

    /// This part, keeping only part of each line in memory and in its runs: see
    /// [`SortedFile::push_stripped`]. All parts of a file must restore alike.
    pub fn restoring(mut self, restore: Arc<dyn Restore>) -> SortedFile {
        self.restore = Some(restore);
        self
    }

    /// Add a line (without its newline).
    pub fn push(&mut self, key: &Key, line: &[u8]) -> io::Result<()> {
        self.push_with(key, |bytes| bytes.extend_from_slice(line))
    }

    /// Add a line (without its newline) that `write` appends to the buffer it is given:
    /// the line is made where it is held, not copied there.
    pub fn push_with(&mut self, key: &Key, write: impl FnOnce(&mut Vec<u8>)) -> io::Result<()> {
        self.push_stripped(key, |bytes| {
            write(bytes);
            (0, 0)
        })
    }

    /// Add a line (without its newline) that `write` appends to the buffer it is given, and
    /// of which it returns the lengths of a head and a tail that this file's [`Restore`]
    /// writes back from the key alone: only the rest is kept (the whole line without one).
    pub fn push_stripped(
        &mut self,
        key: &Key,
        write: impl FnOnce(&mut Vec<u8>) -> (usize, usize),
    ) -> io::Result<()> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&key.0);
        let line_start = self.bytes.len();
        let (head, tail) = write(&mut self.bytes);
        let full_len = self.bytes.len() - line_start;
        if self.restore.is_some() {
            let Some(kept) = full_len.checked_sub(head + tail) else {
                self.bytes.truncate(start);
                return Err(io::Error::other("a line's head and tail overlap"));
            };
            self.bytes
                .copy_within(line_start + head..line_start + head + kept, line_start);
            self.bytes.truncate(line_start + kept);
        }
        let line_len = self.bytes.len() - line_start;
        let lengths = (
            u32::try_from(key.0.len()),
            u32::try_from(line_len),
            u32::try_from(full_len),
        );
        let (Ok(key_len), Ok(line_len), Ok(full_len)) = lengths else {
            self.bytes.truncate(start);
            return Err(io::Error::other("a line of 4 GiB or more"));
        };
        let mut prefix = [0u8; 16];
        let n = key.0.len().min(16);
        prefix[..n].copy_from_slice(&key.0[..n]);
        let (high, low) = prefix.split_at(8);
        let half = |bytes: &[u8]| u64::from_be_bytes(bytes.try_into().unwrap_or_default());
        self.held.push(Held {
            prefix: (half(high), half(low)),
            start,
            key_len,
            line_len,
            full_len,
        });
        self.lines += 1;
        self.written += u64::from(full_len) + 1;
        if self.bytes.len() + self.held.len() * std::mem::size_of::<Held>() >= self.budget {
            self.spill()?;
        }
        Ok(())
    }

    /// Sort the held lines (stable: equal keys in the order pushed).
    fn sort_held(&mut self) {
        let bytes = &self.bytes;
        self.held.sort_by(|a, b| {
            a.prefix
                .cmp(&b.prefix)
                .then_with(|| a.key(bytes).cmp(b.key(bytes)))
        });
    }

    /// Write the held lines, sorted, to a new run file.
    fn spill(&mut self) -> io::Result<()> {
        let mut run = RunWriter::create(self.next_run_path())?;
        self.sort_held();
        for held in &self.held {
            let (key, line) = (held.key(&self.bytes), held.line(&self.bytes));
            run.push(key, line, held.full_len)?;
        }
        self.runs.push(run.finish()?);
        // Both keep their room for the next run: memory touched once.
        self.bytes.clear();
        self.held.clear();
        Ok(())
    }

    /// The path of the next run file this part makes.
    fn next_run_path(&mut self) -> PathBuf {
        self.runs_made += 1;
        run_path(&self.path, self.part, self.runs_made - 1)
    }

    /// Merge this part's runs, in groups of `at_most` that follow each other, into one run
    /// per group: as many runs as the groups, in the same order, so that equal keys keep
    /// theirs.
    fn merge_runs(&mut self, at_most: usize) -> io::Result<()> {
        let groups: Vec<Vec<Run>> = {
            let mut runs = std::mem::take(&mut self.runs).into_iter().peekable();
            let mut groups = Vec::new();
            while runs.peek().is_some() {
                groups.push(runs.by_ref().take(at_most.max(2)).collect());
            }
            groups
        };
        for group in groups {
            if group.len() == 1 {
                self.runs.extend(group);
                continue;
            }
            let merged = RunWriter::create(self.next_run_path()).and_then(|mut run| {
                let sources = group.iter().map(|r| {
                    let input = BlockReader::range(&r.path, 0, r.len, READ_BUFFER_AT_LEAST)?;
                    Ok(Source::Run(input))
                });
                let sources = sources.collect::<io::Result<Vec<_>>>()?;
                merge(sources, |key, line, full_len| run.push(key, line, full_len))?;
                run.finish()
            });
            for old in &group {
                let _ = std::fs::remove_file(&old.path);
            }
            self.runs.push(merged?);
        }
        Ok(())
    }

    /// Write the file of which `parts` are the parts (all with the same path), merged;
    /// returns how many lines it has. Run files are removed.
    pub fn finish_all(mut parts: Vec<SortedFile>) -> io::Result<u64> {
        let Some(path) = parts.first().map(|p| p.path.clone()) else {
            return Ok(0);
        };
        if parts.iter().any(|p| p.path != path) {
            return Err(io::Error::other(
                "the parts of a sorted file differ in path",
            ));
        }
        let restore = parts[0].restore.clone();
        if parts
            .iter()
            .any(|p| p.restore.is_some() != restore.is_some())
        {
            return Err(io::Error::other(
                "the parts of a sorted file differ in how they keep lines",
            ));
        }
        let restore = restore.as_deref();
        // Created before the pieces after the first open it.
        let out = BlockWriter::create(&path, WRITE_BUFFER)?;
        let lines = parts.iter().map(|p| p.lines).sum();
        for part in &mut parts {
            part.sort_held();
        }
        // Too many runs to hold open at once: merged into fewer first, part by part (while
        // that makes fewer).
        let count_runs = |parts: &[SortedFile]| parts.iter().map(|p| p.runs.len()).sum::<usize>();
        let mut runs = count_runs(&parts);
        while runs > MERGE_OPEN_AT_MOST {
            for part in &mut parts {
                part.merge_runs(MERGE_OPEN_AT_MOST / 2)?;
            }
            let fewer = count_runs(&parts);
            if fewer == runs {
                break;
            }
            runs = fewer;
        }
        let written: u64 = parts.iter().map(|p| p.written).sum();
        let split_from = parts[0].budget as u64 * SPLIT_FROM_BUDGETS;
        let pieces = if written >= split_from {
            (MERGE_OPEN_AT_MOST / runs.max(1)).clamp(1, MERGE_PIECES)
        } else {
            1
        };
        // Each piece from a split key (the first from the start) up to the next (the last
        // to the end), merged at once with the others and written where it belongs in the
        // file. The parts' run files are removed as they drop.
        let starts = split_keys(&parts, pieces)
            .iter()
            .map(|key| starts_from(&parts, key))
            .collect::<io::Result<Vec<_>>>()?;
        let buffer = read_buffer(runs * (starts.len() + 1));
        let mut first = Some(out);
        let mut jobs: Vec<Job<'_>> = Vec::with_capacity(starts.len() + 1);
        for n in 0..=starts.len() {
            let (from, to) = (n.checked_sub(1).map(|i| &starts[i]), starts.get(n));
            let bounds = |i: usize| from.map_or(0, |f| f[i].at)..to.map_or(u64::MAX, |t| t[i].at);
            let piece = sources(&parts, bounds, buffer)?;
            let offset = from.map_or(0, |f| f.iter().map(|s| s.written).sum());
            let (first, path) = (first.take(), &path);
            jobs.push(Box::new(move || {
                let mut out = match first {
                    Some(out) => out,
                    None => BlockWriter::at(path, offset, WRITE_BUFFER)?,
                };
                merge_into_file(piece, restore, &mut out)?;
                out.finish()
            }));
        }
        all_at_once("moments-merge", jobs)?;
        Ok(lines)
    }
}

/// The read buffer of each of `readers` runs read at once.
fn read_buffer(readers: usize) -> usize {
    (READ_BUFFERS / readers.max(1)).clamp(READ_BUFFER_AT_LEAST, READ_BUFFER)
}

/// Work for [`all_at_once`].
type Job<'a> = Box<dyn FnOnce() -> io::Result<()> + std::marker::Send + 'a>;

/// `jobs` at once: the first on this thread, each other on a thread of its own called
/// `name` (or here, after the first, when a thread cannot be had). The first error, in
/// the order of the jobs.
fn all_at_once(name: &str, jobs: Vec<Job<'_>>) -> io::Result<()> {
    let mut slots: Vec<Option<Job<'_>>> = jobs.into_iter().map(Some).collect();
    let Some((first, others)) = slots.split_first_mut() else {
        return Ok(());
    };
    let mut done = std::thread::scope(|scope| {
        let threads: Vec<_> = others
            .iter_mut()
            .map(|slot| {
                std::thread::Builder::new()
                    .name(name.to_string())
                    .spawn_scoped(scope, move || slot.take().map(|job| job()))
            })
            .collect();
        let mut done = vec![first.take().map_or(Ok(()), |job| job())];
        for thread in threads.into_iter().flatten() {
            match thread.join() {
                Ok(Some(result)) => done.push(result),
                Ok(None) => {}
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        done
    });
    // The jobs left where no thread could be started.
    done.extend(slots.iter_mut().filter_map(Option::take).map(|job| job()));
    done.into_iter().collect()
}

/// `here` on this thread and `there` on a thread of its own called `name`, at once (both
/// here, one after the other, when a thread cannot be had).
pub(crate) fn at_once<A: std::marker::Send, B: std::marker::Send>(
    name: &str,
    here: impl FnOnce() -> io::Result<A> + std::marker::Send,
    there: impl FnOnce() -> io::Result<B> + std::marker::Send,
) -> io::Result<(A, B)> {
    let (mut a, mut b) = (None, None);
    all_at_once(
        name,
        vec![
            Box::new(|| here().map(|done| a = Some(done))),
            Box::new(|| there().map(|done| b = Some(done))),
        ],
    )?;
    a.zip(b)
        .ok_or_else(|| io::Error::other(format!("`{name}` did not run")))
}

/// The sources of `parts` to merge, each source `i` from `bounds(i)` only (byte offsets
/// in a run, indexes among the lines held): each part's runs in the order written, then
/// what it still holds (sorted): the order in which its lines came, as far as equal keys
/// go.
fn sources(
    parts: &[SortedFile],
    bounds: impl Fn(usize) -> std::ops::Range<u64>,
    buffer: usize,
) -> io::Result<Vec<Source<'_>>> {
    let mut sources = Vec::new();
    for part in parts {
        for run in &part.runs {
            let range = bounds(sources.len());
            let (start, end) = (range.start.min(run.len), range.end.min(run.len));
            let input = BlockReader::range(&run.path, start, end.max(start), buffer)?;
            sources.push(Source::Run(input));
        }
        let range = bounds(sources.len());
        let len = part.held.len() as u64;
        let (start, end) = (range.start.min(len), range.end.min(len));
        sources.push(Source::Held {
            bytes: &part.bytes,
            held: part.held[start as usize..end.max(start) as usize].iter(),
        });
    }
    Ok(sources)
}

/// Where a source's lines from a key on start: a byte offset in a run, or an index among
/// the lines held; and the bytes its lines before take in the file.
#[derive(Debug, Clone, Copy)]
struct Start {
    at: u64,
    written: u64,
}

/// Keys that split the lines of `parts` into about `pieces` stretches of the same length
/// (quantiles of the runs' marks and of as many of the held lines), in order, without
/// repeats; none when there are no lines.
fn split_keys(parts: &[SortedFile], pieces: usize) -> Vec<Vec<u8>> {
    let mut keys: Vec<&[u8]> = Vec::new();
    for part in parts {
        for run in &part.runs {
            keys.extend(run.marks.iter().map(|m| m.key.as_slice()));
        }
        keys.extend(
            part.held
                .iter()
                .step_by(MARK_EVERY)
                .map(|h| h.key(&part.bytes)),
        );
    }
    keys.sort_unstable();
    let mut splits: Vec<Vec<u8>> = (1..pieces)
        .filter_map(|n| keys.get(keys.len() * n / pieces))
        .map(|key| key.to_vec())
        .collect();
    splits.dedup();
    splits
}

/// Where the lines of `parts` from `key` on start in each source (in the order of
/// [`sources`]).
fn starts_from(parts: &[SortedFile], key: &[u8]) -> io::Result<Vec<Start>> {
    let mut starts = Vec::new();
    for part in parts {
        for run in &part.runs {
            starts.push(run_start(run, key)?);
        }
        // INVARIANT: sorted by `sort_held`, in key order.
        let at = part.held.partition_point(|h| h.key(&part.bytes) < key);
        let written = part.held[..at]
            .iter()
            .map(|h| u64::from(h.full_len) + 1)
            .sum();
        starts.push(Start {
            at: at as u64,
            written,
        });
    }
    Ok(starts)
}

/// Where the lines of `run` from `key` on start: from the last mark before the key, line by
/// line.
fn run_start(run: &Run, key: &[u8]) -> io::Result<Start> {
    let before = run.marks.partition_point(|m| m.key.as_slice() < key);
    let Some(mark) = before.checked_sub(1).and_then(|i| run.marks.get(i)) else {
        return Ok(Start { at: 0, written: 0 });
    };
    let mut input = BlockReader::range(&run.path, mark.offset, run.len, READ_BUFFER_AT_LEAST)?;
    let (mut at, mut written) = (mark.offset, mark.written);
    let (mut line_key, mut line) = (Vec::new(), Vec::new());
    while let Some(full_len) = read_line(&mut input, &mut line_key, &mut line)? {
        if line_key.as_slice() >= key {
            break;
        }
        at += RUN_LINE_HEADER + line_key.len() as u64 + line.len() as u64;
        written += u64::from(full_len) + 1;
    }
    Ok(Start { at, written })
}

impl Drop for SortedFile {
    fn drop(&mut self) {
        for run in &self.runs {
            let _ = std::fs::remove_file(&run.path);
        }
    }
}

/// `entries.ndjson` → `.entries.ndjson.run-3` (part 0) or `.entries.ndjson.run-1-3`, a
/// hidden file beside it.
fn run_path(path: &Path, part: usize, index: usize) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "sorted".into(), |n| n.to_string_lossy().into_owned());
    match part {
        0 => path.with_file_name(format!(".{name}.run-{index}")),
        _ => path.with_file_name(format!(".{name}.run-{part}-{index}")),
    }
}

/// Sorted lines to merge: (a stretch of) a run file being read, or lines a part holds.
enum Source<'a> {
    Run(BlockReader),
    Held {
        bytes: &'a [u8],
        held: std::slice::Iter<'a, Held>,
    },
}

impl Source<'_> {
    /// Reads the next key and kept line into `key` and `line` (their room is reused); the
    /// whole line's length, or `None` at the end.
    fn next_into(&mut self, key: &mut Vec<u8>, line: &mut Vec<u8>) -> io::Result<Option<u32>> {
        match self {
            Source::Held { bytes, held } => {
                let Some(next) = held.next() else {
                    return Ok(None);
                };
                key.clear();
                key.extend_from_slice(next.key(bytes));
                line.clear();
                line.extend_from_slice(next.line(bytes));
                Ok(Some(next.full_len))
            }
            Source::Run(input) => read_line(input, key, line),
        }
    }
}

/// Reads a run's next key and kept line into `key` and `line` (their room is reused); the
/// whole line's length, or `None` at the end.
fn read_line(
    input: &mut impl Read,
    key: &mut Vec<u8>,
    line: &mut Vec<u8>,
) -> io::Result<Option<u32>> {
    let mut lengths = [0u8; RUN_LINE_HEADER as usize];
    match input.read_exact(&mut lengths) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let length = |at: usize| {
        u32::from_le_bytes([
            lengths[at],
            lengths[at + 1],
            lengths[at + 2],
            lengths[at + 3],
        ])
    };
    key.resize(length(0) as usize, 0);
    input.read_exact(key)?;
    line.resize(length(4) as usize, 0);
    input.read_exact(line)?;
    Ok(Some(length(8)))
}

/// Writes the line kept as `line`, pushed with `key`, whole (restored in `whole` first
/// where the file has a [`Restore`]), and its newline.
fn write_line(
    restore: Option<&dyn Restore>,
    key: &[u8],
    line: &[u8],
    whole: &mut Vec<u8>,
    out: &mut impl Write,
) -> io::Result<()> {
    match restore {
        None => out.write_all(line)?,
        Some(restore) => {
            whole.clear();
            restore.restore(key, line, whole)?;
            out.write_all(whole)?;
        }
    }
    out.write_all(b"\n")
}

/// Merge sorted sources into `emit` (a line's key, what is kept of it and its whole
/// length); equal keys come from the earlier source first.
fn merge(
    mut sources: Vec<Source<'_>>,
    mut emit: impl FnMut(&[u8], &[u8], u32) -> io::Result<()>,
) -> io::Result<()> {
    let mut lines: Vec<(Vec<u8>, u32)> = Vec::with_capacity(sources.len());
    let mut heap = BinaryHeap::new();
    for (index, source) in sources.iter_mut().enumerate() {
        let (mut key, mut line) = (Vec::new(), Vec::new());
        let full_len = source.next_into(&mut key, &mut line)?;
        if full_len.is_some() {
            heap.push(Reverse((key, index)));
        }
        lines.push((line, full_len.unwrap_or(0)));
    }
    // Each source's key goes back into the heap with its next key read into it, and its
    // line buffer is reused too: no allocation per line.
    while let Some(Reverse((mut key, index))) = heap.pop() {
        let (line, full_len) = &mut lines[index];
        emit(&key, line, *full_len)?;
        if let Some(next) = sources[index].next_into(&mut key, line)? {
            *full_len = next;
            heap.push(Reverse((key, index)));
        }
    }
    Ok(())
}

/// Merge sorted sources into the file `out`, each line whole.
fn merge_into_file(
    sources: Vec<Source<'_>>,
    restore: Option<&dyn Restore>,
    out: &mut impl Write,
) -> io::Result<()> {
    let mut whole = Vec::new();
    merge(sources, |key, line, _| {
        write_line(restore, key, line, &mut whole, out)
    })
}
