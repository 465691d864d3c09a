//! Reading a data directory: customer data files → time-ordered, schema-typed [`Record`]s.
//!
//! The format is in `shared/spec/data.md`. [`DataSet::open`] lists the data files below a
//! directory (recursively, sorted by relative path, hidden files and directories skipped):
//!
//! - newline-delimited JSON (`.ndjson`, `.jsonl`, each optionally `.gz`) in the tracking
//!   pipeline's `identify` / `track` shape;
//! - CSV (`.csv`, `.csv.gz`) and Parquet (`.parquet`) tables of two shapes: customers
//!   (`customer_id`, one column per trait, optional `updated_at`) and events (`customer_id`,
//!   `event`, `timestamp`, optional `message_id`, one column per property).
//!
//! Any other file (a README) is not data and is ignored.
//!
//! [`DataSet::records`] gives a [`RecordStream`]: every record of every file, in
//! [`Record::order_key`] order (time, then customer, then traits before events, then id), whatever order the files are
//! listed in. Records that cannot be read or do not fit the schema become [`Reject`]s (file,
//! line, a one-line reason naming the field, the raw line) and reading goes on; records of
//! events the schema does not declare are skipped and counted by source name.
//!
//! # Ordering and memory
//!
//! When the stream starts (at the first `next`), each file gets a quick first pass over its
//! timestamps only, in parallel over the files on as many threads as there are cores: is it
//! sorted by time, and what is its earliest timestamp? Nothing can be handed out before
//! that is known for every file: one record far back in time at the end of any file would
//! otherwise come too late. For NDJSON this pass builds no JSON values: it walks the line's
//! structure up to the top-level `timestamp` key (usually near the start); a line with two
//! such keys is rejected by the main pass, so both passes agree. The first pass costs about
//! an eighth of the reading (a second decompression for `.gz`), so the commands that only
//! read ([`DataSet::with_records`]: `backtest`, `report`, `explain`, `preview`) do without
//! it for NDJSON: they read each file's first timestamp only, take the file to be sorted,
//! and check that it is as the main pass reads it. A file that is not ends the stream, and
//! everything is read again with the first pass; a sorted file is read once. Then:
//!
//! - a sorted file (the normal case) is read lazily, one record at a time, with only the
//!   records of one instant held back (records with equal timestamps are ordered by customer
//!   and id before they leave the file);
//! - a file that is not sorted is read whole when its turn comes, sorted, and given out from
//!   memory. Only that file costs memory in proportion to its size;
//! - files are opened only when the merged stream reaches their earliest timestamp, so a
//!   directory of daily files has one or two open at a time, not all of them;
//! - a sorted file is read and typed on a thread of its own (up to [`MAX_THREADS`] at once),
//!   at most `BATCHES_AHEAD` × `BATCH` records ahead of the caller, so that reading runs
//!   beside whatever consumes the stream. Rejects and counts come with the records, so the
//!   stream's counters and order are the same as if read on the caller's thread.
//!
//! A binary heap merges the files' heads. Memory does not grow with history: it is a read
//! buffer and a few batches per open file, one instant's records per open file, and a
//! bounded cache of texts shared between records (product ids and names inside lists;
//! `TEXT_CAP`). Customer ids are not shared: a table of them per reading thread cost more
//! (a cache miss per record in a table of every customer) than an allocation per record.
//!
//! At one instant, records are in customer then id order whatever their kind: an
//! `identify` at the same second as its customer's first order may come after it.
//!
//! A customers table without `updated_at` holds traits "known for ever": its rows are given
//! the instant one second before the earliest timestamp of the whole data set (found by the
//! first pass; the Unix epoch when there is none), so that they come before every other
//! record without putting the engine's calendars at the year −262144. Being one instant,
//! such a table is held and sorted in memory at once.
//!
//! # Typing
//!
//! Values are typed by the schema: see [`TypeKind`]. Undeclared traits and properties are
//! ignored. A missing optional property is absent; a missing property with a default gets
//! the default (a literal); a missing required property rejects the record. An `identify`
//! trait that is `null` (or an empty cell in a customers table) becomes [`Value::Null`]: the
//! trait is missing from then on. Whole numbers are accepted where `text` is declared (ids
//! are often numbers) and become their decimal text; nothing else is converted silently.
//! In CSV every cell is text: `int`, `number`, `bool` (`true`/`false`/`1`/`0`/`yes`/`no`),
//! dates and the rest are parsed from it, an empty cell is missing, and a list or record
//! column holds JSON. Parquet columns may hold the native type or text (parsed as in CSV).
//!
//! Line numbers are 1-based physical lines (NDJSON, CSV: the line where the record starts;
//! line 1 is the CSV header) or 1-based rows (Parquet). A problem with a whole file (it
//! cannot be opened, a CSV header that is no table, a corrupt gzip stream or Parquet file)
//! is one reject at the line where reading stopped, and the rest of that file is skipped;
//! line 0 when it is not known (a reading thread that died). The Parquet reader is run
//! under `catch_unwind`, as some corrupt files make it panic.
//!
//! An NDJSON record is `track` when its `type` says so or, without `type`, when it has an
//! `event`; `identify` likewise with `traits`. Other types (`page`, `screen`, …) are
//! skipped and counted as `(page)`, `(screen)`. An empty `userId` is no user. A track of a
//! `catalog` event ignores its user. A numeric `userId` or `messageId` is its decimal text.

use std::borrow::Cow;
use std::cmp::{Ordering, Reverse};
use std::collections::binary_heap::PeekMut;
use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::fmt::{self, Write as _};
use std::fs::{self, File};

use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::reader::RowIter;
use parquet::record::{Field, Row};
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use smol_str::{format_smolstr, ToSmolStr};

use crate::ast::{self, ExprKind, Literal, UnaryOp};
use crate::fx::FxSet;
use crate::model;
use crate::types::{Ty, TypeKind};
use crate::value::{interned, Id, Names, Origin, Properties, Record, RecordKind, Reject, Value};

mod fast_json;

/// Where a file whose earliest timestamp is unknown sorts among the files to open: first.
const UNKNOWN_START: DateTime<Utc> = DateTime::<Utc>::MIN_UTC;

/// The instant of the rows of a customers table without `updated_at`: one second before
/// the earliest timestamp in the data set, or the Unix epoch when it has none.
fn forever(scans: &[Scan]) -> DateTime<Utc> {
    scans
        .iter()
        .filter_map(|s| s.first)
        .min()
        .and_then(|t| t.checked_sub_signed(chrono::TimeDelta::seconds(1)))
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// Largest read buffer per file.
const BUF_SIZE: usize = 256 * 1024;

// ---------------------------------------------------------------------------------------------
// The data set and its files

/// How a file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Ndjson { gz: bool },
    Csv { gz: bool },
    Parquet,
}

impl Format {
    /// By the file name; `None` for files that are not data.
    fn of(name: &str) -> Option<Format> {
        let lower = name.to_ascii_lowercase();
        let (base, gz) = match lower.strip_suffix(".gz") {
            Some(base) => (base, true),
            None => (lower.as_str(), false),
        };
        if base.ends_with(".ndjson") || base.ends_with(".jsonl") {
            Some(Format::Ndjson { gz })
        } else if base.ends_with(".csv") {
            Some(Format::Csv { gz })
        } else if base.ends_with(".parquet") && !gz {
            Some(Format::Parquet)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone)]
struct FileEntry {
    path: PathBuf,
    /// Relative to the data directory, with `/` between components.
    rel: &'static str,
    format: Format,
}

/// The data files of a directory, and the schema that types them.
#[derive(Debug, Clone)]
pub struct DataSet {
    root: PathBuf,
    paths: Vec<PathBuf>,
    files: Arc<[FileEntry]>,
    schema: Arc<Compiled>,
}

impl DataSet {
    /// Lists the data files below `dir` (recursively, sorted by relative path). `dir` may
    /// also be a single data file. An error if it does not exist or cannot be listed.
    pub fn open(dir: &Path, schema: &model::Schema) -> io::Result<DataSet> {
        let meta = fs::metadata(dir)?;
        let mut files = Vec::new();
        if meta.is_file() {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if let Some(format) = Format::of(&name) {
                files.push(FileEntry {
                    path: dir.to_path_buf(),
                    rel: interned(&name),
                    format,
                });
            }
        } else {
            let mut visited = HashSet::new();
            walk(dir, "", &mut files, &mut visited, 0)?;
            files.sort_by(|a, b| a.rel.cmp(b.rel));
        }
        Ok(DataSet {
            root: dir.to_path_buf(),
            paths: files.iter().map(|f| f.path.clone()).collect(),
            files: files.into(),
            schema: Arc::new(Compiled::new(schema)),
        })
    }

    /// The data files found, as paths under the directory given to [`DataSet::open`], in
    /// the order of their relative paths (the `file` of an [`Origin`]).
    pub fn files(&self) -> &[PathBuf] {
        &self.paths
    }

    /// The directory (or file) given to [`DataSet::open`].
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Time-ordered stream of records; rejects and skips are collected in the returned
    /// stream's counters. Nothing is read until the first call to `next`.
    pub fn records(&self) -> RecordStream {
        self.stream(true)
    }

    /// Like [`DataSet::records`], but without the first pass over NDJSON files: only each
    /// one's first timestamp is read beforehand, each is taken to be sorted by time, and
    /// the main pass checks that it is. When one is not, the stream ends early and
    /// [`RecordStream::unsorted`] names it: read again with [`DataSet::records`]. When
    /// none is, the records, rejects and counts are those of [`DataSet::records`], with one
    /// decompression and one walk of each line less. See [`DataSet::with_records`].
    pub fn records_unscanned(&self) -> RecordStream {
        self.stream(false)
    }

    /// Runs `consume` over [`DataSet::records_unscanned`], and again over
    /// [`DataSet::records`] when a file turns out not to be sorted: for a consumer whose
    /// result (or output it writes again from the start) depends only on the records.
    /// Returns the result and the stream it came from (for its rejects and counts), with
    /// the file that made it read again, if any.
    pub fn with_records<T>(
        &self,
        mut consume: impl FnMut(&mut RecordStream) -> T,
    ) -> (T, RecordStream, Option<&'static str>) {
        let mut stream = self.records_unscanned();
        let result = consume(&mut stream);
        let Some(unsorted) = stream.unsorted() else {
            return (result, stream, None);
        };
        drop((result, stream));
        let mut stream = self.records();
        let result = consume(&mut stream);
        (result, stream, Some(unsorted))
    }

    fn stream(&self, first_pass: bool) -> RecordStream {
        RecordStream {
            files: self.files.clone(),
            ctx: Ctx::new(self.schema.clone(), DateTime::<Utc>::UNIX_EPOCH),
            first_pass,
            started: false,
            finished: false,
            pending: Vec::new(),
            open: (0..self.files.len()).map(|_| None).collect(),
            heap: BinaryHeap::new(),
        }
    }
}

fn walk(
    dir: &Path,
    prefix: &str,
    out: &mut Vec<FileEntry>,
    visited: &mut HashSet<PathBuf>,
    depth: usize,
) -> io::Result<()> {
    // Symbolic links may loop; a directory is listed once, and nesting is bounded.
    if depth > 64 {
        return Ok(());
    }
    if let Ok(canonical) = dir.canonicalize() {
        if !visited.insert(canonical) {
            return Ok(());
        }
    }
    let mut entries: Vec<(String, PathBuf)> = fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    entries.sort();
    for (name, path) in entries {
        if name.starts_with('.') {
            continue;
        }
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        // Follows symbolic links; one that points nowhere is not data.
        let Ok(meta) = fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            // A subdirectory that cannot be listed is skipped, not fatal.
            let _ = walk(&path, &rel, out, visited, depth + 1);
        } else if let Some(format) = Format::of(&name) {
            out.push(FileEntry {
                path,
                rel: interned(&rel),
                format,
            });
        }
    }
    Ok(())
}

