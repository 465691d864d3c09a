//! The `moments` command line.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use moments::format;
use moments::output::{self, Format};
use moments::project;

/// Records are read and typed on reading threads and freed on the engine's: mimalloc keeps
/// that cheap where the system allocator contends.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Micro-moment campaigns for online shops: check, format and run `.moment` files.
#[derive(Parser)]
#[command(name = "moments", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DeliverKind {
    Outbox,
    Webhook,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ReportFormat {
    Table,
    Json,
    Html,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TextOrJson {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Check campaign files against their schema; report every problem.
    ///
    /// Exit status: 0 when there is no error, 1 when there are errors (or warnings, with
    /// --deny-warnings), 2 when the command itself cannot run (bad usage, unreadable path).
    Check {
        /// Files or directories (default: `campaigns`).
        paths: Vec<PathBuf>,
        /// How to report findings.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// Count warnings as errors for the exit status.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// One scheduling tick up to `now`: decide what is due, record it, deliver it.
    ///
    /// Sends are recorded in the state database (unique by send id) in one transaction
    /// before anything is delivered, so killing the process at any point and running again
    /// neither loses nor repeats a send.
    Run {
        /// The campaign directory.
        #[arg(long, default_value = "campaigns")]
        campaigns: PathBuf,
        /// The customer data directory.
        #[arg(long)]
        data: PathBuf,
        /// Decide everything due up to this instant (default: the clock).
        #[arg(long, value_parser = parse_instant)]
        now: Option<chrono::DateTime<chrono::Utc>>,
        /// Keep ticking, one tick per period (`30s`, `5m`, `1h`), until SIGINT or SIGTERM;
        /// the tick in flight finishes and is recorded before the process exits.
        #[arg(long, value_parser = parse_period)]
        every: Option<std::time::Duration>,
        /// The state database.
        #[arg(long, default_value = ".moments/state.db")]
        state: PathBuf,
        /// How sends leave: appended to an outbox file, or POSTed to a webhook.
        #[arg(long, value_enum, default_value_t = DeliverKind::Outbox)]
        deliver: DeliverKind,
        /// The outbox file (with `--deliver outbox`).
        #[arg(long, default_value = ".moments/outbox.ndjson")]
        outbox: PathBuf,
        /// The endpoint (with `--deliver webhook`); `webhook` messages go to their own `url`.
        #[arg(long)]
        endpoint: Option<String>,
        /// Engines deciding side by side, each for a share of the customers (default: one
        /// per core, at most 8). What is recorded is the same whatever the number.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
        threads: Option<u16>,
    },
    /// Dry-run the campaigns over historical data, keeping no state.
    ///
    /// Writes `entries.ndjson` (every entry and its fate, in the order they were decided),
    /// `sends.ndjson` (every sent or control message, by send instant) and `rejects.ndjson`
    /// (data records that could not be read) to --out, and prints entries by fate for each
    /// moment. Same inputs, byte-identical outputs.
    Backtest {
        /// The campaign directory.
        #[arg(long, default_value = "campaigns")]
        campaigns: PathBuf,
        /// The customer data directory (NDJSON, CSV, Parquet; gzip welcome).
        #[arg(long)]
        data: PathBuf,
        /// Start of the period: entries triggered earlier are not reported (RFC 3339 or a date).
        #[arg(long, value_parser = parse_instant)]
        from: chrono::DateTime<chrono::Utc>,
        /// End of the period: nothing after it is decided (RFC 3339 or a date).
        #[arg(long, value_parser = parse_instant)]
        to: chrono::DateTime<chrono::Utc>,
        /// Where to write the results.
        #[arg(long, default_value = ".moments/backtest")]
        out: PathBuf,
        /// Fail (exit 1) if any data record was rejected.
        #[arg(long)]
        strict: bool,
        /// Engines deciding side by side, each for a share of the customers (default: one
        /// per core, at most 8). The output is the same whatever the number.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
        threads: Option<u16>,
    },
    /// KPIs per moment: treatment against control, with 95% intervals, lift and goal.
    ///
    /// Reads the sends and entries of the state database (default) or of a backtest's
    /// output, and the customer data to see what customers did after each send.
    Report {
        /// The campaign directory.
        #[arg(long, default_value = "campaigns")]
        campaigns: PathBuf,
        /// The customer data directory.
        #[arg(long)]
        data: PathBuf,
        /// The state database of `moments run`.
        #[arg(long, conflicts_with = "backtest_dir")]
        state: Option<PathBuf>,
        /// The output directory of `moments backtest` instead of a state database.
        #[arg(long)]
        backtest_dir: Option<PathBuf>,
        /// Measure windows closed by this instant (default: the latest instant in the data).
        #[arg(long, value_parser = parse_instant)]
        as_of: Option<chrono::DateTime<chrono::Utc>>,
        /// A table for the terminal, JSON, or a self-contained HTML page with charts.
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Why a customer did or did not get each moment's message.
    ///
    /// Runs the campaigns over the data up to --to with the customer traced, and shows
    /// every trigger occurrence: the trigger, each condition with the values it read, and
    /// the entry's fate with its reason; for a moment that never fired, what was missing.
    Explain {
        /// The customer's id (`userId`).
        #[arg(long)]
        customer: String,
        /// Only this moment.
        #[arg(long)]
        moment: Option<String>,
        /// The campaign directory.
        #[arg(long, default_value = "campaigns")]
        campaigns: PathBuf,
        /// The customer data directory.
        #[arg(long)]
        data: PathBuf,
        /// Show occurrences from this instant (default: the start of the data).
        #[arg(long, value_parser = parse_instant)]
        from: Option<chrono::DateTime<chrono::Utc>>,
        /// Run up to this instant (default: the clock).
        #[arg(long, value_parser = parse_instant)]
        to: Option<chrono::DateTime<chrono::Utc>>,
        /// Text for a person, or JSON.
        #[arg(long, value_enum, default_value_t = TextOrJson::Text)]
        format: TextOrJson,
    },
    /// A moment's message rendered for a customer of the data, with the variables it reads.
    ///
    /// Uses the customer's traits at --at and the latest occurrence of the trigger (its
    /// event and `let`s) up to then.
    Preview {
        /// The moment's id.
        moment: String,
        /// The customer's id.
        #[arg(long, conflicts_with = "sample", required_unless_present = "sample")]
        customer: Option<String>,
        /// A customer of the data who got this moment (the first by id), or else one who
        /// triggered it.
        #[arg(long)]
        sample: bool,
        /// The campaign directory.
        #[arg(long, default_value = "campaigns")]
        campaigns: PathBuf,
        /// The customer data directory.
        #[arg(long)]
        data: PathBuf,
        /// Read the data up to this instant (default: the clock).
        #[arg(long, value_parser = parse_instant)]
        at: Option<chrono::DateTime<chrono::Utc>>,
        /// Text for a person, or JSON.
        #[arg(long, value_enum, default_value_t = TextOrJson::Text)]
        format: TextOrJson,
    },
    /// Write a deterministic synthetic shop's customer data (gzipped NDJSON) to --out.
    SampleData {
        /// How many customers.
        #[arg(long, default_value_t = 1000)]
        customers: u64,
        /// How many days, from --start.
        #[arg(long, default_value_t = 60)]
        days: u32,
        /// The same seed gives the same files, byte for byte.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// The first day (default 2026-11-01).
        #[arg(long, value_parser = parse_instant)]
        start: Option<chrono::DateTime<chrono::Utc>>,
        /// Where to write the files.
        #[arg(long)]
        out: PathBuf,
    },
    /// Rewrite campaign files in the canonical layout (keeps every comment).
    ///
    /// With --check, change nothing: list the files that would change and exit 1 if any.
    Fmt {
        /// Files or directories (default: `campaigns`).
        paths: Vec<PathBuf>,
        /// Only report files that are not formatted.
        #[arg(long)]
        check: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Deeply nested input is refused by the parser, but the checker recurses over what is
    // accepted: give it room.
    let worker = std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(move || run(cli));
    match worker.map(|w| w.join()) {
        Ok(Ok(code)) => ExitCode::from(code),
        _ => {
            eprintln!("error: internal failure");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> u8 {
    match cli.command {
        Command::Check {
            paths,
            format,
            deny_warnings,
        } => check(paths, format, deny_warnings),
        Command::Fmt { paths, check } => fmt(paths, check),
        Command::Run {
            campaigns,
            data,
            now,
            every,
            state,
            deliver,
            outbox,
            endpoint,
            threads,
        } => {
            if every.is_some() && now.is_some() {
                eprintln!("error: `--every` ticks on the clock; it cannot be used with `--now`");
                return 2;
            }
            let deliver = DeliverOptions {
                kind: deliver,
                outbox,
                endpoint,
            };
            let engines = engine_threads(threads);
            run_ticks(&campaigns, &data, now, every, &state, &deliver, engines)
        }
        Command::SampleData {
            customers,
            days,
            seed,
            start,
            out,
        } => sample_data(customers, days, seed, start, &out),
        Command::Backtest {
            campaigns,
            data,
            from,
            to,
            out,
            strict,
            threads,
        } => backtest(&campaigns, &data, from, to, &out, strict, threads),
        Command::Report {
            campaigns,
            data,
            state,
            backtest_dir,
            as_of,
            format,
            out,
        } => report(&campaigns, &data, state, backtest_dir, as_of, format, out),
        Command::Explain {
            customer,
            moment,
            campaigns,
            data,
            from,
            to,
            format,
        } => explain(&campaigns, &data, &customer, moment, from, to, format),
        Command::Preview {
            moment,
            customer,
            sample: _,
            campaigns,
            data,
            at,
            format,
        } => preview(&campaigns, &data, &moment, customer, at, format),
    }
}

/// Print to standard output; a closed pipe (`moments report | head`) is not an error.
fn print_out(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

fn default_paths(paths: Vec<PathBuf>) -> Vec<PathBuf> {
    if paths.is_empty() {
        vec![PathBuf::from("campaigns")]
    } else {
        paths
    }
}

fn color_wanted() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn check(paths: Vec<PathBuf>, format: Format, deny_warnings: bool) -> u8 {
    let paths = default_paths(paths);
    let groups = match project::discover(&paths) {
        Ok(groups) => groups,
        Err(error) => {
            eprintln!("error: {error}");
            return 2;
        }
    };
    if groups.is_empty() {
        eprintln!(
            "error: no `.moment` files in {}",
            paths
                .iter()
                .map(|p| format!("`{}`", p.display()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        return 2;
    }
    let mut results = Vec::new();
    for group in &groups {
        match project::check_group(group) {
            Ok(result) => results.push(result),
            Err(error) => {
                eprintln!("error: {error}");
                return 2;
            }
        }
    }
    let views: Vec<_> = results
        .iter()
        .map(|(sources, checked)| (sources, checked.diagnostics.as_slice()))
        .collect();
    let rendered = output::render(format, &views, color_wanted());
    let errors: usize = results.iter().map(|(_, c)| c.error_count()).sum();
    let warnings: usize = results.iter().map(|(_, c)| c.warning_count()).sum();
    let files: usize = results.iter().map(|(s, _)| s.len()).sum();
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(rendered.as_bytes());
    if format == Format::Human {
        let _ = writeln!(stdout, "{}", summary(files, errors, warnings));
    }
    let _ = stdout.flush();
    if errors > 0 || deny_warnings && warnings > 0 {
        1
    } else {
        0
    }
}

fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

fn summary(files: usize, errors: usize, warnings: usize) -> String {
    let checked = format!("checked {}", plural(files, "file"));
    match (errors, warnings) {
        (0, 0) => format!("{checked}: no problems"),
        (e, 0) => format!("{checked}: {}", plural(e, "error")),
        (0, w) => format!("{checked}: {}", plural(w, "warning")),
        (e, w) => format!(
            "{checked}: {} and {}",
            plural(e, "error"),
            plural(w, "warning")
        ),
    }
}

fn fmt(paths: Vec<PathBuf>, check_only: bool) -> u8 {
    let paths = default_paths(paths);
    let groups = match project::discover(&paths) {
        Ok(groups) => groups,
        Err(error) => {
            eprintln!("error: {error}");
            return 2;
        }
    };
    let files: Vec<PathBuf> = groups
        .into_iter()
        .flat_map(|g| g.schema.into_iter().chain(g.moments))
        .collect();
    if files.is_empty() {
        eprintln!("error: no `.moment` files to format");
        return 2;
    }
    let mut unformatted = 0;
    let mut refused = 0;
    let mut stdout = std::io::stdout().lock();
    for path in &files {
        let source = match project::read_source(path) {
            Ok((source, None)) => source,
            Ok((_, Some((_, message)))) => {
                let _ = writeln!(stdout, "error: `{}`: {message}", path.display());
                refused += 1;
                continue;
            }
            Err(error) => {
                eprintln!("error: {error}");
                return 2;
            }
        };
        match format::format_source(&source) {
            Ok(formatted) if formatted == source.text => {}
            Ok(formatted) => {
                unformatted += 1;
                if check_only {
                    let _ = writeln!(stdout, "would reformat {}", path.display());
                } else if let Err(error) = std::fs::write(path, formatted) {
                    eprintln!("error: cannot write `{}`: {error}", path.display());
                    return 2;
                } else {
                    let _ = writeln!(stdout, "formatted {}", path.display());
                }
            }
            Err(format::FormatError::Syntax(diagnostics)) => {
                refused += 1;
                let mut sources = moments::diagnostic::Sources::default();
                sources.add(source);
                let rendered =
                    output::render(Format::Human, &[(&sources, &diagnostics)], color_wanted());
                let _ = write!(stdout, "{rendered}");
                let _ = writeln!(
                    stdout,
                    "error: `{}` has syntax errors and was left as it is",
                    path.display()
                );
            }
            Err(format::FormatError::Unsound(reason)) => {
                refused += 1;
                let _ = writeln!(
                    stdout,
                    "error: `{}` was left as it is: formatting would change it ({reason})",
                    path.display()
                );
            }
        }
    }
    let verb = if check_only {
        "would reformat"
    } else {
        "reformatted"
    };
    let _ = writeln!(
        stdout,
        "{} checked, {unformatted} {verb}{}",
        plural(files.len(), "file"),
        if refused > 0 {
            format!(", {refused} left as they are")
        } else {
            String::new()
        }
    );
    if refused > 0 || check_only && unformatted > 0 {
        1
    } else {
        0
    }
}

/// `2026-11-20T10:00:00Z`, or a date meaning its midnight in UTC.
fn parse_instant(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| format!("`{text}` is not a date (`2026-11-20`) or an RFC 3339 instant"))
}

fn parse_period(text: &str) -> Result<std::time::Duration, String> {
    match moments::data::parse_duration(text) {
        Some(seconds) if seconds > 0 => Ok(std::time::Duration::from_secs(seconds as u64)),
        _ => Err(format!(
            "`{text}` is not a period: write a number of seconds or `30s`, `5m`, `1h`, `1d`"
        )),
    }
}

/// Check the campaigns; on errors print them and give the exit status.
fn load_model(campaigns: &std::path::Path) -> Result<moments::model::Model, u8> {
    let groups = project::discover(&[campaigns.to_path_buf()]).map_err(|e| {
        eprintln!("error: {e}");
        2u8
    })?;
    let Some(group) = groups.into_iter().find(|g| g.schema.is_some()) else {
        eprintln!("error: no `schema.moment` in `{}`", campaigns.display());
        return Err(2);
    };
    let (sources, checked) = project::check_group(&group).map_err(|e| {
        eprintln!("error: {e}");
        2u8
    })?;
    match checked.model {
        Some(model) => Ok(model),
        None => {
            let rendered = output::render(
                Format::Human,
                &[(&sources, &checked.diagnostics)],
                color_wanted(),
            );
            eprint!("{rendered}");
            eprintln!("error: the campaigns have errors; run `moments check` for details");
            Err(1)
        }
    }
}

/// The customer data directory, or the exit status after saying why it cannot be read.
fn open_data(
    data: &std::path::Path,
    model: &moments::model::Model,
) -> Result<moments::data::DataSet, u8> {
    moments::data::DataSet::open(data, &model.schema).map_err(|e| {
        eprintln!("error: {e}");
        2
    })
}

/// Says that the data was read twice because `file` is not sorted by time (see
/// `DataSet::with_records`).
fn note_unsorted(file: Option<&str>) {
    if let Some(file) = file {
        eprintln!(
            "note: `{file}` is not sorted by time, so the data was read again after a first pass over every file; sorted files are read once"
        );
    }
}

/// `Ok` when the campaigns hold moment `id`; otherwise say so, with "did you mean".
fn known_moment(
    model: &moments::model::Model,
    id: &str,
    campaigns: &std::path::Path,
) -> Result<(), u8> {
    if model.moments.iter().any(|m| m.id == id) {
        return Ok(());
    }
    let hint = moments::diagnostic::did_you_mean(id, model.moments.iter().map(|m| m.id.as_str()))
        .map(|h| format!("; {h}"))
        .unwrap_or_default();
    eprintln!("error: no moment `{id}` in `{}`{hint}", campaigns.display());
    Err(2)
}

/// How many engines decide side by side: `--threads`, or one per core up to 8.
fn engine_threads(threads: Option<u16>) -> usize {
    threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get().min(8)),
        usize::from,
    )
}

fn backtest(
    campaigns: &std::path::Path,
    data: &std::path::Path,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
    out: &std::path::Path,
    strict: bool,
    threads: Option<u16>,
) -> u8 {
    let model = match load_model(campaigns) {
        Ok(model) => model,
        Err(code) => return code,
    };
    if to < from {
        eprintln!("error: `--to` is before `--from`");
        return 2;
    }
    let dataset = match open_data(data, &model) {
        Ok(d) => d,
        Err(code) => return code,
    };
    if let Err(e) = std::fs::create_dir_all(out) {
        eprintln!("error: cannot write to `{}`: {e}", out.display());
        return 2;
    }
    let started = std::time::Instant::now();
    let (ran, mut stream, unsorted) = dataset.with_records(|stream| {
        moments::backtest::run(
            &model,
            Progress::new(stream.by_ref(), "backtest"),
            (Some(from), to),
            engine_threads(threads),
            out,
        )
    });
    note_unsorted(unsorted);
    let rejects = stream.take_rejects();
    let (written, out_of_fuel) = match ran.and_then(|ran| {
        moments::data::write_rejects(&out.join("rejects.ndjson"), &rejects)?;
        Ok(ran)
    }) {
        Ok(done) => done,
        Err(e) => {
            eprintln!("error: cannot write to `{}`: {e}", out.display());
            return 2;
        }
    };
    let elapsed = started.elapsed();
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "backtest {} to {}: {} records read in {:.1}s, {} rejected, {} of undeclared events skipped",
        from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        to.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        stream.read_count(),
        elapsed.as_secs_f64(),
        rejects.len(),
        stream.skipped().values().sum::<u64>()
    );
    let _ = writeln!(stdout);
    print_fate_table(&mut stdout, &model, &written.summary, None);
    let _ = writeln!(
        stdout,
        "\nwrote {} entries and {} sends to {}",
        written.entries,
        written.sends,
        out.display()
    );
    if !rejects.is_empty() {
        let _ = writeln!(
            stdout,
            "{} rejected records kept in {}",
            rejects.len(),
            out.join("rejects.ndjson").display()
        );
    }
    if out_of_fuel > 0 {
        let _ = writeln!(
            stdout,
            "warning: {out_of_fuel} evaluations ran out of their work budget and counted as false"
        );
    }
    if strict && !rejects.is_empty() {
        1
    } else {
        0
    }
}

/// How `run` delivers, with what it needs.
struct DeliverOptions {
    kind: DeliverKind,
    outbox: PathBuf,
    endpoint: Option<String>,
}

/// `moments run`: one tick, or with `every` a tick each period until SIGINT or SIGTERM.
fn run_ticks(
    campaigns: &std::path::Path,
    data: &std::path::Path,
    now: Option<chrono::DateTime<chrono::Utc>>,
    every: Option<std::time::Duration>,
    state: &std::path::Path,
    deliver: &DeliverOptions,
    engines: usize,
) -> u8 {
    use moments::deliver::{Deliverer, Outbox, Webhook, WebhookConfig};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let model = match load_model(campaigns) {
        Ok(model) => model,
        Err(code) => return code,
    };
    let mut store = match moments::state::StateStore::open(state) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    // One `run` per state at a time: two would both deliver what neither has marked yet.
    // The lock is the operating system's, so it goes with the process, crash or not.
    let lock_path = state.with_extension("db.lock");
    let _lock = match std::fs::File::create(&lock_path).map(|f| (f.try_lock(), f)) {
        Ok((Ok(()), file)) => file,
        Ok((Err(std::fs::TryLockError::WouldBlock), _)) => {
            eprintln!(
                "error: another `moments run` is using `{}` (it holds `{}`); wait for it to finish",
                state.display(),
                lock_path.display()
            );
            return 2;
        }
        Ok((Err(std::fs::TryLockError::Error(e)), _)) | Err(e) => {
            eprintln!("error: cannot lock `{}`: {e}", lock_path.display());
            return 2;
        }
    };
    let mut deliverer = match deliver.kind {
        DeliverKind::Outbox => match Outbox::open_for(&deliver.outbox, &mut store) {
            Ok(o) => Deliverer::Outbox(o),
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        },
        DeliverKind::Webhook => Deliverer::Webhook(Webhook::new(WebhookConfig {
            endpoint: deliver.endpoint.clone(),
            ..WebhookConfig::default()
        })),
    };
    let Some(every) = every else {
        let now = now.unwrap_or_else(chrono::Utc::now);
        return tick(&model, data, now, &mut store, &mut deliverer, true, engines);
    };
    // A signal only raises the flag: the tick in flight finishes and commits, then the
    // loop ends.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
            eprintln!("error: cannot handle signal {signal}: {e}");
            return 2;
        }
    }
    print_out(&format!(
        "ticking every {}s until SIGINT or SIGTERM (the tick in flight finishes first)\n",
        every.as_secs()
    ));
    let mut worst = 0;
    while !stop.load(Ordering::SeqCst) {
        let started = std::time::Instant::now();
        let code = tick(
            &model,
            data,
            chrono::Utc::now(),
            &mut store,
            &mut deliverer,
            false,
            engines,
        );
        if code == 2 {
            return code;
        }
        worst = worst.max(code);
        let _ = std::io::stdout().flush();
        while !stop.load(Ordering::SeqCst) && started.elapsed() < every {
            std::thread::sleep(std::time::Duration::from_millis(50).min(every));
        }
    }
    print_out("stopped after the tick in flight\n");
    worst
}

/// One scheduling tick up to `now`: run the engine over all the data, record what it
/// decided, deliver what is undelivered. `table` prints entries by fate per moment.
fn tick(
    model: &moments::model::Model,
    data: &std::path::Path,
    now: chrono::DateTime<chrono::Utc>,
    store: &mut moments::state::StateStore,
    deliverer: &mut moments::deliver::Deliverer,
    table: bool,
    engines: usize,
) -> u8 {
    // Opened each tick, so files added since the last one are read.
    let dataset = match open_data(data, model) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let mut stream = dataset.records();
    // Entries and sends go into the tick's transaction as the engines decide them. The
    // transaction lives on the thread that writes it.
    let recorded = moments::lanes::run_beside(
        model,
        Progress::new(stream.by_ref(), "tick"),
        None,
        now,
        engines,
        || store.begin_tick(),
        |recorder| recorder.commit(now),
    );
    let rejects = stream.take_rejects();
    let (recorded, out_of_fuel) = match recorded {
        Ok(done) => done,
        Err(moments::lanes::BesideError::Sink(e)) => {
            eprintln!("error: {e}");
            return 2;
        }
        Err(moments::lanes::BesideError::Thread(e)) => {
            eprintln!("error: cannot run the engines: {e}");
            return 2;
        }
    };
    let report = match moments::deliver::deliver_pending(store, deliverer, now) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let pending = recorded
        .entries
        .values()
        .filter_map(|fates| fates.get("pending"))
        .sum::<u64>();
    let new_sends: u64 = recorded.new_sends.values().map(|(t, c)| t + c).sum();
    let control: u64 = recorded.new_sends.values().map(|(_, c)| c).sum();
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "tick up to {}: {} records, {} rejected; {} new sends ({} control); {} delivered, {} failed; {} entries pending",
        now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        stream.read_count(),
        rejects.len(),
        new_sends,
        control,
        report.delivered,
        report.failed,
        pending
    );
    if table {
        let new_by_moment: std::collections::BTreeMap<&str, u64> = recorded
            .new_sends
            .iter()
            .map(|(moment, (t, c))| (moment.as_str(), t + c))
            .collect();
        let _ = writeln!(stdout, "\nentries up to now, by fate:");
        print_fate_table(&mut stdout, model, &recorded.entries, Some(&new_by_moment));
        let _ = writeln!(stdout);
    }
    for error in &report.errors {
        let _ = writeln!(stdout, "delivery failed, will retry: {error}");
    }
    // Written every tick, empty when nothing was rejected: what is there is this tick's.
    let path = store.path().with_file_name("rejects.ndjson");
    match moments::data::write_rejects(&path, &rejects) {
        Ok(()) if !rejects.is_empty() => {
            let _ = writeln!(
                stdout,
                "{} rejected records kept in {}",
                rejects.len(),
                path.display()
            );
        }
        Ok(()) => {}
        Err(e) => {
            let _ = writeln!(
                stdout,
                "warning: cannot write the rejected records to {}: {e}",
                path.display()
            );
        }
    }
    if out_of_fuel > 0 {
        let _ = writeln!(
            stdout,
            "warning: {out_of_fuel} evaluations ran out of their work budget and counted as false"
        );
    }
    0
}

/// Entries by fate, one row per moment; with `new`, a last column of sends new this tick.
fn print_fate_table(
    out: &mut impl Write,
    model: &moments::model::Model,
    summary: &moments::outcome::Summary,
    new: Option<&std::collections::BTreeMap<&str, u64>>,
) {
    let columns = [
        "sent",
        "control",
        "cancelled",
        "inactive",
        "no_consent",
        "limited",
        "capped",
        "pending",
    ];
    let width = model
        .moments
        .iter()
        .map(|m| m.id.len())
        .max()
        .unwrap_or(0)
        .max(20);
    let _ = write!(out, "{:<width$}", "moment");
    for c in columns {
        let _ = write!(out, " {c:>10}");
    }
    if new.is_some() {
        let _ = write!(out, " {:>10}", "new sends");
    }
    let _ = writeln!(out);
    for moment in &model.moments {
        let counts = summary.get(&moment.id);
        let _ = write!(out, "{:<width$}", moment.id);
        for c in columns {
            let n = counts.and_then(|m| m.get(c)).copied().unwrap_or(0);
            let _ = write!(out, " {n:>10}");
        }
        if let Some(new) = new {
            let n = new.get(moment.id.as_str()).copied().unwrap_or(0);
            let _ = write!(out, " {n:>10}");
        }
        let _ = writeln!(out);
    }
}

/// Records read, shown on standard error while a long run goes on: only when it is a
/// terminal, so logs and pipes get nothing.
struct Progress<I> {
    records: I,
    bar: Option<indicatif::ProgressBar>,
    count: u64,
}

impl<I: Iterator<Item = moments::value::Record>> Progress<I> {
    fn new(records: I, what: &str) -> Progress<I> {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{spinner} {msg}: {human_pos} records read, {elapsed}",
            ) {
                bar.set_style(style);
            }
            bar.set_message(what.to_string());
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            bar
        });
        Progress {
            records,
            bar,
            count: 0,
        }
    }
}

impl<I: Iterator<Item = moments::value::Record>> Iterator for Progress<I> {
    type Item = moments::value::Record;
    fn next(&mut self) -> Option<Self::Item> {
        let next = self.records.next();
        self.count += 1;
        if let Some(bar) = &self.bar {
            if next.is_none() {
                bar.finish_and_clear();
            } else if self.count.is_multiple_of(4096) {
                bar.set_position(self.count);
            }
        }
        next
    }
}

impl<I> Drop for Progress<I> {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Where `report` and `explain` find sends and entries.
fn load_outcomes(
    state: Option<PathBuf>,
    backtest_dir: Option<PathBuf>,
) -> Result<
    (
        Vec<moments::outcome::Entry>,
        Vec<moments::outcome::Send>,
        String,
    ),
    String,
> {
    if let Some(dir) = backtest_dir {
        let entries = read_ndjson(&dir.join("entries.ndjson"))?;
        let sends = read_ndjson(&dir.join("sends.ndjson"))?;
        return Ok((entries, sends, dir.display().to_string()));
    }
    let path = state.unwrap_or_else(|| PathBuf::from(moments::state::DEFAULT_STATE_PATH));
    if !path.exists() {
        return Err(format!(
            "no state database at `{}`: run `moments run` first, or give `--state FILE` or `--backtest-dir DIR`",
            path.display()
        ));
    }
    let store = moments::state::StateStore::open(&path).map_err(|e| e.to_string())?;
    let entries = store.entries().map_err(|e| e.to_string())?;
    let sends = store.sends().map_err(|e| e.to_string())?;
    Ok((entries, sends, path.display().to_string()))
}

fn read_ndjson<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<Vec<T>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map_err(|e| format!("`{}` line {}: {e}", path.display(), i + 1))
        })
        .collect()
}

