//! `cargo bench`: how long `check` takes over the twelve shipped campaigns (parse, check,
//! templates and all), and over one moment alone. Prints the mean and the fastest run.

use std::hint::black_box;
use std::time::{Duration, Instant};

use moments::check::check;
use moments::diagnostic::{SourceFile, Sources};

fn load() -> (Sources, usize, Vec<usize>) {
    let mut sources = Sources::default();
    let mut paths: Vec<_> = std::fs::read_dir("campaigns")
        .expect("run from the crate root")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "moment"))
        .collect();
    paths.sort();
    let mut schema = None;
    let mut moments = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).expect("readable");
        let is_schema = path.ends_with("schema.moment");
        let id = sources.add(SourceFile::new(path, text));
        if is_schema {
            schema = Some(id);
        } else {
            moments.push(id);
        }
    }
    (sources, schema.expect("campaigns/schema.moment"), moments)
}

fn measure(name: &str, mut run: impl FnMut()) {
    // Warm up, then run for about two seconds.
    for _ in 0..20 {
        run();
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        let t = Instant::now();
        run();
        times.push(t.elapsed());
    }
    let mean = start.elapsed() / times.len() as u32;
    let fastest = times.iter().min().copied().unwrap_or_default();
    println!(
        "{name:<40} mean {:>9.1} µs   fastest {:>9.1} µs   ({} runs)",
        mean.as_secs_f64() * 1e6,
        fastest.as_secs_f64() * 1e6,
        times.len()
    );
}

fn main() {
    let (sources, schema, moments) = load();
    let checked = check(&sources, Some(schema), &moments);
    assert_eq!(checked.error_count(), 0, "the campaigns should be valid");
    measure("check: schema + 12 campaigns", || {
        black_box(check(
            black_box(&sources),
            Some(schema),
            black_box(&moments),
        ));
    });
    measure("check: schema + cart_wobble", || {
        black_box(check(
            black_box(&sources),
            Some(schema),
            black_box(&moments[..1]),
        ));
    });
    measure("parse: schema only", || {
        black_box(moments::parse::parse(schema, sources.get(schema)));
    });
}