/// Write rejects as NDJSON lines: `{"file","line","reason","raw"}` — the rejects file.
pub fn write_rejects(path: &Path, rejects: &[Reject]) -> io::Result<()> {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        file: &'a str,
        line: u64,
        reason: &'a str,
        raw: &'a str,
    }
    let mut out = BufWriter::new(File::create(path)?);
    for r in rejects {
        let line = Line {
            file: r.origin.file,
            line: r.origin.line,
            reason: &r.reason,
            raw: &r.raw,
        };
        serde_json::to_writer(&mut out, &line).map_err(io::Error::other)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

// ---------------------------------------------------------------------------------------------
// The schema, compiled for reading

/// A type, with record field names ready to share.
#[derive(Debug, Clone)]
struct CTy {
    kind: Kind,
    optional: bool,
    /// For messages: "a number", "a list of records".
    ty: Ty,
}

#[derive(Debug, Clone)]
enum Kind {
    Text,
    Int,
    Number,
    Bool,
    Date,
    DateTime,
    Duration,
    Timezone,
    Time,
    List(Box<CTy>),
    /// Sorted by name.
    Record(Vec<(Arc<str>, CTy)>),
    /// `none` or unknown: taken as it comes.
    Any,
}

impl CTy {
    fn new(ty: &Ty) -> CTy {
        let kind = match &ty.kind {
            TypeKind::Text => Kind::Text,
            TypeKind::Int => Kind::Int,
            TypeKind::Number => Kind::Number,
            TypeKind::Bool => Kind::Bool,
            TypeKind::Date => Kind::Date,
            TypeKind::DateTime => Kind::DateTime,
            TypeKind::Duration => Kind::Duration,
            TypeKind::Timezone => Kind::Timezone,
            TypeKind::Time => Kind::Time,
            TypeKind::List(element) => Kind::List(Box::new(CTy::new(element))),
            TypeKind::Record(fields) => Kind::Record(
                fields
                    .iter()
                    .map(|(name, ty)| (Arc::from(name.as_str()), CTy::new(ty)))
                    .collect(),
            ),
            TypeKind::Null | TypeKind::Unknown => Kind::Any,
        };
        CTy {
            kind,
            optional: ty.optional,
            ty: ty.clone().required(),
        }
    }

    fn expected(&self) -> String {
        self.ty.describe()
    }
}

#[derive(Debug)]
struct FieldSpec {
    /// [`interned`]: a trait's name is carried by every identify record that sets it.
    name: &'static str,
    /// [`name_tag`] of `name`: most names are told apart by it, without comparing texts.
    tag: u64,
    /// The name as a JSON key is written before its value: `"name":`.
    quoted: Box<[u8]>,
    ty: CTy,
    default: Option<Value>,
}

#[derive(Debug)]
struct EventSpec {
    /// Its place in `Compiled::events`.
    index: usize,
    name: &'static str,
    source: Arc<str>,
    catalog: bool,
    /// Sorted by name.
    fields: Vec<FieldSpec>,
    /// The fields' names, shared by every record of this event: field `i` is slot `i`.
    names: Names,
}

#[derive(Debug)]
struct Compiled {
    events: Vec<EventSpec>,
    /// Each event's place in `events` by its name in the data, first of a name first, with
    /// the name's [`name_tag`]: most names are told apart by their tags.
    by_source: Vec<(u64, Arc<str>, usize)>,
    /// Sorted by name.
    traits: Vec<FieldSpec>,
}

fn find_field(fields: &[FieldSpec], name: &str) -> Option<usize> {
    let tag = name_tag(name);
    // Names of one length up to eight bytes are equal when their tags are.
    fields.iter().position(|f| {
        f.tag == tag && (f.name.len() == name.len() && name.len() <= 8 || f.name == name)
    })
}

/// A name's first eight bytes and its length, in one number: equal for equal names.
fn name_tag(name: &str) -> u64 {
    let bytes = name.as_bytes();
    let first = match bytes.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
        Some(first) => u64::from_le_bytes(first),
        None => bytes
            .iter()
            .rev()
            .fold(0, |tag, &b| (tag << 8) | u64::from(b)),
    };
    first ^ ((name.len() as u64) << 56)
}

impl Compiled {
    fn new(schema: &model::Schema) -> Compiled {
        let field = |f: &model::Field| {
            let ty = CTy::new(&f.ty);
            let default = f.default.as_ref().and_then(|e| literal_value(e, &ty));
            FieldSpec {
                name: interned(&f.name),
                tag: name_tag(&f.name),
                quoted: format!("{:?}:", f.name).into_bytes().into(),
                ty,
                default,
            }
        };
        let mut events = Vec::new();
        let mut by_source: Vec<(u64, Arc<str>, usize)> = Vec::new();
        for event in schema.events.values() {
            let mut fields: Vec<FieldSpec> = event.fields.values().map(field).collect();
            fields.sort_by(|a, b| a.name.cmp(b.name));
            if !by_source.iter().any(|(_, s, _)| **s == *event.source) {
                by_source.push((
                    name_tag(&event.source),
                    Arc::from(event.source.as_str()),
                    events.len(),
                ));
            }
            let names: Vec<&str> = fields.iter().map(|f| f.name).collect();
            let names = Properties::names_for(&names);
            // INVARIANT: the fields are sorted by name and unique, as `names_for` sorts.
            debug_assert!(
                names.len() == fields.len() && names.iter().zip(&fields).all(|(n, f)| *n == f.name)
            );
            events.push(EventSpec {
                index: events.len(),
                name: interned(&event.name),
                source: Arc::from(event.source.as_str()),
                catalog: event.catalog,
                names,
                fields,
            });
        }
        let mut traits: Vec<FieldSpec> = schema.traits.values().map(field).collect();
        traits.sort_by(|a, b| a.name.cmp(b.name));
        Compiled {
            events,
            by_source,
            traits,
        }
    }

    /// The declared event named `source` in the data.
    fn event(&self, source: &str) -> Option<&EventSpec> {
        let tag = name_tag(source);
        let (_, _, i) = self
            .by_source
            .iter()
            .find(|(t, s, _)| *t == tag && **s == *source)?;
        self.events.get(*i)
    }
}

/// A schema default, when it is a literal (the only defaults the data reader fills in).
fn literal_value(expr: &ast::Expr, ty: &CTy) -> Option<Value> {
    let value = match &expr.kind {
        ExprKind::Literal(lit) => match lit {
            Literal::Int(n) => Value::Int(*n),
            Literal::Float(x) => Value::Number(*x),
            Literal::Percent(p) => Value::Number(p / 100.0),
            Literal::Text(s) => Value::text(s),
            Literal::Bool(b) => Value::Bool(*b),
            Literal::None => Value::Null,
            Literal::Duration(d) => Value::Duration(i64::try_from(d.seconds()).unwrap_or(i64::MAX)),
            Literal::Date(d) => Value::Date(*d),
            Literal::DateTime(t) => Value::DateTime(t.with_timezone(&Utc)),
            Literal::Time(_) => return None,
        },
        ExprKind::Unary(UnaryOp::Neg, inner) => match literal_value(inner, ty)? {
            Value::Int(n) => Value::Int(n.checked_neg()?),
            Value::Number(x) => Value::Number(-x),
            Value::Duration(s) => Value::Duration(-s),
            _ => return None,
        },
        ExprKind::List(items) => {
            let element = match &ty.kind {
                Kind::List(element) => element.as_ref().clone(),
                _ => CTy::new(&Ty::unknown()),
            };
            let values: Option<Vec<Value>> =
                items.iter().map(|i| literal_value(i, &element)).collect();
            Value::List(values?.into())
        }
        _ => return None,
    };
    Some(match (value, &ty.kind) {
        (Value::Int(n), Kind::Number) => Value::Number(n as f64),
        (v, _) => v,
    })
}

/// Texts inside lists and records (product names in an order's `products`) repeat from
/// record to record: those too long to be held inline (see [`Id`]) are shared rather than
/// allocated each time. Bounded: past `TEXT_CAP` entries the cache starts again. Top-level
/// texts (order ids) are not cached.
#[derive(Default)]
struct TextCache(FxSet<Id>);

const TEXT_CAP: usize = 1 << 16;
const TEXT_MAX_LEN: usize = 64;

impl TextCache {
    fn get(&mut self, s: &str) -> Value {
        if s.len() <= Id::INLINE_CAP || s.len() > TEXT_MAX_LEN {
            return Value::text(s);
        }
        if let Some(t) = self.0.get(s) {
            return Value::Text(t.clone());
        }
        if self.0.len() >= TEXT_CAP {
            self.0.clear();
        }
        let text = Id::new(s);
        self.0.insert(text.clone());
        Value::Text(text)
    }
}

// ---------------------------------------------------------------------------------------------
// The stream

/// State shared by the readers of one stream.
struct Ctx {
    schema: Arc<Compiled>,
    texts: TextCache,
    /// Room for the property values of the line at hand, by slot (see `fast_json`).
    slots: Vec<Value>,
    /// The shape of the line before (see `fast_json::Shape`).
    shape: fast_json::Shape,
    /// The instant of customers table rows without `updated_at`.
    forever: DateTime<Utc>,
    rejects: Vec<Reject>,
    skipped: BTreeMap<String, u64>,
    read: u64,
    /// A file read without a first pass that turned out not to be sorted by time.
    unsorted: Option<&'static str>,
}

impl Ctx {
    fn new(schema: Arc<Compiled>, forever: DateTime<Utc>) -> Ctx {
        Ctx {
            schema,
            texts: TextCache::default(),
            slots: Vec::new(),
            shape: fast_json::Shape::default(),
            forever,
            rejects: Vec::new(),
            skipped: BTreeMap::new(),
            read: 0,
            unsorted: None,
        }
    }

    fn skip(&mut self, name: &str) {
        match self.skipped.get_mut(name) {
            Some(n) => *n += 1,
            None => {
                self.skipped.insert(name.to_string(), 1);
            }
        }
    }

    fn reject(&mut self, file: &'static str, line: u64, reason: String, raw: String) {
        self.rejects.push(Reject {
            origin: Origin { file, line },
            reason,
            raw,
        });
    }
}

/// A head of one file, in the merge.
struct Head {
    record: Record,
    file: usize,
}

impl Head {
    fn key(&self) -> (DateTime<Utc>, Option<&str>, u8, &str, usize, u64) {
        let (at, customer, kind, id) = self.record.order_key();
        (at, customer, kind, id, self.file, self.record.origin.line)
    }
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// What the first pass learnt about a file.
#[derive(Debug, Clone, Copy)]
struct Scan {
    sorted: bool,
    /// The earliest timestamp; `None` when there is none or it is unknown (the file opens
    /// at once).
    first: Option<DateTime<Utc>>,
    /// Only the file's first timestamp was read, and it is taken to be sorted: the main
    /// pass checks that it is (see [`DataSet::records_unscanned`]).
    assumed: bool,
}

impl Scan {
    /// Nothing known (no timestamp, or the scan failed): the main pass reads the file in
    /// order, from the start, and reports what it finds.
    const UNKNOWN: Scan = Scan {
        sorted: true,
        first: None,
        assumed: false,
    };
}

/// Every record of a data set in [`Record::order_key`] order. See the module documentation
/// for how files are read and what stays in memory.
pub struct RecordStream {
    files: Arc<[FileEntry]>,
    ctx: Ctx,
    /// Whether NDJSON files get a whole first pass, or only their first timestamp is read
    /// ([`DataSet::records_unscanned`]).
    first_pass: bool,
    started: bool,
    finished: bool,
    /// Files not yet opened: (earliest timestamp, index, what the first pass found),
    /// latest first.
    pending: Vec<(DateTime<Utc>, usize, Scan)>,
    open: Vec<Option<FileStream>>,
    heap: BinaryHeap<Reverse<Head>>,
}

impl RecordStream {
    /// Rejects collected so far; in file and line order once the stream is done.
    pub fn rejects(&self) -> &[Reject] {
        &self.ctx.rejects
    }

    /// The rejects collected so far, in file and line order, leaving none.
    pub fn take_rejects(&mut self) -> Vec<Reject> {
        let mut rejects = std::mem::take(&mut self.ctx.rejects);
        rejects.sort_by(|a, b| a.origin.cmp(&b.origin));
        rejects
    }

    /// Undeclared event source names → how many records were skipped. Records of another
    /// `type` than `identify` and `track` count under `(type)`, e.g. `(page)`.
    pub fn skipped(&self) -> &BTreeMap<String, u64> {
        &self.ctx.skipped
    }

    /// Records read so far: accepted, rejected and skipped (blank lines are not records).
    pub fn read_count(&self) -> u64 {
        self.ctx.read
    }

    /// A file that was read without a first pass ([`DataSet::records_unscanned`]) and
    /// turned out not to be sorted by time. The stream ended there: what it gave is
    /// neither every record nor in order, and the data must be read again with
    /// [`DataSet::records`].
    pub fn unsorted(&self) -> Option<&'static str> {
        self.ctx.unsorted
    }

    fn start(&mut self) {
        self.started = true;
        let scans = scan_all(&self.files, self.first_pass);
        self.ctx.forever = forever(&scans);
        let mut pending: Vec<(DateTime<Utc>, usize, Scan)> = scans
            .iter()
            .enumerate()
            .map(|(i, s)| (s.first.unwrap_or(UNKNOWN_START), i, *s))
            .collect();
        pending.sort_by_key(|p| Reverse((p.0, p.1)));
        self.pending = pending;
    }

    /// Opens the next pending file and puts its first record in the heap.
    fn open_next(&mut self) {
        let Some((_, index, scan)) = self.pending.pop() else {
            return;
        };
        let Some(entry) = self.files.get(index).cloned() else {
            return;
        };
        let threads = self
            .open
            .iter()
            .flatten()
            .filter(|s| s.source.is_thread())
            .count();
        let mut stream = FileStream::open(&entry, scan, threads < MAX_THREADS, &mut self.ctx);
        match stream.next(&mut self.ctx) {
            Some(record) => {
                self.heap.push(Reverse(Head {
                    record,
                    file: index,
                }));
                if let Some(slot) = self.open.get_mut(index) {
                    *slot = Some(stream);
                }
            }
            None => drop(stream),
        }
    }

