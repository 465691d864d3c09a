//! `moments::sample`: the synthetic shop behind `moments sample-data`.
//!
//! The data must be reproducible (same options, same bytes), readable by the engine (every
//! record in the native shape, every event and property declared in `campaigns/schema.moment`
//! with the declared type, every file sorted), and rich enough that every campaign has
//! customers to fire for.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate};
use flate2::read::GzDecoder;
use moments::check::check;
use moments::diagnostic::{SourceFile, Sources};
use moments::model::Schema;
use moments::sample::{write_sample, SampleOptions, SampleSummary};
use moments::types::{Ty, TypeKind};
use serde_json::Value;

/// A fresh directory under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("moments-sample-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temporary directory");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn options(customers: u64, days: u32, seed: u64) -> SampleOptions {
    SampleOptions {
        customers,
        days,
        seed,
        ..SampleOptions::default()
    }
}

fn generate(name: &str, options: &SampleOptions) -> (TempDir, SampleSummary) {
    let dir = TempDir::new(name);
    let summary = write_sample(options, &dir.0).expect("write sample");
    (dir, summary)
}

/// Every file of a directory, relative path → bytes.
fn tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = fs::read(&path).expect("read file");
                let relative = path.strip_prefix(root).expect("under root").to_path_buf();
                out.insert(relative, bytes);
            }
        }
    }
    out
}

/// The lines of a gzip file, parsed.
fn records(path: &Path) -> Vec<Value> {
    let file = fs::File::open(path).expect("open data file");
    BufReader::new(GzDecoder::new(file))
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let line = line.expect("read line");
            serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("{}:{}: not JSON ({e}): {line}", path.display(), i + 1))
        })
        .collect()
}

fn data_files(summary: &SampleSummary) -> Vec<&PathBuf> {
    summary
        .files
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".ndjson.gz"))
        .collect()
}

/// Every record of a run: identify records, then events (in time order, file by file).
fn all_records(summary: &SampleSummary) -> (Vec<Value>, Vec<Value>) {
    let mut identify = Vec::new();
    let mut events = Vec::new();
    for path in data_files(summary) {
        for record in records(path) {
            if record["type"] == "identify" {
                identify.push(record);
            } else {
                events.push(record);
            }
        }
    }
    (identify, events)
}

fn schema() -> Schema {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("campaigns/schema.moment");
    let text = fs::read_to_string(&path).expect("read schema");
    let mut sources = Sources::default();
    let id = sources.add(SourceFile::new(path, text));
    let checked = check(&sources, Some(id), &[]);
    checked.model.expect("the schema checks").schema
}

/// Does a JSON value fit a declared type?
fn fits(value: &Value, ty: &Ty) -> bool {
    if value.is_null() {
        return ty.optional;
    }
    match &ty.kind {
        TypeKind::Text => value.is_string(),
        TypeKind::Int => value.is_i64() || value.is_u64(),
        TypeKind::Number => value.is_number(),
        TypeKind::Bool => value.is_boolean(),
        TypeKind::Date => value
            .as_str()
            .is_some_and(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()),
        TypeKind::DateTime => value
            .as_str()
            .is_some_and(|s| s.ends_with('Z') && DateTime::parse_from_rfc3339(s).is_ok()),
        TypeKind::Timezone => value
            .as_str()
            .is_some_and(|s| s.parse::<chrono_tz::Tz>().is_ok()),
        TypeKind::List(element) => value
            .as_array()
            .is_some_and(|items| items.iter().all(|v| fits(v, element))),
        TypeKind::Record(fields) => value.as_object().is_some_and(|object| {
            fields.iter().all(|(name, ty)| match object.get(name) {
                Some(v) => fits(v, ty),
                None => ty.optional,
            })
        }),
        _ => false,
    }
}

fn text<'a>(record: &'a Value, field: &str) -> &'a str {
    record[field].as_str().unwrap_or("")
}

