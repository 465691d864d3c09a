//! The `moments` command line.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use moments::output::{self, Format};
use moments::project;

/// Micro-moment campaigns for online shops: check, format and run `.moment` files.
#[derive(Parser)]
#[command(name = "moments", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
    }
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
        (e, w) => format!("{checked}: {} and {}", plural(e, "error"), plural(w, "warning")),
    }
}

fn fmt(paths: Vec<PathBuf>, check_only: bool) -> u8 {
    let _ = (paths, check_only);
    eprintln!("error: not available yet");
    2
}