    fn finish(&mut self) {
        if !self.finished {
            self.finished = true;
            self.ctx.rejects.sort_by(|a, b| a.origin.cmp(&b.origin));
        }
    }
}

impl Iterator for RecordStream {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        if !self.started {
            self.start();
        }
        if self.ctx.unsorted.is_some() {
            // What follows would be out of order: the caller reads again from the start.
            self.finish();
            return None;
        }
        loop {
            let due = self.pending.last().map(|p| p.0);
            let top = self.heap.peek().map(|h| h.0.record.at);
            match (due, top) {
                (Some(due), Some(top)) if due <= top => self.open_next(),
                (Some(_), None) => self.open_next(),
                (None, None) => {
                    self.finish();
                    return None;
                }
                _ => break,
            }
        }
        // The head's file gives the next record in its place, when it has one: one sift
        // of the heap instead of a pop and a push, and no move of the heads between.
        let mut top = self.heap.peek_mut()?;
        let Some(slot) = self.open.get_mut(top.0.file) else {
            return Some(PeekMut::pop(top).0.record);
        };
        match slot.as_mut().and_then(|stream| stream.next(&mut self.ctx)) {
            Some(record) => Some(std::mem::replace(&mut top.0.record, record)),
            None => {
                *slot = None;
                Some(PeekMut::pop(top).0.record)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One file, in order

// One per file: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Mode {
    /// Sorted by time: read as needed; `group` holds the rest of one instant, last first.
    Streaming {
        group: Vec<Record>,
        peek: Option<Record>,
    },
    /// Read whole and sorted, last first.
    Loaded(Vec<Record>),
}

struct FileStream {
    source: Reader,
    mode: Mode,
}

/// Records per batch from a reading thread, and batches it may have ready ahead.
const BATCH: usize = 1024;
const BATCHES_AHEAD: usize = 4;

/// Files read on threads of their own at once, at most; more are read on the caller's.
pub const MAX_THREADS: usize = 8;

/// What a reading thread hands over: records, and what reading them found.
struct Batch {
    records: Vec<Record>,
    rejects: Vec<Reject>,
    skipped: BTreeMap<String, u64>,
    read: u64,
    /// The file turned out not to be sorted (see [`Ctx::unsorted`]).
    unsorted: bool,
    /// The last batch of the file.
    done: bool,
}

/// A file's records in file order, read here or on a thread of its own.
enum Reader {
    Here(Source),
    Thread(Worker),
}

struct Worker {
    rel: &'static str,
    batches: std::sync::mpsc::Receiver<Batch>,
    current: std::vec::IntoIter<Record>,
    done: bool,
}

impl Reader {
    fn here(entry: &FileEntry, check_order: bool, ctx: &mut Ctx) -> Reader {
        Reader::Here(Source::open(entry, check_order, ctx))
    }

    /// Reads and types the file on a thread, up to `BATCHES_AHEAD` batches ahead of the
    /// caller; the thread stops when the file ends or the reader is dropped.
    fn thread(
        entry: &FileEntry,
        check_order: bool,
        schema: Arc<Compiled>,
        forever: DateTime<Utc>,
    ) -> io::Result<Reader> {
        let (sender, batches) = std::sync::mpsc::sync_channel(BATCHES_AHEAD);
        let thread_entry = entry.clone();
        std::thread::Builder::new()
            .name(format!("moments-data {}", entry.rel))
            .spawn(move || {
                let mut ctx = Ctx::new(schema, forever);
                let mut source = Source::open(&thread_entry, check_order, &mut ctx);
                loop {
                    let mut records = Vec::with_capacity(BATCH);
                    let mut done = false;
                    while records.len() < BATCH {
                        match source.next(&mut ctx) {
                            Some(r) => records.push(r),
                            None => {
                                done = true;
                                break;
                            }
                        }
                    }
                    let batch = Batch {
                        records,
                        rejects: std::mem::take(&mut ctx.rejects),
                        skipped: std::mem::take(&mut ctx.skipped),
                        read: std::mem::take(&mut ctx.read),
                        unsorted: ctx.unsorted.is_some(),
                        done,
                    };
                    if sender.send(batch).is_err() || done {
                        break;
                    }
                }
            })?;
        Ok(Reader::Thread(Worker {
            rel: entry.rel,
            batches,
            current: Vec::new().into_iter(),
            done: false,
        }))
    }

    fn is_thread(&self) -> bool {
        matches!(self, Reader::Thread(_))
    }

    fn next(&mut self, ctx: &mut Ctx) -> Option<Record> {
        match self {
            Reader::Here(source) => source.next(ctx),
            Reader::Thread(w) => loop {
                if let Some(r) = w.current.next() {
                    return Some(r);
                }
                if w.done {
                    return None;
                }
                match w.batches.recv() {
                    Ok(batch) => {
                        ctx.rejects.extend(batch.rejects);
                        for (name, n) in batch.skipped {
                            *ctx.skipped.entry(name).or_insert(0) += n;
                        }
                        ctx.read += batch.read;
                        if batch.unsorted {
                            ctx.unsorted = Some(w.rel);
                        }
                        w.done = batch.done;
                        w.current = batch.records.into_iter();
                    }
                    Err(_) => {
                        // The thread ended without its last batch: it failed.
                        w.done = true;
                        ctx.reject(
                            w.rel,
                            0,
                            "reading the file stopped unexpectedly; the rest of the file is skipped"
                                .to_string(),
                            String::new(),
                        );
                        return None;
                    }
                }
            },
        }
    }
}

fn by_key(a: &Record, b: &Record) -> Ordering {
    a.order_key()
        .cmp(&b.order_key())
        .then(a.origin.line.cmp(&b.origin.line))
}

impl FileStream {
    /// A sorted file on a thread of its own when `threaded` (and a thread can be had).
    fn open(entry: &FileEntry, scan: Scan, threaded: bool, ctx: &mut Ctx) -> FileStream {
        let check = scan.assumed;
        let mut source = if scan.sorted && threaded {
            Reader::thread(entry, check, ctx.schema.clone(), ctx.forever)
                .unwrap_or_else(|_| Reader::here(entry, check, ctx))
        } else {
            Reader::here(entry, check, ctx)
        };
        let mode = if scan.sorted {
            Mode::Streaming {
                group: Vec::new(),
                peek: None,
            }
        } else {
            let mut all = Vec::new();
            while let Some(r) = source.next(ctx) {
                all.push(r);
            }
            all.sort_by(|a, b| by_key(b, a));
            Mode::Loaded(all)
        };
        FileStream { source, mode }
    }

    fn next(&mut self, ctx: &mut Ctx) -> Option<Record> {
        match &mut self.mode {
            Mode::Loaded(all) => all.pop(),
            Mode::Streaming { group, peek } => {
                if let Some(r) = group.pop() {
                    return Some(r);
                }
                let first = match peek.take() {
                    Some(r) => r,
                    None => self.source.next(ctx)?,
                };
                let at = first.at;
                group.push(first);
                let mut backwards = None;
                while let Some(r) = self.source.next(ctx) {
                    match r.at.cmp(&at) {
                        Ordering::Equal => group.push(r),
                        Ordering::Greater => {
                            *peek = Some(r);
                            break;
                        }
                        Ordering::Less => {
                            backwards = Some(r);
                            break;
                        }
                    }
                }
                if let Some(r) = backwards {
                    // The first pass said sorted, but it is not: load the rest (best effort;
                    // does not happen when both passes read the same timestamps).
                    let mut all = std::mem::take(group);
                    all.push(r);
                    all.extend(peek.take());
                    while let Some(r) = self.source.next(ctx) {
                        all.push(r);
                    }
                    all.sort_by(|a, b| by_key(b, a));
                    let next = all.pop();
                    self.mode = Mode::Loaded(all);
                    return next;
                }
                if group.len() > 1 {
                    group.sort_by(|a, b| by_key(b, a));
                }
                group.pop()
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sources: records of one file, in file order

enum Source {
    Ndjson(NdjsonSource),
    Csv(Box<CsvSource>),
    Parquet(Box<ParquetSource>),
    Done,
}

/// The bytes of a file, decompressed when it is gzip (any number of members).
fn open_raw(path: &Path, gz: bool) -> io::Result<Box<dyn Read + Send>> {
    let file = File::open(path)?;
    Ok(if gz {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(
            64 * 1024,
            file,
        )))
    } else {
        Box::new(file)
    })
}

fn open_reader(path: &Path, gz: bool) -> io::Result<Box<dyn BufRead + Send>> {
    Ok(Box::new(BufReader::with_capacity(
        BUF_SIZE,
        open_raw(path, gz)?,
    )))
}

impl Source {
    /// With `check_order`, an NDJSON file's timestamps are checked to be sorted as the
    /// first pass would see them (see [`DataSet::records_unscanned`]).
    fn open(entry: &FileEntry, check_order: bool, ctx: &mut Ctx) -> Source {
        let rel = entry.rel;
        match entry.format {
            Format::Ndjson { gz } => match open_raw(&entry.path, gz) {
                Ok(reader) => Source::Ndjson(NdjsonSource {
                    rel,
                    lines: Lines::new(reader),
                    line: 0,
                    order: check_order.then(Tracker::new),
                }),
                Err(e) => {
                    ctx.reject(
                        rel,
                        1,
                        format!("the file cannot be read: {e}"),
                        String::new(),
                    );
                    Source::Done
                }
            },
            Format::Csv { gz } => match open_reader(&entry.path, gz) {
                Ok(reader) => match CsvSource::new(rel, reader, ctx) {
                    Some(s) => Source::Csv(Box::new(s)),
                    None => Source::Done,
                },
                Err(e) => {
                    ctx.reject(
                        rel,
                        1,
                        format!("the file cannot be read: {e}"),
                        String::new(),
                    );
                    Source::Done
                }
            },
            Format::Parquet => match ParquetSource::new(rel, &entry.path, &ctx.schema) {
                Ok(s) => Source::Parquet(Box::new(s)),
                Err(reason) => {
                    ctx.reject(rel, 1, reason, String::new());
                    Source::Done
                }
            },
        }
    }

    fn next(&mut self, ctx: &mut Ctx) -> Option<Record> {
        let record = match self {
            Source::Ndjson(s) => s.next(ctx),
            Source::Csv(s) => s.next(ctx),
            Source::Parquet(s) => s.next(ctx),
            Source::Done => None,
        };
        if record.is_none() {
            *self = Source::Done;
        }
        record
    }
}

/// What one line gave.
enum Outcome {
    Record(Record),
    Reject(String),
    Skip,
}

// ---------------------------------------------------------------------------------------------
// NDJSON

struct NdjsonSource {
    rel: &'static str,
    lines: Lines,
    line: u64,
    /// The file's timestamps so far, when the main pass checks that it is sorted.
    order: Option<Tracker>,
}

/// Longest line read; a longer one is rejected and skipped.
const MAX_LINE: usize = 64 * 1024 * 1024;

/// Lines of a byte stream, handed out from one reused buffer without copying.
struct Lines {
    inner: Box<dyn Read + Send>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

/// One line: its bytes (without the line end), and whether it was cut at [`MAX_LINE`].
struct Line<'a> {
    bytes: &'a [u8],
    too_long: bool,
}

impl Lines {
    fn new(inner: Box<dyn Read + Send>) -> Lines {
        Lines {
            inner,
            buf: vec![0; BUF_SIZE],
            start: 0,
            end: 0,
            eof: false,
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The next line, `None` at the end. After an error the stream is unusable.
    fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        // Bytes from `start` already known to hold no line end.
        let mut searched = 0;
        let mut too_long = false;
        let (from, to) = loop {
            let window = self
                .buf
                .get(self.start + searched..self.end)
                .unwrap_or_default();
            if let Some(i) = memchr::memchr(b'\n', window) {
                let newline = self.start + searched + i;
                let from = self.start;
                self.start = newline + 1;
                break (from, newline);
            }
            searched = self.end - self.start;
            if self.eof {
                if searched == 0 {
                    return Ok(None);
                }
                let from = self.start;
                self.start = self.end;
                break (from, self.end);
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                if self.buf.len() >= MAX_LINE {
                    // Keep the start of the line for the reject, drop the rest of it.
                    too_long = true;
                    let keep = 1024.min(self.end);
                    loop {
                        self.end = keep;
                        self.fill()?;
                        if self.eof {
                            self.start = self.end;
                            break;
                        }
                        let read = self.buf.get(keep..self.end).unwrap_or_default();
                        if let Some(i) = memchr::memchr(b'\n', read) {
                            self.start = keep + i + 1;
                            break;
                        }
                    }
                    break (0, keep);
                }
                let grown = (self.buf.len() * 2).min(MAX_LINE);
                self.buf.resize(grown, 0);
            }
            self.fill()?;
        };
        let mut bytes = self.buf.get(from..to).unwrap_or_default();
        if let [rest @ .., b'\r'] = bytes {
            bytes = rest;
        }
        Ok(Some(Line { bytes, too_long }))
    }
}

fn trim_line(buf: &[u8]) -> &[u8] {
    let mut end = buf.len();
    while end > 0 && matches!(buf[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    &buf[..end]
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

impl NdjsonSource {
    fn next(&mut self, ctx: &mut Ctx) -> Option<Record> {
        loop {
            let line = match self.lines.next_line() {
                Ok(Some(line)) => line,
                Ok(None) => return None,
                Err(e) => {
                    ctx.reject(
                        self.rel,
                        self.line + 1,
                        format!(
                            "the file cannot be read after line {}: {e}; the rest of the file is skipped",
                            self.line
                        ),
                        String::new(),
                    );
                    return None;
                }
            };
            self.line += 1;
            let mut bytes = line.bytes;
            if self.line == 1 {
                bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
            }
            if is_blank(bytes) {
                continue;
            }
            ctx.read += 1;
            let outcome = if line.too_long {
                Outcome::Reject(format!(
                    "the line is longer than {} MiB",
                    MAX_LINE / 1024 / 1024
                ))
            } else {
                ndjson_record(bytes, self.rel, self.line, ctx)
            };
            if let Some(order) = &mut self.order {
                // INVARIANT: the timestamps seen include every one the first pass would
                // see (`line_timestamp` of each line; a record's own is the same), so a
                // file that passes this check is one the first pass finds sorted, with
                // the same first timestamp. A few more may be seen (a timestamp with an
                // escape, a first line after a byte order mark), which can only fail
                // the check, and then the data is read again with the first pass.
                let at = match &outcome {
                    Outcome::Record(r) => Some(r.at),
                    _ => line_timestamp(line.bytes),
                };
                if let Some(at) = at {
                    order.see(at);
                    if !order.sorted {
                        // The stream ends here; the rest need not be read.
                        ctx.unsorted = Some(self.rel);
                        return None;
                    }
                }
            }
            match outcome {
                Outcome::Record(r) => return Some(r),
                Outcome::Skip => {}
                Outcome::Reject(reason) => {
                    let raw = String::from_utf8_lossy(bytes).into_owned();
                    ctx.reject(self.rel, self.line, reason, raw);
                }
            }
        }
    }
}

/// One line, whole: a top-level object and nothing after it.
fn parse_line<'de, R: serde_json::de::Read<'de>>(
    mut de: serde_json::Deserializer<R>,
    seed: TopSeed<'_>,
) -> serde_json::Result<Top<'de>> {
    let top = de::DeserializeSeed::deserialize(seed, &mut de)?;
    de.end()?;
    Ok(top)
}

/// Turns one NDJSON line into a record: the usual line by the fast path, any other (and
/// every reject) the long way.
fn ndjson_record(line: &[u8], rel: &'static str, number: u64, ctx: &mut Ctx) -> Outcome {
    // Checked once for the whole line, so the parser does not check each string again.
    if let Ok(text) = std::str::from_utf8(line) {
        let (schema, texts, slots) = (&ctx.schema, &mut ctx.texts, &mut ctx.slots);
        let shape = &mut ctx.shape;
        if let Some(record) = fast_json::record(text, rel, number, schema, texts, slots, shape) {
            debug_assert!(
                matches!(slow_record(line, rel, number, ctx), Outcome::Record(r) if r == record),
                "the fast path read {text} otherwise"
            );
            return Outcome::Record(record);
        }
    }
    slow_record(line, rel, number, ctx)
}

/// Turns one NDJSON line into a record through serde_json, which words what is wrong.
fn slow_record(line: &[u8], rel: &'static str, number: u64, ctx: &mut Ctx) -> Outcome {
    let schema = ctx.schema.clone();
    let seed = |texts| TopSeed {
        schema: &schema,
        texts,
    };
    let parsed = match std::str::from_utf8(line) {
        Ok(text) => parse_line(
            serde_json::Deserializer::from_str(text),
            seed(&mut ctx.texts),
        ),
        // The parser says where the bad byte is.
        Err(_) => parse_line(
            serde_json::Deserializer::from_slice(line),
            seed(&mut ctx.texts),
        ),
    };
    let top = match parsed {
        Ok(top) => top,
        Err(e) => return Outcome::Reject(format!("bad JSON: {e}")),
    };
    if let Some(key) = top.duplicate {
        return Outcome::Reject(format!("`{key}` appears twice"));
    }
    let track = match top.ty.as_ref() {
        Some(J::Str(t)) => match t.as_ref() {
            "track" => true,
            "identify" => false,
            other => {
                ctx.skip(&format!("({other})"));
                return Outcome::Skip;
            }
        },
        Some(J::Null) | None if top.event.is_some() => true,
        Some(J::Null) | None if !matches!(top.traits, Fields::Absent) => false,
        Some(J::Null) | None => {
            return Outcome::Reject(
                "`type` is missing (expected \"identify\" or \"track\")".to_string(),
            )
        }
        Some(other) => {
            return Outcome::Reject(format!(
                "`type` is {}, expected \"identify\" or \"track\"",
                describe_json(other)
            ))
        }
    };
    let event = if track {
        let name = match &top.event {
            Some(J::Str(name)) if !name.is_empty() => name,
            Some(J::Null) | None => {
                return Outcome::Reject("a `track` without `event`".to_string());
            }
            Some(other) => {
                return Outcome::Reject(format!(
                    "`event` is {}, expected text",
                    describe_json(other)
                ));
            }
        };
        match schema.event(name) {
            Some(e) => Some(e),
            None => {
                ctx.skip(name);
                return Outcome::Skip;
            }
        }
    } else {
        None
    };
    let user = match id_text(top.user_id.as_ref()) {
        Ok(user) => user,
        Err(found) => return Outcome::Reject(format!("`userId` is {found}, expected text")),
    };
    let at = match &top.timestamp {
        Some(J::Str(t)) => match parse_timestamp(t) {
            Some(at) => at,
            None => {
                return Outcome::Reject(format!(
                    "`timestamp` is text {}, not an RFC 3339 date and time",
                    quote(t)
                ))
            }
        },
        Some(J::Null) | None => return Outcome::Reject("`timestamp` is missing".to_string()),
        Some(other) => {
            return Outcome::Reject(format!(
                "`timestamp` is {}, not an RFC 3339 date and time",
                describe_json(other)
            ))
        }
    };
    let id = match id_text(top.message_id.as_ref()) {
        Ok(Some(id)) => Id::new(id),
        Ok(None) => format_smolstr!("{rel}:{number}"),
        Err(found) => return Outcome::Reject(format!("`messageId` is {found}, expected text")),
    };
    let origin = Origin {
        file: rel,
        line: number,
    };
    match event {
        Some(event) => {
            let customer = if event.catalog {
                None
            } else {
                match user {
                    Some(u) => Some(Id::new(u)),
                    None => return Outcome::Reject(format!("`{}` needs a `userId`", event.source)),
                }
            };
            let given = match top.properties {
                Fields::Raw(j) => typed_fields(&j, &event.fields, "properties", ""),
                other => other,
            };
            let mut properties = Properties::absent(event.names);
            match given {
                Fields::Typed(values) => {
                    for (i, v) in values {
                        properties.set_slot(i, v);
                    }
                }
                Fields::Bad(reason) => return Outcome::Reject(reason),
                Fields::Absent | Fields::Raw(_) => {}
            }
            if let Err(reason) = complete(&mut properties, event) {
                return Outcome::Reject(reason);
            }
            Outcome::Record(Record {
                at,
                customer,
                id,
                kind: RecordKind::Event {
                    event: event.name,
                    properties,
                },
                origin,
            })
        }
        None => {
            let Some(user) = user else {
                return Outcome::Reject("an `identify` needs a `userId`".to_string());
            };
            let traits = match top.traits {
                Fields::Typed(values) => values,
                Fields::Bad(reason) => return Outcome::Reject(reason),
                Fields::Absent | Fields::Raw(_) => Vec::new(),
            };
            let customer = Some(Id::new(user));
            Outcome::Record(Record {
                at,
                customer,
                id,
                kind: RecordKind::Identify {
                    traits: named_traits(traits, &schema.traits),
                },
                origin,
            })
        }
    }
}

/// Traits by schema index, in schema order, the last of each name kept.
fn named_traits(
    mut traits: Vec<(usize, Value)>,
    specs: &[FieldSpec],
) -> Vec<(&'static str, Value)> {
    traits.reverse();
    traits.sort_by_key(|t| t.0);
    traits.dedup_by_key(|t| t.0);
    traits
        .into_iter()
        .filter_map(|(i, v)| specs.get(i).map(|s| (s.name, v)))
        .collect()
}

/// Fills defaults in and checks that every required property is there.
fn complete(properties: &mut Properties, event: &EventSpec) -> Result<(), String> {
    for (slot, field) in event.fields.iter().enumerate() {
        if !properties.slot(slot).is_null() {
            continue;
        }
        match &field.default {
            Some(Value::Null) => {}
            Some(v) => properties.set_slot(slot, v.clone()),
            None if field.ty.optional => {}
            None => return Err(format!("`{}` is missing", field.name)),
        }
    }
    Ok(())
}

/// An id given as text or a whole number; `Err` describes anything else.
fn id_text<'a>(j: Option<&'a J<'a>>) -> Result<Option<Cow<'a, str>>, String> {
    match j {
        None | Some(J::Null) => Ok(None),
        Some(J::Str(s)) if s.is_empty() => Ok(None),
        Some(J::Str(s)) => Ok(Some(Cow::Borrowed(s.as_ref()))),
        Some(J::Int(n)) => Ok(Some(Cow::Owned(n.to_string()))),
        Some(J::UInt(n)) => Ok(Some(Cow::Owned(n.to_string()))),
        Some(other) => Err(describe_json(other)),
    }
}

// ---------------------------------------------------------------------------------------------
// JSON, borrowed from the line

/// A JSON value whose strings borrow from the input where they can.
#[derive(Debug, Clone, PartialEq)]
enum J<'a> {
    Null,
    Bool(bool),
    Int(i64),
    /// Above `i64::MAX`.
    UInt(u64),
    Float(f64),
    Str(Cow<'a, str>),
    Arr(Vec<J<'a>>),
    Obj(Vec<(Cow<'a, str>, J<'a>)>),
}

/// A string, borrowed when it has no escapes.
struct Str<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

struct JVisitor;

impl<'de> Visitor<'de> for JVisitor {
    type Value = J<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<J<'de>, E> {
        Ok(J::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<J<'de>, E> {
        Ok(J::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<J<'de>, E> {
        Ok(match i64::try_from(v) {
            Ok(n) => J::Int(n),
            Err(_) => J::UInt(v),
        })
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<J<'de>, E> {
        Ok(J::Float(v))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<J<'de>, E> {
        Ok(J::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<J<'de>, E> {
        Ok(J::Str(Cow::Owned(v.to_string())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<J<'de>, E> {
        Ok(J::Str(Cow::Owned(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<J<'de>, E> {
        Ok(J::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<J<'de>, E> {
        Ok(J::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<J<'de>, D::Error> {
        J::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<J<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(J::Arr(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<J<'de>, A::Error> {
        let mut items = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some(Str(key)) = map.next_key()? {
            let value: J = map.next_value()?;
            items.push((key, value));
        }
        Ok(J::Obj(items))
    }
}

impl<'de> Deserialize<'de> for J<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JVisitor)
    }
}

/// The top level of an NDJSON record: only the keys the reader uses are kept.
#[derive(Debug, Default, PartialEq)]
struct Top<'a> {
    ty: Option<J<'a>>,
    user_id: Option<J<'a>>,
    event: Option<J<'a>>,
    timestamp: Option<J<'a>>,
    message_id: Option<J<'a>>,
    properties: Fields<'a>,
    traits: Fields<'a>,
    /// A key the reader uses that appears twice.
    duplicate: Option<&'static str>,
}

/// Properties or traits as read.
#[derive(Debug, Default, PartialEq)]
enum Fields<'a> {
    /// Missing or `null`.
    #[default]
    Absent,
    /// Properties read before the record said which event it is; typed afterwards.
    Raw(J<'a>),
    /// (field index, value) in the order given; `Value::Null` for `null`.
    Typed(Vec<(usize, Value)>),
    /// The first value that does not fit: the reason.
    Bad(String),
}

/// Reads the top level with the schema at hand, so that properties are typed as they are
/// read (when `event` comes before `properties`, as pipelines write it) and undeclared
/// ones are skipped without building anything.
struct TopSeed<'s> {
    schema: &'s Compiled,
    texts: &'s mut TextCache,
}

impl<'de> de::DeserializeSeed<'de> for TopSeed<'_> {
    type Value = Top<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Top<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TopSeed<'_> {
    type Value = Top<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top<'de>, A::Error> {
        let mut top = Top::default();
        // The declared event, once `event` has been read: `Some(None)` when undeclared.
        let mut event: Option<Option<&EventSpec>> = None;
        while let Some(Str(key)) = map.next_key()? {
            let (slot, name) = match key.as_ref() {
                "type" => (&mut top.ty, "type"),
                "userId" => (&mut top.user_id, "userId"),
                "event" => (&mut top.event, "event"),
                "timestamp" => (&mut top.timestamp, "timestamp"),
                "messageId" => (&mut top.message_id, "messageId"),
                "properties" => {
                    top.properties = match event {
                        Some(Some(spec)) => map.next_value_seed(FieldsSeed {
                            texts: &mut *self.texts,
                            fields: &spec.fields,
                            what: "properties",
                            prefix: "",
                        })?,
                        Some(None) => {
                            map.next_value::<IgnoredAny>()?;
                            Fields::Absent
                        }
                        None => Fields::Raw(map.next_value()?),
                    };
                    continue;
                }
                "traits" => {
                    top.traits = map.next_value_seed(FieldsSeed {
                        texts: &mut *self.texts,
                        fields: &self.schema.traits,
                        what: "traits",
                        prefix: "trait ",
                    })?;
                    continue;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if slot.is_some() {
                top.duplicate = Some(name);
            }
            let value: J = map.next_value()?;
            if name == "event" {
                event = match &value {
                    J::Str(source) => Some(self.schema.event(source)),
                    _ => None,
                };
            }
            *slot = Some(value);
        }
        Ok(top)
    }
}

/// Types the fields of an object as it is read.
struct FieldsSeed<'s> {
    texts: &'s mut TextCache,
    fields: &'s [FieldSpec],
    /// "properties" or "traits", for messages.
    what: &'static str,
    /// "" or "trait ", before a field's name in messages.
    prefix: &'static str,
}

impl FieldsSeed<'_> {
    fn not_an_object(&self, found: &str) -> Fields<'static> {
        Fields::Bad(format!("`{}` is {found}, expected an object", self.what))
    }
}

impl<'de> de::DeserializeSeed<'de> for FieldsSeed<'_> {
    type Value = Fields<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Fields<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FieldsSeed<'_> {
    type Value = Fields<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
        let mut values = Vec::new();
        let mut bad = None;
        while let Some(Str(key)) = map.next_key()? {
            let Some(i) = find_field(self.fields, &key) else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let field = &self.fields[i];
            let value = map.next_value_seed(TypedSeed {
                ty: &field.ty,
                null_ok: true,
                share: false,
                cache: &mut *self.texts,
            })?;
            if bad.is_some() {
                continue;
            }
            match value {
                Ok(v) => values.push((i, v)),
                Err(e) => bad = Some(e.reason(field.name, self.prefix)),
            }
        }
        Ok(match bad {
            Some(reason) => Fields::Bad(reason),
            None => Fields::Typed(values),
        })
    }
    fn visit_unit<E: de::Error>(self) -> Result<Fields<'de>, E> {
        Ok(Fields::Absent)
    }
    fn visit_none<E: de::Error>(self) -> Result<Fields<'de>, E> {
        Ok(Fields::Absent)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Fields<'de>, E> {
        Ok(self.not_an_object(&v.to_string()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Fields<'de>, E> {
        Ok(self.not_an_object(&format!("the number {v}")))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Fields<'de>, E> {
        Ok(self.not_an_object(&format!("the number {v}")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Fields<'de>, E> {
        Ok(self.not_an_object(&format!("the number {v}")))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Fields<'de>, E> {
        Ok(self.not_an_object(&format!("text {}", quote(v))))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Fields<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(self.not_an_object("a list"))
    }
}

/// Reads one value straight into its declared type, as [`from_json`] would type it, with no
/// JSON tree in between. A value that does not fit is `Ok(Err(..))`: the rest of the line is
/// still read, so that bad JSON further on is reported as such.
struct TypedSeed<'t> {
    ty: &'t CTy,
    /// `null` is `Value::Null` whatever the type (a property or trait: missing).
    null_ok: bool,
    /// Whether texts are shared through `cache`: inside lists and records, not at the top.
    share: bool,
    cache: &'t mut TextCache,
}

type Typed = Result<Value, ConvErr>;

impl TypedSeed<'_> {
    fn bad(&self, found: String) -> Typed {
        Err(ConvErr::new(found, self.ty))
    }
    fn int(&self, n: i64) -> Typed {
        Ok(match self.ty.kind {
            Kind::Int | Kind::Any => Value::Int(n),
            Kind::Number => Value::Number(n as f64),
            Kind::Text => Value::Text(n.to_smolstr()),
            Kind::Duration => Value::Duration(n),
            _ => return self.bad(format!("the number {n}")),
        })
    }
}

impl<'de> de::DeserializeSeed<'de> for TypedSeed<'_> {
    type Value = Typed;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Typed, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TypedSeed<'_> {
    type Value = Typed;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Typed, E> {
        Ok(
            if self.null_ok || self.ty.optional || matches!(self.ty.kind, Kind::Any) {
                Ok(Value::Null)
            } else {
                Err(ConvErr::missing())
            },
        )
    }
    fn visit_none<E: de::Error>(self) -> Result<Typed, E> {
        self.visit_unit()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Typed, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Typed, E> {
        Ok(match self.ty.kind {
            Kind::Bool | Kind::Any => Ok(Value::Bool(v)),
            _ => self.bad(v.to_string()),
        })
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Typed, E> {
        Ok(self.int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Typed, E> {
        if let Ok(n) = i64::try_from(v) {
            return Ok(self.int(n));
        }
        Ok(match self.ty.kind {
            Kind::Number | Kind::Any => Ok(Value::Number(v as f64)),
            Kind::Text => Ok(Value::Text(v.to_smolstr())),
            _ => self.bad(format!("the number {v}")),
        })
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Typed, E> {
        Ok(match self.ty.kind {
            Kind::Number | Kind::Any => Ok(Value::Number(v)),
            Kind::Int => match integral(v) {
                Some(n) => Ok(Value::Int(n)),
                None => self.bad(format!("the number {v}")),
            },
            _ => self.bad(format!("the number {v}")),
        })
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Typed, E> {
        Ok(match self.ty.kind {
            Kind::Text | Kind::Any if self.share => Ok(self.cache.get(v)),
            Kind::Text | Kind::Any => Ok(Value::text(v)),
            Kind::Date | Kind::DateTime | Kind::Duration | Kind::Timezone | Kind::Time => {
                match from_text_scalar(v, self.ty) {
                    Some(value) => Ok(value),
                    None => self.bad(format!("text {}", quote(v))),
                }
            }
            _ => self.bad(format!("text {}", quote(v))),
        })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Typed, A::Error> {
        let any = CTy::new(&Ty::unknown());
        let element = match &self.ty.kind {
            Kind::List(element) => element.as_ref(),
            Kind::Any => &any,
            _ => {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                return Ok(self.bad("a list".to_string()));
            }
        };
        let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        let mut bad = None;
        while let Some(item) = seq.next_element_seed(TypedSeed {
            ty: element,
            null_ok: false,
            share: true,
            cache: &mut *self.cache,
        })? {
            if bad.is_some() {
                continue;
            }
            match item {
                Ok(v) => values.push(v),
                Err(e) => bad = Some(e.at(Seg::Index(values.len()))),
            }
        }
        Ok(match bad {
            Some(e) => Err(e),
            None => Ok(Value::List(values.into())),
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Typed, A::Error> {
        let any_fields = Vec::new();
        let (fields, any) = match &self.ty.kind {
            Kind::Record(fields) => (fields, false),
            Kind::Any => (&any_fields, true),
            _ => {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                return Ok(self.bad("an object".to_string()));
            }
        };
        let any_ty = CTy::new(&Ty::unknown());
        let mut out = BTreeMap::new();
        let mut bad = None;
        while let Some(Str(key)) = map.next_key()? {
            let (name, ty) = if any {
                (Arc::from(key.as_ref()), &any_ty)
            } else {
                match fields.binary_search_by(|f| (*f.0).cmp(&key)) {
                    Ok(i) => (fields[i].0.clone(), &fields[i].1),
                    Err(_) => {
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    }
                }
            };
            let value = map.next_value_seed(TypedSeed {
                ty,
                null_ok: true,
                share: true,
                cache: &mut *self.cache,
            })?;
            if bad.is_some() {
                continue;
            }
            match value {
                Ok(Value::Null) if !any => {}
                Ok(v) => {
                    out.insert(name, v);
                }
                Err(e) => bad = Some(e.at(Seg::Name(name))),
            }
        }
        if let Some(e) = bad {
            return Ok(Err(e));
        }
        Ok(check_record(&out, fields).map(|()| Value::Record(Arc::new(out))))
    }
}

/// One declared field: `null` is `Value::Null`, anything else typed.
fn typed_field(value: &J, field: &FieldSpec, prefix: &str) -> Result<Value, String> {
    if matches!(value, J::Null) {
        return Ok(Value::Null);
    }
    from_json(value, &field.ty).map_err(|e| e.reason(field.name, prefix))
}

/// Properties read before their event was known, typed now.
fn typed_fields(j: &J, fields: &[FieldSpec], what: &str, prefix: &str) -> Fields<'static> {
    match j {
        J::Null => Fields::Absent,
        J::Obj(given) => {
            let mut values = Vec::new();
            for (key, value) in given {
                if let Some(i) = find_field(fields, key) {
                    match typed_field(value, &fields[i], prefix) {
                        Ok(v) => values.push((i, v)),
                        Err(reason) => return Fields::Bad(reason),
                    }
                }
            }
            Fields::Typed(values)
        }
        other => Fields::Bad(format!(
            "`{what}` is {}, expected an object",
            describe_json(other)
        )),
    }
}

/// "text \"abc\"", "the number 3.5": how a value found in the data reads in a message.
fn describe_json(j: &J) -> String {
    match j {
        J::Null => "none".to_string(),
        J::Bool(b) => b.to_string(),
        J::Int(n) => format!("the number {n}"),
        J::UInt(n) => format!("the number {n}"),
        J::Float(x) => format!("the number {x}"),
        J::Str(s) => format!("text {}", quote(s)),
        J::Arr(_) => "a list".to_string(),
        J::Obj(_) => "an object".to_string(),
    }
}

/// Quoted, shortened to 40 characters.
fn quote(s: &str) -> String {
    let mut short: String = s.chars().take(40).collect();
    if short.len() < s.len() {
        short.push('…');
    }
    format!("{short:?}")
}

// ---------------------------------------------------------------------------------------------
// Values by type

/// A value that does not fit its type: where inside the field, what was found, what the
/// schema says.
#[derive(Debug)]
struct ConvErr {
    /// Innermost last: `[Index(2), Name("quantity")]` reversed as the error goes out.
    path: Vec<Seg>,
    found: String,
    expected: String,
}

#[derive(Debug)]
enum Seg {
    Name(Arc<str>),
    Index(usize),
}

impl ConvErr {
    fn new(found: String, ty: &CTy) -> ConvErr {
        ConvErr {
            path: Vec::new(),
            found,
            expected: ty.expected(),
        }
    }
    fn missing() -> ConvErr {
        ConvErr {
            path: Vec::new(),
            found: String::new(),
            expected: String::new(),
        }
    }
    fn at(mut self, seg: Seg) -> ConvErr {
        self.path.push(seg);
        self
    }
    /// "`products[2].quantity` is the number 2.5, the schema says a whole number".
    fn reason(&self, field: &str, prefix: &str) -> String {
        let mut path = field.to_string();
        for seg in self.path.iter().rev() {
            match seg {
                Seg::Name(n) => {
                    let _ = write!(path, ".{n}");
                }
                Seg::Index(i) => {
                    let _ = write!(path, "[{i}]");
                }
            }
        }
        if self.found.is_empty() {
            format!("{prefix}`{path}` is missing")
        } else {
            format!(
                "{prefix}`{path}` is {}, the schema says {}",
                self.found, self.expected
            )
        }
    }
}

fn from_json(j: &J, ty: &CTy) -> Result<Value, ConvErr> {
    let bad = || ConvErr::new(describe_json(j), ty);
    Ok(match (&ty.kind, j) {
        (_, J::Null) if ty.optional => Value::Null,
        (Kind::Any, j) => any_json(j),
        (_, J::Null) => return Err(ConvErr::missing()),
        (Kind::Text, J::Str(s)) => Value::text(s),
        (Kind::Text, J::Int(n)) => Value::Text(n.to_smolstr()),
        (Kind::Text, J::UInt(n)) => Value::Text(n.to_smolstr()),
        (Kind::Int, J::Int(n)) => Value::Int(*n),
        (Kind::Int, J::Float(x)) => match integral(*x) {
            Some(n) => Value::Int(n),
            None => return Err(bad()),
        },
        (Kind::Number, J::Int(n)) => Value::Number(*n as f64),
        (Kind::Number, J::UInt(n)) => Value::Number(*n as f64),
        (Kind::Number, J::Float(x)) => Value::Number(*x),
        (Kind::Bool, J::Bool(b)) => Value::Bool(*b),
        (Kind::Duration, J::Int(n)) => Value::Duration(*n),
        (Kind::Date | Kind::DateTime | Kind::Duration | Kind::Timezone | Kind::Time, J::Str(s)) => {
            from_text_scalar(s, ty).ok_or_else(bad)?
        }
        (Kind::List(element), J::Arr(items)) => {
            let mut values = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                values.push(from_json(item, element).map_err(|e| e.at(Seg::Index(i)))?);
            }
            Value::List(values.into())
        }
        (Kind::Record(fields), J::Obj(given)) => {
            let mut out = BTreeMap::new();
            for (key, value) in given {
                if matches!(value, J::Null) {
                    continue;
                }
                if let Ok(i) = fields.binary_search_by(|f| (*f.0).cmp(key)) {
                    let (name, fty) = &fields[i];
                    let v = from_json(value, fty).map_err(|e| e.at(Seg::Name(name.clone())))?;
                    out.insert(name.clone(), v);
                }
            }
            check_record(&out, fields)?;
            Value::Record(Arc::new(out))
        }
        _ => return Err(bad()),
    })
}

fn check_record(
    out: &BTreeMap<Arc<str>, Value>,
    fields: &[(Arc<str>, CTy)],
) -> Result<(), ConvErr> {
    for (name, fty) in fields {
        if !fty.optional && !out.contains_key(name) {
            return Err(ConvErr::missing().at(Seg::Name(name.clone())));
        }
    }
    Ok(())
}

fn any_json(j: &J) -> Value {
    match j {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(*b),
        J::Int(n) => Value::Int(*n),
        J::UInt(n) => Value::Number(*n as f64),
        J::Float(x) => Value::Number(*x),
        J::Str(s) => Value::text(s),
        J::Arr(items) => Value::List(items.iter().map(any_json).collect()),
        J::Obj(items) => Value::Record(Arc::new(
            items
                .iter()
                .map(|(k, v)| (Arc::from(k.as_ref()), any_json(v)))
                .collect(),
        )),
    }
}

/// A float that is a whole number in range.
fn integral(x: f64) -> Option<i64> {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if x.fract() == 0.0 && (-TWO_63..TWO_63).contains(&x) {
        Some(x as i64)
    } else {
        None
    }
}

/// Dates, date-times, durations, time zones and times of day, from text.
fn from_text_scalar(s: &str, ty: &CTy) -> Option<Value> {
    match ty.kind {
        Kind::Date => parse_date(s).map(Value::Date),
        Kind::DateTime => parse_timestamp(s).map(Value::DateTime),
        Kind::Duration => parse_duration(s).map(Value::Duration),
        Kind::Timezone => chrono_tz::Tz::from_str(s).ok().map(|_| Value::text(s)),
        Kind::Time => parse_time(s).map(|_| Value::text(s)),
        _ => None,
    }
}

/// A cell of a table (CSV, or a text column of Parquet), not empty.
fn from_text(s: &str, ty: &CTy) -> Result<Value, ConvErr> {
    let bad = || ConvErr::new(quote(s), ty);
    let t = s.trim();
    Ok(match &ty.kind {
        Kind::Text | Kind::Any => Value::text(s),
        Kind::Int => match t.parse::<i64>() {
            Ok(n) => Value::Int(n),
            Err(_) => match t.parse::<f64>().ok().and_then(integral) {
                Some(n) => Value::Int(n),
                None => return Err(bad()),
            },
        },
        Kind::Number => match t.parse::<f64>() {
            Ok(x) if x.is_finite() => Value::Number(x),
            _ => return Err(bad()),
        },
        Kind::Bool => match parse_bool(t) {
            Some(b) => Value::Bool(b),
            None => return Err(bad()),
        },
        Kind::Date | Kind::DateTime | Kind::Duration | Kind::Timezone | Kind::Time => {
            from_text_scalar(t, ty).ok_or_else(bad)?
        }
        Kind::List(_) | Kind::Record(_) => match serde_json::from_str::<J>(t) {
            Ok(j) => from_json(&j, ty)?,
            Err(e) => {
                return Err(ConvErr {
                    path: Vec::new(),
                    found: format!("{} (not valid JSON: {e})", quote(s)),
                    expected: ty.expected(),
                })
            }
        },
    })
}

fn parse_bool(s: &str) -> Option<bool> {
    const TRUE: [&str; 3] = ["true", "1", "yes"];
    const FALSE: [&str; 3] = ["false", "0", "no"];
    if TRUE.iter().any(|t| t.eq_ignore_ascii_case(s)) {
        Some(true)
    } else if FALSE.iter().any(|f| f.eq_ignore_ascii_case(s)) {
        Some(false)
    } else {
        None
    }
}

fn digits(b: &[u8]) -> Option<u32> {
    let mut n = 0u32;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u32::from(c - b'0');
    }
    Some(n)
}

/// `YYYY-MM-DD`.
fn parse_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year = digits(&b[0..4])?;
    NaiveDate::from_ymd_opt(year as i32, digits(&b[5..7])?, digits(&b[8..10])?)
}

/// RFC 3339, with an offset or `Z`: `2026-11-20T09:12:00Z`, `2026-11-20T10:12:00.5+01:00`.
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    // The common shape, `YYYY-MM-DDTHH:MM:SSZ`, without the general parser.
    if b.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && matches!(b[10], b'T' | b't')
        && b[13] == b':'
        && b[16] == b':'
        && matches!(b[19], b'Z' | b'z')
    {
        if let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(se)) = (
            digits(&b[0..4]),
            digits(&b[5..7]),
            digits(&b[8..10]),
            digits(&b[11..13]),
            digits(&b[14..16]),
            digits(&b[17..19]),
        ) {
            if let Some(t) =
                NaiveDate::from_ymd_opt(y as i32, mo, d).and_then(|d| d.and_hms_opt(h, mi, se))
            {
                return Some(t.and_utc());
            }
        }
    }
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Seconds: `90`, or as the language writes them: `30s`, `45m`, `2h`, `7d`, `2w`.
pub fn parse_duration(s: &str) -> Option<i64> {
    if let Ok(n) = s.parse::<i64>() {
        return Some(n);
    }
    let unit = match s.as_bytes().last()? {
        b's' => 1,
        b'm' => 60,
        b'h' => 3_600,
        b'd' => 86_400,
        b'w' => 604_800,
        _ => return None,
    };
    let amount: i64 = s.get(..s.len() - 1)?.parse().ok()?;
    amount.checked_mul(unit)
}

/// `HH:MM`.
fn parse_time(s: &str) -> Option<(u32, u32)> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && s.len() == 5).then_some((h, m))
}

// ---------------------------------------------------------------------------------------------
// CSV

/// The columns of a table (CSV or Parquet) and what they hold.
#[derive(Debug)]
enum Shape {
    Customers {
        id: usize,
        updated: Option<usize>,
        /// (column, trait index), in trait order.
        traits: Vec<(usize, usize)>,
    },
    Events {
        id: usize,
        event: usize,
        timestamp: usize,
        message: Option<usize>,
        /// Per event of the schema: (field index, column) for the columns it has.
        fields: Vec<Vec<(usize, usize)>>,
    },
}

impl Shape {
    fn new(header: &[String], schema: &Compiled) -> Result<Shape, String> {
        let col = |name: &str| header.iter().position(|h| h == name);
        let Some(id) = col("customer_id") else {
            return Err(
                "the header has no `customer_id` column: not a customers or events table"
                    .to_string(),
            );
        };
        if let Some(event) = col("event") {
            let Some(timestamp) = col("timestamp") else {
                return Err("an events table needs a `timestamp` column".to_string());
            };
            let fields = schema
                .events
                .iter()
                .map(|e| {
                    e.fields
                        .iter()
                        .enumerate()
                        .filter_map(|(i, f)| col(f.name).map(|c| (i, c)))
                        .collect()
                })
                .collect();
            Ok(Shape::Events {
                id,
                event,
                timestamp,
                message: col("message_id"),
                fields,
            })
        } else {
            let traits = schema
                .traits
                .iter()
                .enumerate()
                .filter_map(|(i, t)| col(t.name).map(|c| (c, i)))
                .collect();
            Ok(Shape::Customers {
                id,
                updated: col("updated_at"),
                traits,
            })
        }
    }
}

/// A cell of a table row, in whatever form the format has.
trait Cell<'a> {
    fn is_empty(&self) -> bool;
    /// As text, for ids, event names and timestamps.
    fn text(&self) -> Result<Cow<'a, str>, String>;
    fn timestamp(&self) -> Result<DateTime<Utc>, String>;
    fn typed(&self, ty: &CTy) -> Result<Value, ConvErr>;
}

impl<'a> Cell<'a> for &'a str {
    fn is_empty(&self) -> bool {
        str::is_empty(self)
    }
    fn text(&self) -> Result<Cow<'a, str>, String> {
        Ok(Cow::Borrowed(self))
    }
    fn timestamp(&self) -> Result<DateTime<Utc>, String> {
        parse_timestamp(self.trim())
            .ok_or_else(|| format!("{}, not an RFC 3339 date and time", quote(self)))
    }
    fn typed(&self, ty: &CTy) -> Result<Value, ConvErr> {
        from_text(self, ty)
    }
}

/// A row of a table: the cells by column.
fn table_record<'a, C: Cell<'a>>(
    cells: impl Fn(usize) -> Option<C>,
    shape: &Shape,
    rel: &'static str,
    line: u64,
    ctx: &mut Ctx,
) -> Outcome {
    let schema = ctx.schema.clone();
    let cell = |i: usize| cells(i).filter(|c| !c.is_empty());
    let origin = Origin { file: rel, line };
    let derived = || format_smolstr!("{rel}:{line}");
    match shape {
        Shape::Customers {
            id,
            updated,
            traits,
        } => {
            let customer = match cell(*id).map(|c| c.text()) {
                Some(Ok(c)) => Id::new(c),
                Some(Err(e)) => return Outcome::Reject(format!("`customer_id` is {e}")),
                None => return Outcome::Reject("`customer_id` is empty".to_string()),
            };
            let at = match updated {
                None => ctx.forever,
                Some(col) => match cell(*col).map(|c| c.timestamp()) {
                    Some(Ok(at)) => at,
                    Some(Err(e)) => return Outcome::Reject(format!("`updated_at` is {e}")),
                    None => return Outcome::Reject("`updated_at` is empty".to_string()),
                },
            };
            let mut values = Vec::with_capacity(traits.len());
            for &(col, i) in traits {
                let Some(spec) = schema.traits.get(i) else {
                    continue;
                };
                let v = match cell(col) {
                    None => Value::Null,
                    Some(c) => match c.typed(&spec.ty) {
                        Ok(v) => v,
                        Err(e) => return Outcome::Reject(e.reason(spec.name, "trait ")),
                    },
                };
                values.push((spec.name, v));
            }
            Outcome::Record(Record {
                at,
                customer: Some(customer),
                id: derived(),
                kind: RecordKind::Identify { traits: values },
                origin,
            })
        }
        Shape::Events {
            id,
            event,
            timestamp,
            message,
            fields,
        } => {
            let name = match cell(*event).map(|c| c.text()) {
                Some(Ok(name)) => name,
                Some(Err(e)) => return Outcome::Reject(format!("`event` is {e}")),
                None => return Outcome::Reject("`event` is empty".to_string()),
            };
            let Some(spec) = schema.event(&name) else {
                ctx.skip(&name);
                return Outcome::Skip;
            };
            let customer = match cell(*id).map(|c| c.text()) {
                Some(Err(e)) => return Outcome::Reject(format!("`customer_id` is {e}")),
                _ if spec.catalog => None,
                Some(Ok(c)) => Some(Id::new(c)),
                None => return Outcome::Reject(format!("`{}` needs a `customer_id`", spec.source)),
            };
            let at = match cell(*timestamp).map(|c| c.timestamp()) {
                Some(Ok(at)) => at,
                Some(Err(e)) => return Outcome::Reject(format!("`timestamp` is {e}")),
                None => return Outcome::Reject("`timestamp` is missing".to_string()),
            };
            let id = match message.and_then(cell).map(|c| c.text()) {
                Some(Ok(m)) => Id::new(m),
                Some(Err(e)) => return Outcome::Reject(format!("`message_id` is {e}")),
                None => derived(),
            };
            let mut properties = Properties::absent(spec.names);
            for &(i, col) in fields
                .get(spec.index)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let Some(field) = spec.fields.get(i) else {
                    continue;
                };
                if let Some(c) = cell(col) {
                    match c.typed(&field.ty) {
                        Ok(v) => properties.set_slot(i, v),
                        Err(e) => return Outcome::Reject(e.reason(field.name, "")),
                    }
                }
            }
            if let Err(reason) = complete(&mut properties, spec) {
                return Outcome::Reject(reason);
            }
            Outcome::Record(Record {
                at,
                customer,
                id,
                kind: RecordKind::Event {
                    event: spec.name,
                    properties,
                },
                origin,
            })
        }
    }
}

struct CsvSource {
    rel: &'static str,
    reader: csv::Reader<Box<dyn BufRead + Send>>,
    record: csv::ByteRecord,
    shape: Shape,
    width: usize,
}

fn csv_reader(reader: Box<dyn BufRead + Send>) -> csv::Reader<Box<dyn BufRead + Send>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(64 * 1024)
        .from_reader(reader)
}

/// The header row: names trimmed, a byte-order mark dropped.
fn csv_header(
    reader: &mut csv::Reader<Box<dyn BufRead + Send>>,
) -> Result<Option<Vec<String>>, String> {
    let mut record = csv::ByteRecord::new();
    match reader.read_byte_record(&mut record) {
        Ok(false) => Ok(None),
        Ok(true) => {
            let mut header = Vec::with_capacity(record.len());
            for (i, field) in record.iter().enumerate() {
                let field = if i == 0 {
                    field.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(field)
                } else {
                    field
                };
                match std::str::from_utf8(field) {
                    Ok(name) => header.push(name.trim().to_string()),
                    Err(_) => return Err("the header is not UTF-8".to_string()),
                }
            }
            Ok(Some(header))
        }
        Err(e) => Err(format!("the header cannot be read: {e}")),
    }
}

/// The row as it was, for a reject.
fn csv_raw(record: &csv::ByteRecord) -> String {
    let mut writer = csv::WriterBuilder::new()
        .flexible(true)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let _ = writer.write_byte_record(record);
    let bytes = writer.into_inner().unwrap_or_default();
    String::from_utf8_lossy(trim_line(&bytes)).into_owned()
}

impl CsvSource {
    fn new(rel: &'static str, reader: Box<dyn BufRead + Send>, ctx: &mut Ctx) -> Option<CsvSource> {
        let mut reader = csv_reader(reader);
        let header = match csv_header(&mut reader) {
            Ok(Some(header)) => header,
            Ok(None) => return None,
            Err(reason) => {
                ctx.reject(rel, 1, reason, String::new());
                return None;
            }
        };
        match Shape::new(&header, &ctx.schema) {
            Ok(shape) => Some(CsvSource {
                rel,
                reader,
                record: csv::ByteRecord::new(),
                shape,
                width: header.len(),
            }),
            Err(reason) => {
                ctx.reject(rel, 1, reason, header.join(","));
                None
            }
        }
    }

    fn next(&mut self, ctx: &mut Ctx) -> Option<Record> {
        loop {
            match self.reader.read_byte_record(&mut self.record) {
                Ok(false) => return None,
                Ok(true) => {}
                Err(e) => {
                    let line = e
                        .position()
                        .map_or_else(|| self.reader.position().line(), |p| p.line());
                    ctx.reject(
                        self.rel,
                        line,
                        format!(
                            "the file cannot be read from here on: {e}; the rest of the file is skipped"
                        ),
                        String::new(),
                    );
                    return None;
                }
            }
            let line = self.record.position().map_or(0, |p| p.line());
            if self.record.len() == 1 && self.record.get(0).is_some_and(is_blank) {
                continue;
            }
            ctx.read += 1;
            let outcome = if self.record.len() != self.width {
                Outcome::Reject(format!(
                    "the row has {} columns, the header has {}",
                    self.record.len(),
                    self.width
                ))
            } else {
                // Checked as UTF-8 in place: no copy, and the buffer is used again.
                match csv::StringRecord::from_byte_record(std::mem::take(&mut self.record)) {
                    Ok(text) => {
                        let outcome =
                            table_record(|i| text.get(i), &self.shape, self.rel, line, ctx);
                        self.record = text.into_byte_record();
                        outcome
                    }
                    Err(e) => {
                        self.record = e.into_byte_record();
                        Outcome::Reject("the row is not UTF-8".to_string())
                    }
                }
            };
            match outcome {
                Outcome::Record(r) => return Some(r),
                Outcome::Skip => {}
                Outcome::Reject(reason) => {
                    let raw = csv_raw(&self.record);
                    ctx.reject(self.rel, line, reason, raw);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parquet

struct ParquetSource {
    rel: &'static str,
    rows: RowIter<'static>,
    shape: Shape,
    row: u64,
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown error".to_string())
}

/// The file's reader and its top-level column names. The Parquet reader is guarded: a
/// corrupt file that makes it panic is reported like any other unreadable file.
fn parquet_open(path: &Path) -> Result<(SerializedFileReader<File>, Vec<String>), String> {
    let file = File::open(path).map_err(|e| format!("the file cannot be read: {e}"))?;
    let reader = catch_unwind(|| SerializedFileReader::new(file))
        .map_err(|p| format!("not a readable Parquet file: {}", panic_message(&*p)))?
        .map_err(|e| format!("not a readable Parquet file: {e}"))?;
    let names = reader
        .metadata()
        .file_metadata()
        .schema()
        .get_fields()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    Ok((reader, names))
}

impl ParquetSource {
    fn new(rel: &'static str, path: &Path, schema: &Compiled) -> Result<ParquetSource, String> {
        let (reader, names) = parquet_open(path)?;
        let shape = Shape::new(&names, schema)?;
        Ok(ParquetSource {
            rel,
            rows: RowIter::from_file_into(Box::new(reader)),
            shape,
            row: 0,
        })
    }

    fn next(&mut self, ctx: &mut Ctx) -> Option<Record> {
        loop {
            let rows = &mut self.rows;
            let row = match catch_unwind(AssertUnwindSafe(|| rows.next())) {
                Ok(None) => return None,
                Ok(Some(Ok(row))) => row,
                Ok(Some(Err(e))) => {
                    self.stop(ctx, &e.to_string());
                    return None;
                }
                Err(p) => {
                    self.stop(ctx, &panic_message(&*p));
                    return None;
                }
            };
            self.row += 1;
            ctx.read += 1;
            let cells: Vec<PCell> = row.get_column_iter().map(|(_, f)| PCell(f)).collect();
            let (shape, rel, line) = (&self.shape, self.rel, self.row);
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                table_record(|i| cells.get(i).map(|c| PCell(c.0)), shape, rel, line, ctx)
            }))
            .unwrap_or_else(|p| {
                Outcome::Reject(format!("the row cannot be read: {}", panic_message(&*p)))
            });
            match outcome {
                Outcome::Record(r) => return Some(r),
                Outcome::Skip => {}
                Outcome::Reject(reason) => {
                    let raw = catch_unwind(AssertUnwindSafe(|| row_json(&row).to_string()))
                        .unwrap_or_default();
                    ctx.reject(self.rel, self.row, reason, raw);
                }
            }
        }
    }

    fn stop(&self, ctx: &mut Ctx, error: &str) {
        ctx.reject(
            self.rel,
            self.row + 1,
            format!(
                "the file cannot be read from row {}: {error}; the rest of the file is skipped",
                self.row + 1
            ),
            String::new(),
        );
    }
}

/// A cell of a Parquet row.
struct PCell<'a>(&'a Field);

fn field_int(f: &Field) -> Option<i128> {
    Some(match *f {
        Field::Byte(n) => n.into(),
        Field::Short(n) => n.into(),
        Field::Int(n) => n.into(),
        Field::Long(n) => n.into(),
        Field::UByte(n) => n.into(),
        Field::UShort(n) => n.into(),
        Field::UInt(n) => n.into(),
        Field::ULong(n) => n.into(),
        _ => return None,
    })
}

fn decimal_f64(d: &parquet::data_type::Decimal) -> Option<f64> {
    let bytes = d.data();
    if bytes.is_empty() || bytes.len() > 16 {
        return None;
    }
    let mut n: i128 = if bytes[0] & 0x80 != 0 { -1 } else { 0 };
    for &b in bytes {
        n = (n << 8) | i128::from(b);
    }
    Some(n as f64 / 10f64.powi(d.scale()))
}

fn field_f64(f: &Field) -> Option<f64> {
    match f {
        Field::Float(x) => Some(f64::from(*x)),
        Field::Double(x) => Some(*x),
        Field::Float16(x) => Some(f64::from(*x)),
        Field::Decimal(d) => decimal_f64(d),
        _ => field_int(f).map(|n| n as f64),
    }
}

fn field_timestamp(f: &Field) -> Option<DateTime<Utc>> {
    match *f {
        Field::TimestampMillis(ms) => DateTime::from_timestamp_millis(ms),
        Field::TimestampMicros(us) => DateTime::from_timestamp_micros(us),
        _ => None,
    }
}

fn field_date(days: i32) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(1970, 1, 1)?
        .checked_add_signed(chrono::TimeDelta::try_days(i64::from(days))?)
}

fn describe_field(f: &Field) -> String {
    match f {
        Field::Null => "none".to_string(),
        Field::Bool(b) => b.to_string(),
        Field::Str(s) => format!("text {}", quote(s)),
        Field::Bytes(_) => "binary data".to_string(),
        Field::Date(_) => "a date".to_string(),
        Field::TimestampMillis(_) | Field::TimestampMicros(_) => "a date and time".to_string(),
        Field::TimeMillis(_) | Field::TimeMicros(_) => "a time of day".to_string(),
        Field::Group(_) | Field::MapInternal(_) => "a record".to_string(),
        Field::ListInternal(_) => "a list".to_string(),
        other => match field_int(other) {
            Some(n) => format!("the number {n}"),
            None => match field_f64(other) {
                Some(x) => format!("the number {x}"),
                None => "a number".to_string(),
            },
        },
    }
}

fn from_parquet(f: &Field, ty: &CTy) -> Result<Value, ConvErr> {
    let bad = || ConvErr::new(describe_field(f), ty);
    Ok(match (&ty.kind, f) {
        (_, Field::Null) if ty.optional => Value::Null,
        (Kind::Any, f) => any_field(f),
        (_, Field::Null) => return Err(ConvErr::missing()),
        (Kind::Text, Field::Str(s)) => Value::text(s),
        (_, Field::Str(s)) => from_text(s, ty)?,
        (Kind::Text, f) => match field_int(f) {
            Some(n) => Value::Text(n.to_smolstr()),
            None => return Err(bad()),
        },
        (Kind::Int, f) => match field_int(f).and_then(|n| i64::try_from(n).ok()) {
            Some(n) => Value::Int(n),
            None => match field_f64(f).and_then(integral) {
                Some(n) => Value::Int(n),
                None => return Err(bad()),
            },
        },
        (Kind::Number, f) => match field_f64(f) {
            Some(x) if x.is_finite() => Value::Number(x),
            _ => return Err(bad()),
        },
        (Kind::Bool, Field::Bool(b)) => Value::Bool(*b),
        (Kind::Date, Field::Date(days)) => Value::Date(field_date(*days).ok_or_else(bad)?),
        (Kind::DateTime, f) => Value::DateTime(field_timestamp(f).ok_or_else(bad)?),
        (Kind::Duration, f) => match field_int(f).and_then(|n| i64::try_from(n).ok()) {
            Some(n) => Value::Duration(n),
            None => return Err(bad()),
        },
        (Kind::List(element), Field::ListInternal(list)) => {
            let mut values = Vec::with_capacity(list.len());
            for (i, item) in list.elements().iter().enumerate() {
                values.push(from_parquet(item, element).map_err(|e| e.at(Seg::Index(i)))?);
            }
            Value::List(values.into())
        }
        (Kind::Record(fields), Field::Group(row)) => {
            let mut out = BTreeMap::new();
            for (key, value) in row.get_column_iter() {
                record_field(&mut out, fields, key, value)?;
            }
            check_record(&out, fields)?;
            Value::Record(Arc::new(out))
        }
        (Kind::Record(fields), Field::MapInternal(map)) => {
            let mut out = BTreeMap::new();
            for (key, value) in map.entries() {
                if let Field::Str(key) = key {
                    record_field(&mut out, fields, key, value)?;
                }
            }
            check_record(&out, fields)?;
            Value::Record(Arc::new(out))
        }
        _ => return Err(bad()),
    })
}

fn record_field(
    out: &mut BTreeMap<Arc<str>, Value>,
    fields: &[(Arc<str>, CTy)],
    key: &str,
    value: &Field,
) -> Result<(), ConvErr> {
    if matches!(value, Field::Null) {
        return Ok(());
    }
    if let Ok(i) = fields.binary_search_by(|f| (*f.0).cmp(key)) {
        let (name, fty) = &fields[i];
        let v = from_parquet(value, fty).map_err(|e| e.at(Seg::Name(name.clone())))?;
        out.insert(name.clone(), v);
    }
    Ok(())
}

fn any_field(f: &Field) -> Value {
    match f {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Str(s) => Value::text(s),
        Field::Date(d) => field_date(*d).map_or(Value::Null, Value::Date),
        Field::TimestampMillis(_) | Field::TimestampMicros(_) => {
            field_timestamp(f).map_or(Value::Null, Value::DateTime)
        }
        Field::ListInternal(list) => Value::List(list.elements().iter().map(any_field).collect()),
        Field::Group(row) => Value::Record(Arc::new(
            row.get_column_iter()
                .map(|(k, v)| (Arc::from(k.as_str()), any_field(v)))
                .collect(),
        )),
        other => match field_int(other).and_then(|n| i64::try_from(n).ok()) {
            Some(n) => Value::Int(n),
            None => field_f64(other).map_or(Value::Null, Value::Number),
        },
    }
}

/// A Parquet row as JSON, for the rejects file.
fn row_json(row: &Row) -> serde_json::Value {
    serde_json::Value::Object(
        row.get_column_iter()
            .map(|(k, v)| (k.clone(), field_json(v)))
            .collect(),
    )
}

fn field_json(f: &Field) -> serde_json::Value {
    use serde_json::Value as V;
    match f {
        Field::Null => V::Null,
        Field::Bool(b) => V::Bool(*b),
        Field::Str(s) => V::String(s.clone()),
        Field::Bytes(b) => V::String(String::from_utf8_lossy(b.data()).into_owned()),
        Field::Date(d) => field_date(*d).map_or(V::Null, |d| V::String(d.to_string())),
        Field::TimestampMillis(_) | Field::TimestampMicros(_) => {
            field_timestamp(f).map_or(V::Null, |t| V::String(t.to_rfc3339()))
        }
        Field::ListInternal(list) => V::Array(list.elements().iter().map(field_json).collect()),
        Field::Group(row) => row_json(row),
        Field::MapInternal(map) => V::Object(
            map.entries()
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        Field::Str(s) => s.clone(),
                        other => field_json(other).to_string(),
                    };
                    (key, field_json(v))
                })
                .collect(),
        ),
        other => match field_int(other) {
            Some(n) => i64::try_from(n)
                .map(V::from)
                .unwrap_or_else(|_| V::from(n as f64)),
            None => field_f64(other)
                .and_then(serde_json::Number::from_f64)
                .map_or(V::Null, V::Number),
        },
    }
}

impl<'a> Cell<'a> for PCell<'a> {
    fn is_empty(&self) -> bool {
        match self.0 {
            Field::Null => true,
            Field::Str(s) => s.is_empty(),
            _ => false,
        }
    }
    fn text(&self) -> Result<Cow<'a, str>, String> {
        match self.0 {
            Field::Str(s) => Ok(Cow::Borrowed(s.as_str())),
            f => match field_int(f) {
                Some(n) => Ok(Cow::Owned(n.to_string())),
                None => Err(format!("{}, expected text", describe_field(f))),
            },
        }
    }
    fn timestamp(&self) -> Result<DateTime<Utc>, String> {
        match self.0 {
            Field::Str(s) => s.as_str().timestamp(),
            f => field_timestamp(f)
                .ok_or_else(|| format!("{}, not a date and time", describe_field(f))),
        }
    }
    fn typed(&self, ty: &CTy) -> Result<Value, ConvErr> {
        from_parquet(self.0, ty)
    }
}

// ---------------------------------------------------------------------------------------------
// The first pass: is a file sorted by time, and when does it start?

/// The first pass over every file, on up to as many threads as there are cores; without
/// `whole`, an NDJSON file's first timestamp only (see [`DataSet::records_unscanned`]).
fn scan_all(files: &[FileEntry], whole: bool) -> Vec<Scan> {
    let scan_file = |entry: &FileEntry| scan_file(entry, whole);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.len());
    if threads <= 1 {
        return files.iter().map(scan_file).collect();
    }
    let next = AtomicUsize::new(0);
    let mut scans = vec![Scan::UNKNOWN; files.len()];
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, AtomicOrdering::Relaxed);
                        let Some(file) = files.get(i) else {
                            break;
                        };
                        done.push((i, scan_file(file)));
                    }
                    done
                })
            })
            .collect();
        for worker in workers {
            // A scan that failed leaves `Scan::UNKNOWN`.
            if let Ok(done) = worker.join() {
                for (i, scan) in done {
                    if let Some(slot) = scans.get_mut(i) {
                        *slot = scan;
                    }
                }
            }
        }
    });
    scans
}