fn report(
    campaigns: &std::path::Path,
    data: &std::path::Path,
    state: Option<PathBuf>,
    backtest_dir: Option<PathBuf>,
    as_of: Option<chrono::DateTime<chrono::Utc>>,
    format: ReportFormat,
    out: Option<PathBuf>,
) -> u8 {
    let model = match load_model(campaigns) {
        Ok(model) => model,
        Err(code) => return code,
    };
    let (entries, sends, source) = match load_outcomes(state, backtest_dir) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let dataset = match open_data(data, &model) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let ((kpis, as_of), mut stream, unsorted) = dataset.with_records(|stream| {
        moments::kpi::measure(
            &model,
            &sends,
            Progress::new(stream.by_ref(), "report"),
            as_of,
        )
    });
    note_unsorted(unsorted);
    let rejects = stream.take_rejects();
    let report = moments::report::build(&model, &entries, &sends, kpis, as_of, source);
    let text = match format {
        ReportFormat::Table => moments::report::table(&report),
        ReportFormat::Json => moments::report::json(&report),
        ReportFormat::Html => moments::report_html::html(&report),
    };
    match &out {
        Some(path) => {
            if let Err(e) = std::fs::write(path, text) {
                eprintln!("error: cannot write `{}`: {e}", path.display());
                return 2;
            }
            eprintln!("wrote {}", path.display());
        }
        None => print_out(&text),
    }
    if !rejects.is_empty() {
        eprintln!(
            "warning: {} data records were rejected and not measured (see `moments backtest` for where)",
            rejects.len()
        );
    }
    0
}

