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
//! come part by part, in the order of the parts.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

/// Memory for held lines before a run is written, by default.
pub const DEFAULT_BUDGET: usize = 16 << 20;
/// The write buffer of runs and of the final file: writes of whole pages, a few hundred per
/// run, rather than one per 8 KiB.
const WRITE_BUFFER: usize = 1 << 20;

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

/// A line held in memory: where its key and line are in `SortedFile::bytes`, and the
/// start of its key, so that a sort compares most keys without reading them there.
#[derive(Debug, Clone, Copy)]
struct Held {
    /// The key's first 16 bytes, big-endian, padded with zeros.
    // INVARIANT: when two prefixes differ, they order the two whole keys: a key that ends
    // within the prefix is padded with zeros, and where the other has a zero there too the
    // prefixes go on equal, as the longer key sorts after its own prefix anyway.
    prefix: u128,
    start: usize,
    key_len: u32,
    line_len: u32,
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
    /// Keys and lines held, back to back; `held` indexes them.
    bytes: Vec<u8>,
    /// The lines held, in the order pushed.
    held: Vec<Held>,
    runs: Vec<PathBuf>,
    lines: u64,
}

impl SortedFile {
    /// A sorted file at `path`, holding up to `budget` bytes of lines in memory.
    pub fn new(path: &Path, budget: usize) -> SortedFile {
        SortedFile::part(path, 0, budget)
    }

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
            lines: 0,
        }
    }

    /// Add a line (without its newline).
    pub fn push(&mut self, key: &Key, line: &[u8]) -> io::Result<()> {
        self.push_with(key, |bytes| bytes.extend_from_slice(line))
    }

    /// Add a line (without its newline) that `write` appends to the buffer it is given:
    /// the line is made where it is held, not copied there.
    pub fn push_with(&mut self, key: &Key, write: impl FnOnce(&mut Vec<u8>)) -> io::Result<()> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&key.0);
        write(&mut self.bytes);
        let line_len = self.bytes.len() - start - key.0.len();
        let (Ok(key_len), Ok(line_len)) = (u32::try_from(key.0.len()), u32::try_from(line_len))
        else {
            self.bytes.truncate(start);
            return Err(io::Error::other("a line of 4 GiB or more"));
        };
        let mut prefix = [0u8; 16];
        let n = key.0.len().min(16);
        prefix[..n].copy_from_slice(&key.0[..n]);
        self.held.push(Held {
            prefix: u128::from_be_bytes(prefix),
            start,
            key_len,
            line_len,
        });
        self.lines += 1;
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
        let path = run_path(&self.path, self.part, self.runs.len());
        let mut out = BufWriter::with_capacity(WRITE_BUFFER, File::create(&path)?);
        self.sort_held();
        for held in &self.held {
            out.write_all(&held.key_len.to_le_bytes())?;
            out.write_all(&held.line_len.to_le_bytes())?;
            out.write_all(held.key(&self.bytes))?;
            out.write_all(held.line(&self.bytes))?;
        }
        out.flush()?;
        self.runs.push(path);
        // Both keep their room for the next run: memory touched once.
        self.bytes.clear();
        self.held.clear();
        Ok(())
    }

    /// Write the file; returns how many lines it has. Run files are removed.
    pub fn finish(self) -> io::Result<u64> {
        SortedFile::finish_all(vec![self])
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
        let mut out = BufWriter::with_capacity(WRITE_BUFFER, File::create(&path)?);
        let lines = parts.iter().map(|p| p.lines).sum();
        if let [only] = &mut parts[..] {
            if only.runs.is_empty() {
                // All in memory: no merge.
                only.sort_held();
                for held in &only.held {
                    out.write_all(held.line(&only.bytes))?;
                    out.write_all(b"\n")?;
                }
                out.flush()?;
                return Ok(lines);
            }
        }
        // Each part's runs in the order written, then what it still holds: the order in
        // which its lines came, as far as equal keys go.
        let mut sources = Vec::new();
        for part in &mut parts {
            for run in &part.runs {
                sources.push(Source::Run(BufReader::with_capacity(
                    256 * 1024,
                    File::open(run)?,
                )));
            }
            part.sort_held();
            sources.push(Source::Held {
                bytes: &part.bytes,
                held: part.held.iter(),
            });
        }
        merge(sources, &mut out)?;
        out.flush()?;
        // The parts' run files are removed as they drop.
        Ok(lines)
    }
}

impl Drop for SortedFile {
    fn drop(&mut self) {
        for run in &self.runs {
            let _ = std::fs::remove_file(run);
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

/// Sorted lines to merge: a run file being read, or the lines a part still holds.
enum Source<'a> {
    Run(BufReader<File>),
    Held {
        bytes: &'a [u8],
        held: std::slice::Iter<'a, Held>,
    },
}

impl Source<'_> {
    /// Reads the next key and line into `key` and `line` (their room is reused); `false`
    /// at the end.
    fn next_into(&mut self, key: &mut Vec<u8>, line: &mut Vec<u8>) -> io::Result<bool> {
        let input = match self {
            Source::Held { bytes, held } => {
                let Some(next) = held.next() else {
                    return Ok(false);
                };
                key.clear();
                key.extend_from_slice(next.key(bytes));
                line.clear();
                line.extend_from_slice(next.line(bytes));
                return Ok(true);
            }
            Source::Run(input) => input,
        };
        let mut lengths = [0u8; 8];
        match input.read_exact(&mut lengths) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(e),
        }
        let key_len = u32::from_le_bytes([lengths[0], lengths[1], lengths[2], lengths[3]]);
        let line_len = u32::from_le_bytes([lengths[4], lengths[5], lengths[6], lengths[7]]);
        key.resize(key_len as usize, 0);
        input.read_exact(key)?;
        line.resize(line_len as usize, 0);
        input.read_exact(line)?;
        Ok(true)
    }
}

/// Merge sorted sources into `out`; equal keys come from the earlier source first.
fn merge(mut sources: Vec<Source<'_>>, out: &mut impl Write) -> io::Result<()> {
    let mut lines: Vec<Vec<u8>> = Vec::with_capacity(sources.len());
    let mut heap = BinaryHeap::new();
    for (index, source) in sources.iter_mut().enumerate() {
        let (mut key, mut line) = (Vec::new(), Vec::new());
        if source.next_into(&mut key, &mut line)? {
            heap.push(Reverse((key, index)));
        }
        lines.push(line);
    }
    // Each source's key goes back into the heap with its next key read into it, and its
    // line buffer is reused too: no allocation per line.
    while let Some(Reverse((mut key, index))) = heap.pop() {
        out.write_all(&lines[index])?;
        out.write_all(b"\n")?;
        if sources[index].next_into(&mut key, &mut lines[index])? {
            heap.push(Reverse((key, index)));
        }
    }
    Ok(())
}