/// Follows the timestamps of one file.
struct Tracker {
    sorted: bool,
    first: Option<DateTime<Utc>>,
    last: Option<DateTime<Utc>>,
}

impl Tracker {
    fn new() -> Tracker {
        Tracker {
            sorted: true,
            first: None,
            last: None,
        }
    }
    fn see(&mut self, at: DateTime<Utc>) {
        if self.last.is_some_and(|last| at < last) {
            self.sorted = false;
        }
        self.last = Some(at);
        self.first = Some(self.first.map_or(at, |f| f.min(at)));
    }
    fn scan(&self) -> Scan {
        Scan {
            sorted: self.sorted,
            first: self.first,
            assumed: false,
        }
    }
}

fn scan_file(entry: &FileEntry, whole: bool) -> Scan {
    let scan = catch_unwind(AssertUnwindSafe(|| match entry.format {
        Format::Ndjson { gz } => scan_ndjson(&entry.path, gz, whole),
        Format::Csv { gz } => scan_csv(&entry.path, gz),
        Format::Parquet => scan_parquet(&entry.path),
    }));
    scan.unwrap_or(Scan::UNKNOWN)
}

/// Without `whole`, up to the first timestamp only: the file is assumed to be sorted, and
/// the main pass checks that it is.
fn scan_ndjson(path: &Path, gz: bool, whole: bool) -> Scan {
    let mut tracker = Tracker::new();
    let Ok(reader) = open_raw(path, gz) else {
        return tracker.scan();
    };
    let mut lines = Lines::new(reader);
    while let Ok(Some(line)) = lines.next_line() {
        if let Some(at) = line_timestamp(line.bytes) {
            tracker.see(at);
            if !whole {
                break;
            }
        }
    }
    Scan {
        assumed: !whole,
        ..tracker.scan()
    }
}