#[test]
fn same_options_give_the_same_bytes() {
    let options = options(120, 30, 42);
    let (a, _) = generate("same-a", &options);
    let (b, _) = generate("same-b", &options);
    let (ta, tb) = (tree(&a.0), tree(&b.0));
    assert!(ta.len() >= 3, "{:?}", ta.keys().collect::<Vec<_>>());
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
    for (path, bytes) in &ta {
        assert!(
            tb[path] == *bytes,
            "{} differs between two runs",
            path.display()
        );
    }
    // Nothing of the output directory leaks into the files.
    let readme = String::from_utf8(ta[Path::new("README.md")].clone()).expect("UTF-8");
    assert!(
        readme.contains("moments sample-data --customers 120 --days 30 --seed 42"),
        "{readme}"
    );
    assert!(!readme.contains(&a.0.display().to_string()));
}

#[test]
fn another_seed_gives_other_data() {
    let (a, _) = generate("seed-a", &options(100, 20, 1));
    let (b, _) = generate("seed-b", &options(100, 20, 2));
    let (ta, tb) = (tree(&a.0), tree(&b.0));
    for name in ["customers.ndjson.gz", "events/2026-11.ndjson.gz"] {
        let name = Path::new(name);
        assert!(ta[name] != tb[name], "{} is the same", name.display());
    }
}

#[test]
fn records_are_well_formed_sorted_declared_and_typed() {
    let schema = schema();
    let (_dir, summary) = generate("shape", &options(150, 40, 7));
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    let mut total = 0;
    let mut message_ids = BTreeSet::new();
    let mut first_identify: BTreeMap<String, bool> = BTreeMap::new();
    for path in data_files(&summary) {
        let customers_file = path.ends_with("customers.ndjson.gz");
        let mut previous: Option<(String, String, String)> = None;
        for record in records(path) {
            total += 1;
            let kind = text(&record, "type");
            assert_eq!(kind == "identify", customers_file, "{record}");
            let id = text(&record, "messageId").to_string();
            assert!(!id.is_empty(), "{record}");
            assert!(message_ids.insert(id.clone()), "messageId twice: {id}");
            let timestamp = text(&record, "timestamp").to_string();
            assert!(
                timestamp.ends_with('Z') && DateTime::parse_from_rfc3339(&timestamp).is_ok(),
                "{record}"
            );
            let user = record
                .get("userId")
                .map(|u| u.as_str().expect("text userId"));
            let key = (timestamp, user.unwrap_or("").to_string(), id);
            if let Some(previous) = &previous {
                assert!(
                    *previous < key,
                    "{} is not sorted at {record}",
                    path.display()
                );
            }
            previous = Some(key);

            if kind == "identify" {
                let user = user.expect("identify has a userId");
                *by_kind.entry("identify".into()).or_default() += 1;
                let traits = record["traits"].as_object().expect("traits");
                assert!(!traits.is_empty(), "{record}");
                for (name, value) in traits {
                    let field = schema
                        .traits
                        .get(name)
                        .unwrap_or_else(|| panic!("trait `{name}` is not declared: {record}"));
                    assert!(
                        fits(value, &field.ty),
                        "`{name}` is not a {:?}: {record}",
                        field.ty
                    );
                }
                // The first identify of a customer carries the required traits.
                first_identify.entry(user.to_string()).or_insert_with(|| {
                    assert!(traits.contains_key("email"), "{record}");
                    true
                });
                continue;
            }

            assert_eq!(kind, "track", "{record}");
            let name = text(&record, "event");
            *by_kind.entry(name.to_string()).or_default() += 1;
            let event = schema
                .event_by_source(name)
                .unwrap_or_else(|| panic!("event {name:?} is not declared in the schema"));
            assert_eq!(event.catalog, user.is_none(), "{record}");
            let properties = record["properties"].as_object().expect("properties");
            for (field, declared) in &event.fields {
                match properties.get(field) {
                    Some(value) => assert!(
                        fits(value, &declared.ty),
                        "`{field}` is not a {:?}: {record}",
                        declared.ty
                    ),
                    None => assert!(declared.ty.optional, "`{field}` is missing: {record}"),
                }
            }
        }
    }
    assert_eq!(total, summary.records);
    assert_eq!(by_kind, summary.by_kind);
    // Every customer's first record is an identify at or before their first event.
    assert_eq!(first_identify.len() as u64, 150);
}

