//! Reading customer data: `src/data.rs`, with the fixtures in `tests/data/`.
//!
//! - `tests/data/schema.moment`: the schema the fixtures are typed by;
//! - `tests/data/formats/{ndjson,csv}/`: the same records in each format (Parquet is written
//!   from the same rows by the tests, as it cannot be written by hand);
//! - `tests/data/mixed/`: a data directory of several formats, with a file out of time
//!   order and files that are not data;
//! - `tests/data/bad/`: every kind of bad record, between good ones.
//!
//! Compressed and corrupt files are made from these by the tests, in temporary directories.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use moments::check;
use moments::data::{write_rejects, DataSet, RecordStream};
use moments::diagnostic::{SourceFile, Sources};
use moments::model::Schema;
use moments::value::{Properties, Record, RecordKind, Reject, Value};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn schema_from(text: &str) -> Schema {
    let mut sources = Sources::default();
    let id = sources.add(SourceFile::new("schema.moment", text));
    let checked = check::check(&sources, Some(id), &[]);
    match checked.model {
        Some(model) => model.schema,
        None => panic!("the schema does not check: {:?}", checked.diagnostics),
    }
}

fn schema() -> Schema {
    schema_from(&fs::read_to_string(fixtures().join("schema.moment")).expect("read schema"))
}

/// A directory under the system's temporary one, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("moments-data-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create dir");
        }
        fs::write(&path, bytes).expect("write");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

/// Every record, and the stream with its counters. Checks on the way that reading without
/// the first pass (`DataSet::with_records`) gives the same records, rejects and counts.
fn read_all(dir: &Path, schema: &Schema) -> (Vec<Record>, RecordStream) {
    let data = DataSet::open(dir, schema).expect("open data");
    let mut stream = data.records();
    let records: Vec<Record> = stream.by_ref().collect();
    let (unscanned, mut other, _) = data.with_records(|s| s.by_ref().collect::<Vec<Record>>());
    assert_eq!(
        records,
        unscanned,
        "read without a first pass: {}",
        dir.display()
    );
    assert_eq!(stream.read_count(), other.read_count());
    assert_eq!(stream.skipped(), other.skipped());
    assert_eq!(stream.rejects(), other.take_rejects().as_slice());
    (records, stream)
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("timestamp")
        .with_timezone(&Utc)
}

/// A record without where it came from: what every format must agree on. Ids of
/// `identify` records are left out too (tables have none and derive them from the line).
fn meaning(r: &Record) -> (DateTime<Utc>, Option<String>, Option<String>, String) {
    let id = match r.kind {
        RecordKind::Identify { .. } => None,
        RecordKind::Event { .. } => Some(r.id.to_string()),
    };
    (
        r.at,
        r.customer.as_deref().map(str::to_string),
        id,
        format!("{:?}", r.kind),
    )
}

fn properties(r: &Record) -> &Properties {
    match &r.kind {
        RecordKind::Event { properties, .. } => properties,
        other => panic!("not an event: {other:?}"),
    }
}

fn traits(r: &Record) -> BTreeMap<String, Value> {
    match &r.kind {
        RecordKind::Identify { traits } => traits
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        other => panic!("not an identify: {other:?}"),
    }
}

fn event_name(r: &Record) -> &str {
    match &r.kind {
        RecordKind::Event { event, .. } => event,
        RecordKind::Identify { .. } => "identify",
    }
}