/// The top-level `timestamp` of an NDJSON line, by a scan of the line's structure that stops
/// there (most lines put it near the start): no JSON values are built. `None` when the line
/// has none or is not well formed up to it, or the value has escapes; the main pass reads
/// such a line fully (a line with two `timestamp` keys is rejected there).
fn line_timestamp(line: &[u8]) -> Option<DateTime<Utc>> {
    let mut scan = Scanner { bytes: line, at: 0 };
    scan.ws();
    scan.eat(b'{')?;
    loop {
        scan.ws();
        let key = scan.string()?;
        scan.ws();
        scan.eat(b':')?;
        scan.ws();
        if key == b"timestamp" {
            let value = scan.string()?;
            return parse_timestamp(std::str::from_utf8(value).ok()?);
        }
        scan.skip_value()?;
        scan.ws();
        scan.eat(b',')?;
    }
}

/// Just enough of JSON to walk past values.
struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }
    fn ws(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.at += 1;
        }
    }
    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.at += 1)
    }
    /// A string without escapes: its bytes. `None` for one with escapes (or no string).
    fn string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let rest = self.bytes.get(self.at..)?;
        let end = memchr::memchr2(b'"', b'\\', rest)?;
        if rest.get(end) != Some(&b'"') {
            return None;
        }
        self.at += end + 1;
        rest.get(..end)
    }
    /// Past a string that may have escapes.
    fn skip_string(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            let rest = self.bytes.get(self.at..)?;
            let i = memchr::memchr2(b'"', b'\\', rest)?;
            self.at += i + 1;
            if rest.get(i) == Some(&b'\\') {
                self.at += 1;
            } else {
                return Some(());
            }
        }
    }
    /// Past one value, nested ones included.
    fn skip_value(&mut self) -> Option<()> {
        let mut depth = 0usize;
        loop {
            match self.peek()? {
                b'"' => self.skip_string()?,
                b'{' | b'[' => {
                    depth += 1;
                    self.at += 1;
                }
                b'}' | b']' if depth > 0 => {
                    depth -= 1;
                    self.at += 1;
                }
                b',' | b':' if depth > 0 => self.at += 1,
                b',' | b'}' | b']' => return Some(()),
                _ => {
                    // A scalar (number, true, false, null) or white space.
                    while self
                        .peek()
                        .is_some_and(|b| !matches!(b, b'"' | b'{' | b'[' | b'}' | b']' | b','))
                    {
                        self.at += 1;
                    }
                }
            }
            if depth == 0 && matches!(self.peek(), Some(b',' | b'}') | None) {
                return Some(());
            }
        }
    }
}

