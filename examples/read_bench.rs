//! Read speed of `moments::data`: generates a synthetic 1M-line NDJSON.gz in a temporary
//! directory (or reads the directory given as the first argument) and reports records/second.
//!
//! `cargo run --release --example read_bench [DATA_DIR] [LINES]`

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use moments::check;
use moments::data::DataSet;
use moments::diagnostic::{SourceFile, Sources};

const SCHEMA: &str = r#"
customer {
  email: text?
  country: text?
  tier: text = "standard"
  email_opt_in: bool = false
}
event product_viewed "Product Viewed" { product_id: text, price: number, category: text? }
event product_added "Product Added" { product_id: text, price: number, quantity: int }
event order_completed "Order Completed" {
  order_id: text
  total: number
  products: list<{ product_id: text, name: text?, quantity: int, price: number }>
}
event back_in_stock "Back In Stock" catalog { product_id: text }
"#;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let lines: u64 = args
        .get(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let mut sources = Sources::default();
    let id = sources.add(SourceFile::new("schema.moment", SCHEMA));
    let Some(model) = check::check(&sources, Some(id), &[]).model else {
        eprintln!("the benchmark schema does not check");
        std::process::exit(2);
    };
    let (dir, generated) = match args.get(1) {
        Some(dir) if dir != "-" => (PathBuf::from(dir), false),
        _ => {
            let dir =
                std::env::temp_dir().join(format!("moments-read-bench-{}", std::process::id()));
            let started = Instant::now();
            generate(&dir, lines).expect("generate the data");
            eprintln!(
                "generated {lines} lines in {:.1}s",
                started.elapsed().as_secs_f64()
            );
            (dir, true)
        }
    };
    let size: u64 = walk_size(&dir);
    let data = DataSet::open(&dir, &model.schema).expect("open the data");
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    // `records` makes a first pass over the files (as `run` does); `records_unscanned` reads
    // each once, checking that it is sorted (as `backtest` does).
    for (round, first_pass) in (0..rounds).flat_map(|r| [(r, true), (r, false)]) {
        let started = Instant::now();
        let cpu_started = cpu_seconds();
        let mut stream = if first_pass {
            data.records()
        } else {
            data.records_unscanned()
        };
        let mut count = 0u64;
        let mut first = None;
        for record in stream.by_ref() {
            if first.is_none() {
                first = Some(started.elapsed().as_secs_f64());
            }
            std::hint::black_box(&record);
            count += 1;
        }
        let secs = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu_started;
        println!(
            "round {round}, {}: {count} records ({} read, {} rejected, {} skipped) in {secs:.3}s \
             (first record after {:.3}s; {cpu:.2}s of CPU): {:.0} records/s, {:.0} records/s of CPU, {:.0} MB/s of files",
            if first_pass {
                "with the first pass"
            } else {
                "without"
            },
            stream.read_count(),
            stream.rejects().len(),
            stream.skipped().values().sum::<u64>(),
            first.unwrap_or(0.0),
            stream.read_count() as f64 / secs,
            stream.read_count() as f64 / cpu,
            size as f64 / secs / 1e6,
        );
    }
    if generated && std::env::var_os("KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    } else if generated {
        eprintln!("kept {}", dir.display());
    }
}

/// CPU time of this process (user + system), from `/proc/self/stat`; 0 where there is none.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name, which is in parentheses: utime is the 12th, stime 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn walk_size(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return std::fs::metadata(dir).map_or(0, |m| m.len());
    };
    entries
        .filter_map(Result::ok)
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                walk_size(&p)
            } else {
                e.metadata().map_or(0, |m| m.len())
            }
        })
        .sum()
}

/// A day of a shop: identifies, views, cart adds, orders, some undeclared events; sorted.
fn generate(dir: &std::path::Path, lines: u64) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let file = std::fs::File::create(dir.join("events.ndjson.gz"))?;
    let mut out = std::io::BufWriter::new(flate2::write::GzEncoder::new(
        file,
        flate2::Compression::fast(),
    ));
    let start = 1_790_000_000i64; // 2026-09-21
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..lines {
        let at = chrono::DateTime::from_timestamp(start + (i as i64) / 4, 0).unwrap_or_default();
        let ts = at.format("%Y-%m-%dT%H:%M:%SZ");
        let user = rand() % 100_000;
        let product = rand() % 5_000;
        let price = (rand() % 10_000) as f64 / 100.0;
        match rand() % 20 {
            0 => writeln!(
                out,
                r#"{{"type":"identify","messageId":"m{i}","userId":"c{user}","timestamp":"{ts}","traits":{{"email":"c{user}@example.com","country":"United Kingdom","email_opt_in":true,"plan":"free"}}}}"#
            )?,
            1..=9 => writeln!(
                out,
                r#"{{"type":"track","messageId":"m{i}","userId":"c{user}","event":"Product Viewed","timestamp":"{ts}","properties":{{"product_id":"p{product}","price":{price},"category":"mugs","url":"https://shop.example/p/{product}"}},"context":{{"ip":"203.0.113.9","userAgent":"Mozilla/5.0"}}}}"#
            )?,
            10..=13 => writeln!(
                out,
                r#"{{"type":"track","messageId":"m{i}","userId":"c{user}","event":"Product Added","timestamp":"{ts}","properties":{{"product_id":"p{product}","price":{price},"quantity":{}}}}}"#,
                1 + rand() % 3
            )?,
            14..=15 => writeln!(
                out,
                r#"{{"type":"track","messageId":"m{i}","userId":"c{user}","event":"Order Completed","timestamp":"{ts}","properties":{{"order_id":"o{i}","total":{:.2},"currency":"GBP","products":[{{"product_id":"p{product}","name":"MUG","quantity":2,"price":{price}}},{{"product_id":"p{}","name":"PLATE","quantity":1,"price":3.5}}]}}}}"#,
                price * 2.0 + 3.5,
                rand() % 5_000
            )?,
            16 => writeln!(
                out,
                r#"{{"type":"track","messageId":"m{i}","event":"Back In Stock","timestamp":"{ts}","properties":{{"product_id":"p{product}"}}}}"#
            )?,
            _ => writeln!(
                out,
                r#"{{"type":"track","messageId":"m{i}","userId":"c{user}","event":"Page Scrolled","timestamp":"{ts}","properties":{{"depth":0.5}}}}"#
            )?,
        }
    }
    out.into_inner()?.finish()?;
    Ok(())
}