fn assert_ordered(records: &[Record]) {
    for pair in records.windows(2) {
        assert!(
            pair[0].order_key() <= pair[1].order_key(),
            "out of order: {:?} then {:?}",
            pair[0].order_key(),
            pair[1].order_key()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Parquet, written from the rows of the CSV fixtures

mod pq {
    use std::fs::File;
    use std::path::Path;
    use std::sync::Arc;

    use parquet::basic::Compression;
    use parquet::data_type::{
        BoolType, ByteArray, ByteArrayType, DoubleType, Int32Type, Int64Type,
    };
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;

    pub enum Leaf {
        Str(Vec<&'static str>),
        F64(Vec<f64>),
        I64(Vec<i64>),
        I32(Vec<i32>),
        Bool(Vec<bool>),
    }

    /// A leaf column: its values (present ones only) and levels.
    pub struct Column {
        pub leaf: Leaf,
        pub defs: Option<Vec<i16>>,
        pub reps: Option<Vec<i16>>,
    }

    pub fn required(leaf: Leaf) -> Column {
        Column {
            leaf,
            defs: None,
            reps: None,
        }
    }

    /// An optional top-level column: `None` is null.
    pub fn optional<T: Copy>(values: &[Option<T>], leaf: fn(Vec<T>) -> Leaf) -> Column {
        Column {
            leaf: leaf(values.iter().flatten().copied().collect()),
            defs: Some(values.iter().map(|v| i16::from(v.is_some())).collect()),
            reps: None,
        }
    }

    pub fn write(path: &Path, schema: &str, columns: Vec<Column>) {
        let schema = Arc::new(parse_message_type(schema).expect("parquet schema"));
        let props = Arc::new(
            WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .build(),
        );
        let file = File::create(path).expect("create parquet");
        let mut writer = SerializedFileWriter::new(file, schema, props).expect("writer");
        let mut group = writer.next_row_group().expect("row group");
        for column in columns {
            let mut w = group.next_column().expect("column").expect("a column");
            let (defs, reps) = (column.defs.as_deref(), column.reps.as_deref());
            match column.leaf {
                Leaf::Str(v) => {
                    let v: Vec<ByteArray> = v.into_iter().map(ByteArray::from).collect();
                    w.typed::<ByteArrayType>().write_batch(&v, defs, reps)
                }
                Leaf::F64(v) => w.typed::<DoubleType>().write_batch(&v, defs, reps),
                Leaf::I64(v) => w.typed::<Int64Type>().write_batch(&v, defs, reps),
                Leaf::I32(v) => w.typed::<Int32Type>().write_batch(&v, defs, reps),
                Leaf::Bool(v) => w.typed::<BoolType>().write_batch(&v, defs, reps),
            }
            .expect("write column");
            w.close().expect("close column");
        }
        group.close().expect("close row group");
        writer.close().expect("close file");
    }
}

/// `tests/data/formats/csv/*.csv` as Parquet: native types (dates, timestamps, a list of
/// records) where CSV has text.
fn write_parquet_formats(dir: &Path) {
    use pq::{optional, required, Column, Leaf};
    let micros = |s: &str| at(s).timestamp_micros();
    let millis = |s: &str| at(s).timestamp_millis();
    let days = |s: &str| {
        let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date");
        (d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32
    };
    pq::write(
        &dir.join("customers.parquet"),
        "message customers {
            required binary customer_id (UTF8);
            optional binary email (UTF8);
            optional binary first_name (UTF8);
            optional boolean email_opt_in;
            optional int32 birthday (DATE);
            optional binary timezone (UTF8);
            optional int64 renews_at (TIMESTAMP(MILLIS,true));
            optional int64 updated_at (TIMESTAMP(MICROS,true));
        }",
        vec![
            required(Leaf::Str(vec!["c1", "c2", "c1"])),
            optional(
                &[Some("ada@example.com"), Some("bob@example.com"), None],
                Leaf::Str,
            ),
            optional(&[Some("Ada"), None, Some("Ada L.")], Leaf::Str),
            optional(&[Some(true), Some(false), Some(true)], Leaf::Bool),
            optional(
                &[Some(days("1990-05-17")), None, Some(days("1990-05-17"))],
                Leaf::I32,
            ),
            optional(
                &[Some("Europe/Paris"), None, Some("Europe/Paris")],
                Leaf::Str,
            ),
            optional(
                &[
                    Some(millis("2027-01-01T00:00:00Z")),
                    None,
                    Some(millis("2027-01-01T00:00:00Z")),
                ],
                Leaf::I64,
            ),
            optional(
                &[
                    Some(micros("2026-11-20T09:00:00Z")),
                    Some(micros("2026-11-20T09:30:00Z")),
                    Some(micros("2026-11-21T08:00:00Z")),
                ],
                Leaf::I64,
            ),
        ],
    );
    // The products of the third row: [{p1, Mug, 2, 24.0}, {p3, -, 1, 5.5}]; the other rows
    // have none. Levels: products (optional, 1), list (repeated, 2), element (optional, 3),
    // name (optional, 4).
    let nested = |leaf: Leaf, defs: Vec<i16>| Column {
        leaf,
        defs: Some(defs),
        reps: Some(vec![0, 0, 0, 1, 0]),
    };
    pq::write(
        &dir.join("events.parquet"),
        "message events {
            optional binary customer_id (UTF8);
            required binary event (UTF8);
            required binary timestamp (UTF8);
            optional binary message_id (UTF8);
            optional binary product_id (UTF8);
            optional double price;
            optional int64 quantity;
            optional binary name (UTF8);
            optional binary order_id (UTF8);
            optional double total;
            optional group products (LIST) {
                repeated group list {
                    optional group element {
                        required binary product_id (UTF8);
                        optional binary name (UTF8);
                        required int64 quantity;
                        required double price;
                    }
                }
            }
        }",
        vec![
            optional(&[Some("c1"), Some("c2"), Some("c1"), None], Leaf::Str),
            required(Leaf::Str(vec![
                "Product Added",
                "Product Added",
                "Order Completed",
                "Back In Stock",
            ])),
            required(Leaf::Str(vec![
                "2026-11-20T10:00:00Z",
                "2026-11-20T10:00:00Z",
                "2026-11-20T11:00:00Z",
                "2026-11-21T08:00:00Z",
            ])),
            optional(&[Some("m1"), Some("m2"), Some("m3"), Some("m4")], Leaf::Str),
            optional(&[Some("p1"), Some("p2"), None, Some("p2")], Leaf::Str),
            optional(&[Some(24.0), Some(5.0), None, None], Leaf::F64),
            optional(&[Some(2), None, None, None], Leaf::I64),
            optional(&[Some("Mug"), None, None, Some("Plate")], Leaf::Str),
            optional(&[None, None, Some("o1"), None], Leaf::Str),
            optional(&[None, None, Some(53.5), None], Leaf::F64),
            nested(Leaf::Str(vec!["p1", "p3"]), vec![0, 0, 3, 3, 0]),
            nested(Leaf::Str(vec!["Mug"]), vec![0, 0, 4, 3, 0]),
            nested(Leaf::I64(vec![2, 1]), vec![0, 0, 3, 3, 0]),
            nested(Leaf::F64(vec![24.0, 5.5]), vec![0, 0, 3, 3, 0]),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Formats

#[test]
fn ndjson_reads_typed_records_in_time_order() {
    let (records, stream) = read_all(&fixtures().join("formats/ndjson"), &schema());
    assert_eq!(stream.rejects(), &[] as &[Reject]);
    assert_eq!(stream.read_count(), 7);
    assert_eq!(records.len(), 7);
    assert_ordered(&records);

    // identify: declared traits only, typed; `null` is a trait that is now missing.
    let first = &records[0];
    assert_eq!(first.id.as_str(), "i1");
    assert_eq!(first.customer.as_deref(), Some("c1"));
    assert_eq!(first.origin.file, "events.ndjson");
    assert_eq!(first.origin.line, 1);
    let t = traits(first);
    assert_eq!(t["email_opt_in"], Value::Bool(true));
    assert_eq!(
        t["birthday"],
        Value::Date(NaiveDate::from_ymd_opt(1990, 5, 17).expect("date"))
    );
    assert_eq!(t["timezone"], Value::text("Europe/Paris"));
    assert_eq!(t["renews_at"], Value::DateTime(at("2027-01-01T00:00:00Z")));
    assert!(
        !t.contains_key("shoe_size"),
        "undeclared traits are ignored"
    );
    assert!(!t.contains_key("tier"), "identify sets only what it says");
    assert_eq!(traits(&records[1])["first_name"], Value::Null);

    // Equal timestamps: by customer, then id — not by line.
    assert_eq!(records[2].customer.as_deref(), Some("c1"));
    assert_eq!(records[2].id.as_str(), "m1");
    assert_eq!(records[3].customer.as_deref(), Some("c2"));

    let added = properties(&records[2]);
    assert_eq!(added["price"], Value::Number(24.0));
    assert_eq!(added["quantity"], Value::Int(2));
    assert!(
        !added.contains_key("colour"),
        "undeclared properties are ignored"
    );
    // A default fills a missing property; an int is a number where a number is declared.
    let added = properties(&records[3]);
    assert_eq!(added["quantity"], Value::Int(1));
    assert_eq!(added["price"], Value::Number(5.0));
    assert!(
        !added.contains_key("name"),
        "a missing optional property is absent"
    );

    let order = properties(&records[4]);
    assert_eq!(event_name(&records[4]), "order_completed");
    assert_eq!(order["discount"], Value::Number(0.1), "10% is 0.1");
    let Value::List(products) = &order["products"] else {
        panic!("products: {:?}", order["products"]);
    };
    assert_eq!(products.len(), 2);
    let Value::Record(second) = &products[1] else {
        panic!("a product: {:?}", products[1]);
    };
    assert_eq!(second["quantity"], Value::Int(1));
    assert!(!second.contains_key("name"));

    // Catalog: no customer.
    assert_eq!(event_name(&records[5]), "back_in_stock");
    assert_eq!(records[5].customer, None);

    // An offset is converted to UTC.
    assert_eq!(records[6].at, at("2026-11-21T08:00:00Z"));
    assert_eq!(traits(&records[6])["email"], Value::Null);
}

#[test]
fn csv_reads_the_same_records_as_ndjson() {
    let schema = schema();
    let (ndjson, _) = read_all(&fixtures().join("formats/ndjson"), &schema);
    let (csv, stream) = read_all(&fixtures().join("formats/csv"), &schema);
    assert_eq!(stream.rejects(), &[] as &[Reject]);
    let a: Vec<_> = ndjson.iter().map(meaning).collect();
    let b: Vec<_> = csv.iter().map(meaning).collect();
    assert_eq!(a, b);
    // Table rows without a message id get one from the file and line.
    assert_eq!(csv[0].id.as_str(), "customers.csv:2");
    assert_eq!(csv[0].origin.line, 2);
}

#[test]
fn parquet_reads_the_same_records_as_ndjson() {
    let schema = schema();
    let dir = TempDir::new("parquet");
    write_parquet_formats(dir.path());
    let (ndjson, _) = read_all(&fixtures().join("formats/ndjson"), &schema);
    let (parquet, stream) = read_all(dir.path(), &schema);
    assert_eq!(stream.rejects(), &[] as &[Reject]);
    let a: Vec<_> = ndjson.iter().map(meaning).collect();
    let b: Vec<_> = parquet.iter().map(meaning).collect();
    assert_eq!(a, b);
    assert_eq!(parquet[0].origin.file, "customers.parquet");
    assert_eq!(parquet[0].origin.line, 1, "Parquet rows count from 1");
}

#[test]
fn gzip_reads_the_same_as_plain() {
    let schema = schema();
    let dir = TempDir::new("gzip");
    let text = fs::read(fixtures().join("formats/ndjson/events.ndjson")).expect("read");
    dir.write("events.ndjson.gz", &gzip(&text));
    for name in ["customers.csv", "events.csv"] {
        let text = fs::read(fixtures().join("formats/csv").join(name)).expect("read");
        dir.write(&format!("csv/{name}.gz"), &gzip(&text));
    }
    let (plain, _) = read_all(&fixtures().join("formats/ndjson"), &schema);
    let data = DataSet::open(&dir.path().join("events.ndjson.gz"), &schema).expect("open");
    let gz: Vec<Record> = data.records().collect();
    assert_eq!(
        plain.iter().map(meaning).collect::<Vec<_>>(),
        gz.iter().map(meaning).collect::<Vec<_>>()
    );
    let (csv_gz, stream) = read_all(&dir.path().join("csv"), &schema);
    assert_eq!(stream.rejects(), &[] as &[Reject]);
    assert_eq!(
        plain.iter().map(meaning).collect::<Vec<_>>(),
        csv_gz.iter().map(meaning).collect::<Vec<_>>()
    );
}

#[test]
fn a_mixed_directory_is_merged_in_time_order() {
    let schema = schema();
    let dir = fixtures().join("mixed");
    let data = DataSet::open(&dir, &schema).expect("open");
    let names: Vec<String> = data
        .files()
        .iter()
        .map(|p| {
            p.strip_prefix(&dir)
                .expect("under the dir")
                .to_string_lossy()
                .replace('\\', "/")
        })
        .collect();
    assert_eq!(
        names,
        [
            "customers.csv",
            "events/2026-11-20.ndjson",
            "events/2026-11-21.jsonl",
            "events/late.csv"
        ],
        "README.md and notes.txt are not data"
    );
    let mut stream = data.records();
    let records: Vec<Record> = stream.by_ref().collect();
    assert_eq!(stream.rejects(), &[] as &[Reject]);
    assert_ordered(&records);
    let summary: Vec<(String, Option<&str>, &str)> = records
        .iter()
        .map(|r| {
            (
                r.origin.file.to_string(),
                r.customer.as_deref(),
                event_name(r),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("customers.csv".to_string(), Some("c1"), "identify"),
            ("customers.csv".to_string(), Some("c2"), "identify"),
            ("events/late.csv".to_string(), Some("c1"), "product_added"),
            (
                "events/2026-11-20.ndjson".to_string(),
                Some("c2"),
                "product_added"
            ),
            ("events/late.csv".to_string(), Some("c2"), "product_added"),
            (
                "events/2026-11-20.ndjson".to_string(),
                Some("c1"),
                "product_added"
            ),
            (
                "events/2026-11-21.jsonl".to_string(),
                Some("c1"),
                "order_completed"
            ),
            ("events/2026-11-21.jsonl".to_string(), None, "back_in_stock"),
        ]
    );
    // A customers table without `updated_at` holds for ever: from just before the earliest
    // record of the data set (in `late.csv`). An empty cell is missing.
    assert_eq!(records[0].at, at("2026-11-20T08:59:59Z"));
    assert_eq!(traits(&records[0])["tier"], Value::text("gold"));
    assert_eq!(traits(&records[1])["tier"], Value::Null);
    // A catalog event without a message id gets one from its file and line.
    assert_eq!(records[7].id.as_str(), "events/2026-11-21.jsonl:2");
}

/// The same records in files named so that they are listed in other orders, one of them
/// not sorted by time: always the same sequence.
#[test]
fn file_order_does_not_change_the_sequence() {
    let schema = schema();
    let lines: Vec<String> = (0..40)
        .map(|i| {
            format!(
                r#"{{"type":"track","messageId":"m{i:02}","userId":"c{}","event":"Product Added","timestamp":"2026-11-20T10:{:02}:00Z","properties":{{"product_id":"p{i}","price":1}}}}"#,
                i % 3,
                (i * 7) % 13
            )
        })
        .collect();
    let split = |names: [&str; 3], dir: &TempDir| {
        for (k, name) in names.iter().enumerate() {
            let mut chunk: Vec<&String> = lines.iter().skip(k).step_by(3).collect();
            // The first file is sorted by time, the others are as generated (not sorted).
            if k == 0 {
                chunk.sort_by_key(|l| l[l.find("timestamp").unwrap_or(0)..].to_string());
            }
            let text: String = chunk.iter().map(|l| format!("{l}\n")).collect();
            dir.write(name, text.as_bytes());
        }
    };
    let one = TempDir::new("order-a");
    split(["a.ndjson", "b.ndjson", "c.ndjson"], &one);
    let two = TempDir::new("order-b");
    split(["z.ndjson", "y/x.ndjson", "m.ndjson"], &two);
    let (a, sa) = read_all(one.path(), &schema);
    let (b, sb) = read_all(two.path(), &schema);
    assert!(sa.rejects().is_empty() && sb.rejects().is_empty());
    assert_eq!(a.len(), 40);
    assert_ordered(&a);
    let key = |r: &Record| (r.at, r.customer.clone(), r.id.clone());
    assert_eq!(
        a.iter().map(key).collect::<Vec<_>>(),
        b.iter().map(key).collect::<Vec<_>>()
    );
    // And all in one unsorted file.
    let three = TempDir::new("order-c");
    let mut shuffled = lines.clone();
    shuffled.reverse();
    three.write("all.ndjson", (shuffled.join("\n") + "\n").as_bytes());
    let (c, _) = read_all(three.path(), &schema);
    assert_eq!(
        a.iter().map(key).collect::<Vec<_>>(),
        c.iter().map(key).collect::<Vec<_>>()
    );
}

/// Without the first pass, a file that is not sorted by time ends the stream where that
/// shows, names the file, and `with_records` reads again with the first pass; sorted files
/// are read once.
#[test]
fn reading_without_the_first_pass_notices_a_file_out_of_order() {
    let schema = schema();
    let line = |id: &str, time: &str| {
        format!(
            r#"{{"type":"track","messageId":"{id}","userId":"c1","event":"Product Added","timestamp":"2026-11-20T{time}Z","properties":{{"product_id":"p1","price":1}}}}"#
        ) + "\n"
    };
    let dir = TempDir::new("unscanned");
    let sorted = line("a1", "10:00:00") + &line("a2", "10:05:00") + &line("a3", "10:05:00");
    dir.write("a.ndjson.gz", &gzip(sorted.as_bytes()));
    // Sorted but for its last line, and a line the schema rejects (its timestamp counts).
    let late = line("b1", "09:00:00")
        + "{\"type\":\"track\",\"userId\":\"c1\",\"event\":\"Product Added\",\"timestamp\":\"2026-11-20T09:30:00Z\"}\n"
        + &line("b3", "09:10:00");
    dir.write("b.ndjson", late.as_bytes());
    let data = DataSet::open(dir.path(), &schema).expect("open");

    let mut unscanned = data.records_unscanned();
    let partial: Vec<Record> = unscanned.by_ref().collect();
    assert_eq!(unscanned.unsorted(), Some("b.ndjson"));
    assert!(
        partial.len() < 5,
        "the stream ends early: {} records",
        partial.len()
    );

    let (records, stream, reread) = data.with_records(|s| s.by_ref().collect::<Vec<Record>>());
    assert_eq!(reread, Some("b.ndjson"));
    assert_eq!(stream.unsorted(), None);
    let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["b1", "b3", "a1", "a2", "a3"]);
    assert_eq!(reasons(stream.rejects(), "b.ndjson").len(), 1);

    // The same lines, the rejected one moved into time order: read once.
    let fixed = line("b1", "09:00:00")
        + &line("b3", "09:10:00")
        + "{\"type\":\"track\",\"userId\":\"c1\",\"event\":\"Product Added\",\"timestamp\":\"2026-11-20T09:30:00Z\"}\n";
    dir.write("b.ndjson", fixed.as_bytes());
    let data = DataSet::open(dir.path(), &schema).expect("open");
    let (again, stream, reread) = data.with_records(|s| s.by_ref().collect::<Vec<Record>>());
    assert_eq!(reread, None);
    assert_eq!(again.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ids);
    assert_eq!(reasons(stream.rejects(), "b.ndjson").len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Bad records

fn reasons(rejects: &[Reject], file: &str) -> Vec<(u64, String)> {
    rejects
        .iter()
        .filter(|r| r.origin.file == file)
        .map(|r| (r.origin.line, r.reason.clone()))
        .collect()
}

#[test]
fn bad_ndjson_records_are_rejected_with_file_and_line() {
    let schema = schema();
    let (records, stream) = read_all(&fixtures().join("bad"), &schema);
    let got = reasons(stream.rejects(), "events.ndjson");
    let lines: Vec<u64> = got.iter().map(|r| r.0).collect();
    assert_eq!(lines, [2, 3, 4, 5, 6, 7, 8, 9, 13, 14, 16, 17], "{got:#?}");
    let expect = [
        (2, "bad JSON"),
        (3, "`total` is text \"12.50\", the schema says a number"),
        (4, "`timestamp` is missing"),
        (
            5,
            "`timestamp` is text \"yesterday\", not an RFC 3339 date and time",
        ),
        (6, "`Product Added` needs a `userId`"),
        (7, "`product_id` is missing"),
        (
            8,
            "trait `email_opt_in` is text \"yes\", the schema says true or false",
        ),
        (
            9,
            "`products[0].quantity` is the number 1.5, the schema says a whole number",
        ),
        (13, "an `identify` needs a `userId`"),
        (
            14,
            "trait `timezone` is text \"Mars/Olympus\", the schema says a time zone",
        ),
        (16, "bad JSON"),
        (17, "`timestamp` appears twice"),
    ];
    for ((line, reason), (want_line, want)) in got.iter().zip(expect) {
        assert_eq!(*line, want_line);
        assert!(
            reason.contains(want),
            "line {line}: {reason:?} lacks {want:?}"
        );
        assert!(!reason.contains('\n'), "one line: {reason:?}");
    }
    // The raw line is kept.
    let raw = &stream
        .rejects()
        .iter()
        .find(|r| r.origin.file == "events.ndjson" && r.origin.line == 3)
        .expect("line 3")
        .raw;
    assert!(raw.contains(r#""messageId":"b2""#), "{raw}");

    // The good records around them come through.
    let good: Vec<&str> = records
        .iter()
        .filter(|r| r.origin.file == "events.ndjson")
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(good, ["g1", "g2"]);
    let g2 = records.iter().find(|r| r.id.as_str() == "g2").expect("g2");
    assert_eq!(
        properties(g2)["quantity"],
        Value::Int(3),
        "3.0 is a whole number"
    );

    // Undeclared events and other record types are skipped and counted, not rejected.
    assert_eq!(stream.skipped().get("Page Scrolled"), Some(&2));
    assert_eq!(stream.skipped().get("(page)"), Some(&1));
    assert_eq!(stream.skipped().get("Wishlist Opened"), Some(&1));
}

#[test]
fn bad_csv_rows_are_rejected_with_file_and_line() {
    let schema = schema();
    let (records, stream) = read_all(&fixtures().join("bad"), &schema);
    let got = reasons(stream.rejects(), "events.csv");
    let expect = [
        (3, "the row has 6 columns, the header has 7"),
        (4, "`price` is \"cheap\", the schema says a number"),
        (5, "`quantity` is \"2.5\", the schema says a whole number"),
        (6, "`Product Added` needs a `customer_id`"),
        (7, "`timestamp` is missing"),
    ];
    assert_eq!(got.len(), expect.len(), "{got:#?}");
    for ((line, reason), (want_line, want)) in got.iter().zip(expect) {
        assert_eq!(*line, want_line);
        assert!(
            reason.contains(want),
            "line {line}: {reason:?} lacks {want:?}"
        );
    }
    let raw = &stream
        .rejects()
        .iter()
        .find(|r| r.origin.file == "events.csv" && r.origin.line == 4)
        .expect("line 4")
        .raw;
    assert_eq!(raw, "c1,Product Added,2026-11-20T10:02:00Z,cb2,p1,cheap,1");
    let good: Vec<&str> = records
        .iter()
        .filter(|r| r.origin.file == "events.csv")
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(good, ["cg1", "cg2"]);

    let got = reasons(stream.rejects(), "customers.csv");
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got[0].0, 3);
    assert!(
        got[0].1.contains("trait `email_opt_in` is \"perhaps\""),
        "{got:?}"
    );
    assert_eq!(got[1].0, 4);
    assert!(
        got[1].1.contains("trait `birthday` is \"1990-02-30\""),
        "{got:?}"
    );
    let customers: Vec<(&str, Value)> = records
        .iter()
        .filter(|r| r.origin.file == "customers.csv")
        .map(|r| {
            (
                r.customer.as_deref().unwrap_or(""),
                traits(r)["email_opt_in"].clone(),
            )
        })
        .collect();
    assert_eq!(
        customers,
        [("c1", Value::Bool(true)), ("c4", Value::Bool(false))]
    );

    // Rejects come in file and line order, and the count covers every record read.
    let origins: Vec<_> = stream.rejects().iter().map(|r| r.origin.clone()).collect();
    let mut sorted = origins.clone();
    sorted.sort();
    assert_eq!(origins, sorted);
    let skipped: u64 = stream.skipped().values().sum();
    assert_eq!(
        stream.read_count(),
        records.len() as u64 + stream.rejects().len() as u64 + skipped
    );
}

#[test]
fn unreadable_bytes_are_rejects_and_the_rest_goes_on() {
    let schema = schema();
    let dir = TempDir::new("corrupt");
    let good = |i: u32| {
        format!(
            r#"{{"type":"track","messageId":"g{i}","userId":"c1","event":"Product Added","timestamp":"2026-11-20T10:{i:02}:00Z","properties":{{"product_id":"p1","price":1}}}}"#
        )
    };
    // Not UTF-8, between two good lines.
    let mut bytes = format!("{}\n", good(1)).into_bytes();
    bytes.extend_from_slice(b"{\"type\":\"track\",\"userId\":\"c\xff\xfe\"}\n");
    bytes.extend_from_slice(format!("{}\n", good(2)).as_bytes());
    dir.write("a.ndjson", &bytes);
    // A gzip stream that breaks off in the middle: what came before is read, then one reject.
    let text: String = (10..40).map(|i| good(i) + "\n").collect();
    let mut gz = gzip(text.as_bytes());
    gz.truncate(gz.len() / 2);
    dir.write("b.ndjson.gz", &gz);
    // A gzip member of garbage after a good one.
    let mut two = gzip(format!("{}\n", good(50)).as_bytes());
    two.extend_from_slice(b"\x1f\x8b\x08\x00garbage that is not deflate at all");
    dir.write("c.ndjson.gz", &two);
    // Not Parquet at all; a CSV that is no table; an empty file.
    dir.write("d.parquet", b"PAR1 this is not a parquet file");
    dir.write("e.csv", b"sku,price\np1,3\n");
    dir.write("f.ndjson", b"");
    // And a good file after all of them.
    dir.write("z.ndjson", format!("{}\n", good(59)).as_bytes());

    let (records, stream) = read_all(dir.path(), &schema);
    let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
    assert!(ids.contains(&"g1") && ids.contains(&"g2"), "{ids:?}");
    assert!(ids.contains(&"g50"), "{ids:?}");
    assert!(ids.contains(&"g59"), "{ids:?}");
    let from_b = records
        .iter()
        .filter(|r| r.origin.file == "b.ndjson.gz")
        .count();
    assert!(from_b < 30, "b is cut short");

    let rejects = stream.rejects();
    let by_file = |f: &str| reasons(rejects, f);
    assert_eq!(by_file("a.ndjson").len(), 1);
    assert_eq!(by_file("a.ndjson")[0].0, 2);
    let b = by_file("b.ndjson.gz");
    assert_eq!(b.len(), 1, "one reject for the rest of the file: {b:?}");
    assert!(b[0].1.contains("the rest of the file is skipped"), "{b:?}");
    assert_eq!(
        b[0].0,
        from_b as u64 + 1,
        "at the line where reading stopped"
    );
    assert_eq!(by_file("c.ndjson.gz").len(), 1, "{rejects:#?}");
    assert_eq!(by_file("d.parquet").len(), 1, "{rejects:#?}");
    assert!(
        by_file("d.parquet")[0].1.contains("Parquet"),
        "{rejects:#?}"
    );
    assert_eq!(by_file("e.csv").len(), 1, "{rejects:#?}");
    assert!(
        by_file("e.csv")[0].1.contains("customer_id"),
        "{rejects:#?}"
    );
    assert!(by_file("f.ndjson").is_empty());
}

#[test]
fn random_bytes_never_panic() {
    let schema = schema();
    let dir = TempDir::new("fuzz");
    let pieces: [&[u8]; 24] = [
        b"{",
        b"}",
        b"[",
        b"]",
        b",",
        b":",
        b"\"",
        b"\\",
        b"\n",
        b"\r\n",
        b"\"type\":\"track\"",
        b"\"type\":\"identify\"",
        b"\"event\":\"Order Completed\"",
        b"\"event\":\"Back In Stock\"",
        b"\"timestamp\":\"2026-11-20T10:00:00Z\"",
        b"\"timestamp\":",
        b"\"userId\":\"c1\"",
        b"\"properties\":{\"products\":[{\"quantity\":",
        b"\"traits\":{\"birthday\":\"2026-02-30\"",
        b"1e999",
        b"-0.5",
        b"null",
        b"\xff\xfe",
        b"customer_id,event,timestamp\n",
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for file in 0..6 {
        let mut bytes = Vec::new();
        for _ in 0..3000 {
            bytes.extend_from_slice(pieces[(next() % pieces.len() as u64) as usize]);
        }
        let name = ["x.ndjson", "x.csv", "x.parquet"][file % 3];
        let name = format!("{file}{name}");
        dir.write(&name, &bytes);
        if file == 5 {
            dir.write("y.ndjson.gz", &bytes);
            dir.write("y.csv.gz", &gzip(&bytes));
        }
    }
    let (_, stream) = read_all(dir.path(), &schema);
    assert!(stream.read_count() > 0);
    assert!(!stream.rejects().is_empty());
}

#[test]
fn rejects_are_written_as_ndjson() {
    let schema = schema();
    let (_, stream) = read_all(&fixtures().join("bad"), &schema);
    let dir = TempDir::new("rejects");
    let path = dir.path().join("rejects.ndjson");
    write_rejects(&path, stream.rejects()).expect("write rejects");
    let text = fs::read_to_string(&path).expect("read rejects");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), stream.rejects().len());
    let first = &lines[0];
    let reject = &stream.rejects()[0];
    assert_eq!(first["file"], reject.origin.file);
    assert_eq!(first["line"], reject.origin.line);
    assert_eq!(first["reason"], reject.reason.as_str());
    assert_eq!(first["raw"], reject.raw.as_str());
}

// ---------------------------------------------------------------------------------------------
// Catalog events, identify, the stream

#[test]
fn a_catalog_event_with_a_user_is_still_catalog() {
    let schema = schema();
    let dir = TempDir::new("catalog");
    dir.write(
        "e.ndjson",
        br#"{"type":"track","messageId":"k1","userId":"c9","event":"Back In Stock","timestamp":"2026-11-21T08:00:00Z","properties":{"product_id":"p2"}}
{"type":"track","messageId":"k2","userId":"","event":"Back In Stock","timestamp":"2026-11-21T09:00:00Z","properties":{"product_id":"p3"}}
{"messageId":"k3","event":"Back In Stock","timestamp":"2026-11-21T10:00:00Z","properties":{"product_id":"p4"}}
"#,
    );
    let (records, stream) = read_all(dir.path(), &schema);
    assert!(stream.rejects().is_empty(), "{:?}", stream.rejects());
    assert_eq!(
        records.len(),
        3,
        "a record without `type` but with `event` is a track"
    );
    assert!(records.iter().all(|r| r.customer.is_none()));
}

#[test]
fn identify_updates_traits_field_by_field() {
    let schema = schema();
    let dir = TempDir::new("identify");
    dir.write(
        "e.ndjson",
        br#"{"type":"identify","userId":"c1","timestamp":"2026-11-20T09:00:00Z","traits":{"email":"a@example.com","tier":"gold"}}
{"type":"identify","userId":"c1","timestamp":"2026-11-21T09:00:00Z","traits":{"tier":"vip","email":null}}
{"type":"identify","userId":42,"timestamp":"2026-11-22T09:00:00Z"}
"#,
    );
    let (records, stream) = read_all(dir.path(), &schema);
    assert!(stream.rejects().is_empty(), "{:?}", stream.rejects());
    assert_eq!(records.len(), 3);
    let first = traits(&records[0]);
    assert_eq!(first.len(), 2);
    assert_eq!(first["tier"], Value::text("gold"));
    let second = traits(&records[1]);
    assert_eq!(second["tier"], Value::text("vip"));
    assert_eq!(second["email"], Value::Null);
    assert!(!second.contains_key("first_name"));
    // Ids without `messageId` come from the file and line; a numeric user id is its text.
    assert_eq!(records[0].id.as_str(), "e.ndjson:1");
    assert_eq!(records[2].customer.as_deref(), Some("42"));
    assert!(traits(&records[2]).is_empty());
}

#[test]
fn the_stream_is_send_and_the_data_set_lists_files() {
    fn is_send<T: Send>() {}
    is_send::<RecordStream>();
    is_send::<DataSet>();
    let schema = schema();
    assert!(DataSet::open(Path::new("/no/such/data/dir"), &schema).is_err());
    let data = DataSet::open(&fixtures().join("formats/csv"), &schema).expect("open");
    assert_eq!(data.files().len(), 2);
    // Reading twice gives the same.
    let a: Vec<Record> = data.records().collect();
    let b: Vec<Record> = data.records().collect();
    assert_eq!(a, b);
}

// ---------------------------------------------------------------------------------------------
// Real data

const RETAIL: &str = "/work/shared/datasets/online-retail/events.ndjson.gz";

#[test]
fn the_online_retail_data_set_reads_without_rejects() {
    let path = Path::new(RETAIL);
    if !path.exists() {
        println!("note: {RETAIL} is not here; skipping the real-data test");
        return;
    }
    let schema = schema_from(
        r#"
customer { country: text? }
event order_completed "Order Completed" {
  order_id: text
  total: number
  products: list<{ product_id: text, name: text?, quantity: int, price: number }>
}
event order_cancelled "Order Cancelled" { order_id: text, total: number }
"#,
    );
    let (records, stream) = read_all(path, &schema);
    assert_eq!(stream.rejects(), &[] as &[Reject]);
    assert_eq!(stream.read_count(), 50_818);
    assert_eq!(records.len(), 50_818);
    assert!(stream.skipped().is_empty());
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &records {
        *kinds.entry(event_name(r)).or_default() += 1;
    }
    assert_eq!(kinds["identify"], 5_942);
    assert_eq!(kinds["order_completed"], 36_975);
    assert_eq!(kinds["order_cancelled"], 7_901);
    assert_ordered(&records);
    assert_eq!(records[0].at, at("2009-12-01T07:45:00Z"));
    // At one instant, records go by customer, then traits before events: this customer's
    // identify (`uci-identify-13085`) comes before their first order (`uci-489434`), so the
    // order already knows the customer's country.
    let identify = &records[0];
    assert_eq!(identify.id.as_str(), "uci-identify-13085");
    assert_eq!(traits(identify)["country"], Value::text("United Kingdom"));
    assert_eq!(records[1].id.as_str(), "uci-489434");
}