fn scan_csv(path: &Path, gz: bool) -> Scan {
    let mut tracker = Tracker::new();
    let Ok(reader) = open_reader(path, gz) else {
        return tracker.scan();
    };
    let mut reader = csv_reader(reader);
    let Ok(Some(header)) = csv_header(&mut reader) else {
        return tracker.scan();
    };
    let time = if header.iter().any(|h| h == "event") {
        header.iter().position(|h| h == "timestamp")
    } else {
        header.iter().position(|h| h == "updated_at")
    };
    let Some(time) = time else {
        return tracker.scan();
    };
    let mut record = csv::ByteRecord::new();
    while let Ok(true) = reader.read_byte_record(&mut record) {
        if record.len() != header.len() {
            continue;
        }
        if let Some(at) = record
            .get(time)
            .and_then(|f| std::str::from_utf8(f).ok())
            .and_then(|s| parse_timestamp(s.trim()))
        {
            tracker.see(at);
        }
    }
    tracker.scan()
}

fn scan_parquet(path: &Path) -> Scan {
    let mut tracker = Tracker::new();
    let Ok((reader, names)) = parquet_open(path) else {
        return tracker.scan();
    };
    let time_name = if names.iter().any(|n| n == "event") {
        "timestamp"
    } else {
        "updated_at"
    };
    let root = reader.metadata().file_metadata().schema();
    let Some(field) = root
        .get_fields()
        .iter()
        .find(|f| f.name() == time_name)
        .cloned()
    else {
        return tracker.scan();
    };
    let Ok(projection) = parquet::schema::types::Type::group_type_builder(root.name())
        .with_fields(vec![field])
        .build()
    else {
        return tracker.scan();
    };
    let Ok(rows) = RowIter::from_file_into(Box::new(reader)).project(Some(projection)) else {
        return tracker.scan();
    };
    for row in rows {
        let Ok(row) = row else {
            break;
        };
        if let Some((_, f)) = row.get_column_iter().next() {
            if let Ok(at) = PCell(f).timestamp() {
                tracker.see(at);
            }
        }
    }
    tracker.scan()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Option<DateTime<Utc>> {
        parse_timestamp(s)
    }

    #[test]
    fn fields_are_found_by_name_whatever_their_length() {
        let names = [
            "a",
            "ab",
            "abcdefg",
            "abcdefgh",
            "abcdefghi",
            "abcdefgi",
            "price",
            "product",
            "product_id",
            "product_ix",
        ];
        let fields: Vec<FieldSpec> = names
            .iter()
            .map(|n| FieldSpec {
                name: n,
                tag: name_tag(n),
                quoted: format!("{n:?}:").into_bytes().into(),
                ty: CTy::new(&Ty::unknown()),
                default: None,
            })
            .collect();
        for (i, name) in names.iter().enumerate() {
            assert_eq!(find_field(&fields, name), Some(i), "{name}");
        }
        for name in [
            "",
            "b",
            "abcdef",
            "abcdefghij",
            "product_i",
            "prices",
            "a\0",
        ] {
            assert_eq!(find_field(&fields, name), None, "{name}");
        }
        assert_eq!(name_tag("abc"), u64::from_le_bytes(*b"abc\0\0\0\0\x03"));
    }

    #[test]
    fn the_first_pass_finds_the_top_level_timestamp() {
        let t = at("2026-11-01T00:00:07Z");
        for line in [
            r#"{"timestamp":"2026-11-01T00:00:07Z"}"#,
            r#"{"type":"track","userId":"c1","timestamp":"2026-11-01T00:00:07Z","properties":{}}"#,
            r#" { "properties" : {"timestamp":"2020-01-01T00:00:00Z","list":[1,{"a":"}"}]} , "timestamp" : "2026-11-01T00:00:07Z" }"#,
            r#"{"note":"a \"quoted\" \\ text","n":-1.5e3,"ok":true,"x":null,"timestamp":"2026-11-01T00:00:07Z"}"#,
        ] {
            assert_eq!(line_timestamp(line.as_bytes()), t, "{line}");
        }
        for line in [
            r#"{"properties":{"timestamp":"2026-11-01T00:00:07Z"}}"#,
            r#"{"timestamp":"2026-11-01T00:00:07\u005a"}"#,
            r#"{"timestamp":20261101}"#,
            r#"{"type":"track","timestamp""#,
            r#"not json"#,
        ] {
            assert_eq!(line_timestamp(line.as_bytes()), None, "{line}");
        }
    }

    #[test]
    fn lines_are_split_across_reads() {
        // Lines longer than the buffer's first fill, CRLF, and a last line without an end.
        let long = "x".repeat(BUF_SIZE + 10);
        let text = format!("a\r\n\n{long}\nlast");
        let mut lines = Lines::new(Box::new(io::Cursor::new(text.into_bytes())));
        let mut seen = Vec::new();
        while let Some(line) = lines.next_line().unwrap() {
            seen.push(String::from_utf8(line.bytes.to_vec()).unwrap());
        }
        assert_eq!(seen, ["a", "", long.as_str(), "last"]);
    }
}