fn explain(
    campaigns: &std::path::Path,
    data: &std::path::Path,
    customer: &str,
    moment: Option<String>,
    from: Option<chrono::DateTime<chrono::Utc>>,
    to: Option<chrono::DateTime<chrono::Utc>>,
    format: TextOrJson,
) -> u8 {
    let model = match load_model(campaigns) {
        Ok(model) => model,
        Err(code) => return code,
    };
    if let Some(Err(code)) = moment
        .as_deref()
        .map(|id| known_moment(&model, id, campaigns))
    {
        return code;
    }
    let dataset = match open_data(data, &model) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let to = to.unwrap_or_else(chrono::Utc::now);
    let from = from.unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    let options = moments::engine::TraceOptions {
        customer: customer.to_string(),
        moment: moment.clone(),
    };
    let ((output, trace), _, unsorted) = dataset.with_records(|stream| {
        moments::engine::run_traced(
            &model,
            Progress::new(stream.by_ref(), "explain"),
            None,
            to,
            &options,
        )
    });
    note_unsorted(unsorted);
    let explanation = moments::explain::explain(
        &model,
        customer,
        moment.as_deref(),
        from,
        to,
        &output,
        &trace,
    );
    let text = match format {
        TextOrJson::Text => moments::explain::text(&explanation),
        TextOrJson::Json => moments::explain::json(&explanation),
    };
    print_out(&text);
    if explanation.known {
        0
    } else {
        1
    }
}