#[test]
fn summary_lists_the_files() {
    let (dir, summary) = generate("files", &options(50, 45, 3));
    let names: Vec<String> = summary
        .files
        .iter()
        .map(|p| {
            p.strip_prefix(&dir.0)
                .expect("under the output directory")
                .to_string_lossy()
                .replace('\\', "/")
        })
        .collect();
    assert_eq!(
        names,
        [
            "customers.ndjson.gz",
            "events/2026-11.ndjson.gz",
            "events/2026-12.ndjson.gz",
            "README.md"
        ]
    );
    for path in &summary.files {
        assert!(path.is_file(), "{}", path.display());
    }
    assert_eq!(summary.records, summary.by_kind.values().sum::<u64>());
    let readme = fs::read_to_string(dir.0.join("README.md")).expect("README");
    assert!(readme.contains("2026-11-01 to 2026-12-15"), "{readme}");
}

#[test]
fn a_small_run_has_what_every_campaign_needs() {
    let (_dir, summary) = generate("features", &options(200, 45, 42));
    let (identify, events) = all_records(&summary);

    let has = |name: &str, test: &dyn Fn(&Value) -> bool| {
        events
            .iter()
            .any(|r| r["event"] == name && test(&r["properties"]))
    };
    assert!(
        has("Order Delivered", &|p| p["late"] == true),
        "a late delivery"
    );
    assert!(has("Order Refunded", &|_| true), "a refund");
    assert!(
        has("Product Reviewed", &|p| p["rating"]
            .as_i64()
            .is_some_and(|r| r <= 2)),
        "a review of 2 or less"
    );
    assert!(has("Order Issue Reported", &|_| true), "an issue reported");
    assert!(has("Message Clicked", &|_| true), "a click");
    assert!(has("Referral Shared", &|_| true), "a referral share");

    // A product back in stock that somebody asked about before.
    let mut asked: BTreeMap<&str, &str> = BTreeMap::new();
    let mut back_after_ask = false;
    for r in &events {
        let product = r["properties"]["product_id"].as_str().unwrap_or("");
        match text(r, "event") {
            "Stock Alert Requested" => {
                asked.entry(product).or_insert(text(r, "timestamp"));
            }
            "Back In Stock" => {
                assert!(r.get("userId").is_none(), "{r}");
                back_after_ask |= asked
                    .get(product)
                    .is_some_and(|&t| t < text(r, "timestamp"));
            }
            _ => {}
        }
    }
    assert!(
        back_after_ask,
        "a back-in-stock event after a stock alert request"
    );

    let trait_set = |name: &str| identify.iter().any(|r| !r["traits"][name].is_null());
    assert!(trait_set("birthday"), "a birthday");
    assert!(trait_set("subscription_renews_at"), "a subscription");
    assert!(trait_set("referral_code"), "a referral code");
    assert!(
        identify.iter().any(|r| r["traits"]["birthday"]
            .as_str()
            .is_some_and(|b| b.ends_with("-02-29"))),
        "a leap-day birthday"
    );
    assert!(
        identify
            .iter()
            .any(|r| r["traits"]["email_opt_in"] == false && r["traits"].get("email").is_none()),
        "an unsubscribe after the first identify"
    );

    // Lifetime spend past 1000, and a points balance past 500.
    let mut spend: BTreeMap<&str, f64> = BTreeMap::new();
    let mut balance: BTreeMap<&str, i64> = BTreeMap::new();
    let mut vip = false;
    let mut reward = false;
    for r in &events {
        let user = text(r, "userId");
        let p = &r["properties"];
        match text(r, "event") {
            "Order Completed" => {
                let s = spend.entry(user).or_default();
                *s += p["total"].as_f64().unwrap_or(0.0);
                vip |= *s > 1000.0;
            }
            "Points Earned" => {
                let b = balance.entry(user).or_default();
                let before = *b;
                *b += p["points"].as_i64().unwrap_or(0);
                reward |= before < 500 && *b >= 500;
            }
            "Points Redeemed" => {
                *balance.entry(user).or_default() -= p["points"].as_i64().unwrap_or(0)
            }
            _ => {}
        }
    }
    assert!(vip, "a customer whose orders sum past 1000");
    assert!(reward, "a points balance crossing 500");
}

