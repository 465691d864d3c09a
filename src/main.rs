//! The `moments` command line.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use moments::format;
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