fn preview(
    campaigns: &std::path::Path,
    data: &std::path::Path,
    moment: &str,
    customer: Option<String>,
    at: Option<chrono::DateTime<chrono::Utc>>,
    format: TextOrJson,
) -> u8 {
    let model = match load_model(campaigns) {
        Ok(model) => model,
        Err(code) => return code,
    };
    if let Err(code) = known_moment(&model, moment, campaigns) {
        return code;
    }
    let dataset = match open_data(data, &model) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let at = at.unwrap_or_else(chrono::Utc::now);
    let customer = match customer {
        Some(c) => c,
        None => {
            // A sample: the first customer who got it, else who triggered it.
            let (output, _, unsorted) =
                dataset.with_records(|stream| moments::engine::run(&model, stream, None, at));
            note_unsorted(unsorted);
            let mut got: Vec<&moments::outcome::Entry> = output
                .entries
                .iter()
                .filter(|e| &*e.moment == moment)
                .collect();
            got.sort_by_key(|e| (e.send_id.is_none(), e.customer_id.clone()));
            match got.first() {
                Some(e) => e.customer_id.to_string(),
                None => {
                    eprintln!(
                        "error: no customer triggered `{moment}` up to {at}; give `--customer ID`"
                    );
                    return 1;
                }
            }
        }
    };
    let options = moments::engine::TraceOptions {
        customer: customer.clone(),
        moment: Some(moment.to_string()),
    };
    let ((_, trace), _, unsorted) = dataset
        .with_records(|stream| moments::engine::run_traced(&model, stream, None, at, &options));
    note_unsorted(unsorted);
    let Some(preview) = trace.previews.get(moment) else {
        let hint = trace
            .did_you_mean
            .map(|c| format!("; did you mean `{c}`?"))
            .unwrap_or_default();
        eprintln!("error: customer `{customer}` is not in the data up to {at}{hint}");
        return 1;
    };
    match format {
        TextOrJson::Json => {
            print_out(&format!(
                "{}\n",
                serde_json::to_string_pretty(preview).unwrap_or_default()
            ));
        }
        TextOrJson::Text => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "{} for customer {} ({})",
                preview.moment, preview.customer, preview.channel
            );
            match (&preview.trigger, preview.trigger_at) {
                (Some(trigger), Some(when)) => {
                    let _ = writeln!(
                        out,
                        "rendered for the latest trigger: {} at {}",
                        trigger,
                        when.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    );
                }
                _ => {
                    let _ = writeln!(out, "the moment never fired for this customer: rendered without a trigger event");
                }
            }
            for (field, text) in &preview.fields {
                let _ = writeln!(out, "\n{field}:");
                for line in text.lines() {
                    if line.trim().is_empty() {
                        let _ = writeln!(out);
                    } else {
                        let _ = writeln!(out, "  {line}");
                    }
                }
            }
            let _ = writeln!(out, "\nvariables:");
            for v in &preview.variables {
                let _ = writeln!(out, "  {} = {}", v.name, v.value);
            }
        }
    }
    0
}

fn sample_data(
    customers: u64,
    days: u32,
    seed: u64,
    start: Option<chrono::DateTime<chrono::Utc>>,
    out: &std::path::Path,
) -> u8 {
    let options = moments::sample::SampleOptions {
        customers,
        days,
        seed,
        start: start.unwrap_or_else(moments::sample::SampleOptions::default_start),
    };
    match moments::sample::write_sample(&options, out) {
        Ok(summary) => {
            let mut text = format!(
                "wrote {} records in {} files to {}\n",
                summary.records,
                summary.files.len(),
                out.display()
            );
            for (kind, count) in &summary.by_kind {
                text.push_str(&format!("  {count:>9}  {kind}\n"));
            }
            self::print_out(&text);
            0
        }
        Err(e) => {
            eprintln!("error: cannot write `{}`: {e}", out.display());
            2
        }
    }
}