#[test]
fn orders_match_their_products() {
    let (_dir, summary) = generate("orders", &options(80, 30, 11));
    let (_, events) = all_records(&summary);
    let mut orders = 0;
    for r in events.iter().filter(|r| r["event"] == "Order Completed") {
        orders += 1;
        let p = &r["properties"];
        let products = p["products"].as_array().expect("products");
        assert!(!products.is_empty(), "{r}");
        let lines: f64 = products
            .iter()
            .map(|l| l["price"].as_f64().unwrap_or(0.0) * l["quantity"].as_f64().unwrap_or(0.0))
            .sum();
        let total = p["total"].as_f64().unwrap_or(0.0);
        // The total is the lines, less a £5 reward when points were redeemed.
        assert!(
            (total - lines).abs() < 0.005 || (total - (lines - 5.0)).abs() < 0.005,
            "{r}"
        );
    }
    assert!(orders > 0);
}

#[test]
fn large_runs_are_split_into_moderate_files() {
    // Enough customers that a month would be too large a file: spans of days instead, which
    // start again on the first of a month.
    let options = SampleOptions {
        start: DateTime::parse_from_rfc3339("2026-11-30T00:00:00Z")
            .expect("date")
            .to_utc(),
        ..options(70_000, 2, 1)
    };
    let (dir, summary) = generate("split", &options);
    assert!(dir.0.join("events/2026-11-30.ndjson.gz").is_file());
    assert!(dir.0.join("events/2026-12-01.ndjson.gz").is_file());
    assert_eq!(data_files(&summary).len(), 3);
    let readme = fs::read_to_string(dir.0.join("README.md")).expect("README");
    assert!(readme.contains("--start 2026-11-30"), "{readme}");
}

#[test]
fn an_empty_shop_still_has_its_files() {
    let (dir, summary) = generate("empty", &options(0, 3, 1));
    assert_eq!(summary.records, 0);
    assert!(dir.0.join("customers.ndjson.gz").is_file());
    assert!(dir.0.join("events/2026-11.ndjson.gz").is_file());
}

#[test]
fn stale_event_files_are_removed_and_nothing_else() {
    let dir = TempDir::new("stale");
    fs::create_dir_all(dir.0.join("events")).expect("mkdir");
    fs::write(dir.0.join("events/2020-01.ndjson.gz"), b"old").expect("write");
    fs::write(dir.0.join("events/notes.txt"), b"mine").expect("write");
    write_sample(&options(10, 5, 1), &dir.0).expect("write sample");
    assert!(!dir.0.join("events/2020-01.ndjson.gz").exists());
    assert!(dir.0.join("events/notes.txt").exists());
    assert!(dir.0.join("events/2026-11.ndjson.gz").exists());
}

#[test]
fn options_out_of_range_are_errors() {
    let dir = TempDir::new("range");
    let too_many = SampleOptions {
        customers: u64::MAX,
        ..SampleOptions::default()
    };
    let error = write_sample(&too_many, &dir.0).expect_err("too many customers");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    let too_long = SampleOptions {
        days: u32::MAX,
        ..SampleOptions::default()
    };
    assert!(write_sample(&too_long, &dir.0).is_err());
    // No days at all is fine: empty files and a README.
    let summary = write_sample(&options(10, 0, 1), &dir.0).expect("no days");
    assert_eq!(summary.records, 0);
}

#[test]
fn the_default_period_covers_the_holiday_cutoff() {
    let options = SampleOptions::default();
    assert_eq!(
        (options.customers, options.days, options.seed),
        (1000, 60, 42)
    );
    let first = options.start.date_naive();
    assert_eq!(first, NaiveDate::from_ymd_opt(2026, 11, 1).expect("date"));
    let last = first + chrono::Duration::days(i64::from(options.days) - 1);
    let cutoff = NaiveDate::from_ymd_opt(2026, 12, 18).expect("date");
    assert!(first <= cutoff && cutoff + chrono::Duration::days(1) <= last);
}
