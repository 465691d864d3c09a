//! The diagnostics corpus: `tests/check/`.
//!
//! - `tests/check/err_*.moment`: one mistake each, checked against `tests/check/schema.moment`.
//! - `tests/check/schema/err_*.moment`: one mistake each, checked as the schema itself.
//! - `tests/check/dir_*/`: a campaign directory (a `schema.moment`, if any, and moments below
//!   it), for findings that need several files.
//!
//! Each case snapshots the human rendering of its findings (`tests/snapshots/`), and its
//! first line says which codes it must give, exactly (in any order, a code once per finding):
//! `# expect: moment::check::unknown_trait`, several separated by commas. In a directory
//! case, every file that should give a finding carries such a line.
//!
//! A case whose findings are not yet what they should be says so in a `# FIXME:` comment
//! under its `# expect:` line; `expect` and the snapshot record what happens today.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use moments::check::{check, Checked};
use moments::diagnostic::{Code, SourceFile, Sources};
use moments::output::{render, Format};
use moments::project::{self, Group};

/// The crate root, as the glob sees it.
fn crate_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    root.canonicalize().unwrap_or_else(|_| root.to_path_buf())
}

/// `path` relative to the crate root, so that snapshots hold no absolute paths. Tests run
/// with the crate root as the current directory, so the relative path also opens the file.
fn relative(path: &Path) -> PathBuf {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    path.strip_prefix(crate_root())
        .map(Path::to_path_buf)
        .unwrap_or(path)
}

/// Check a schema (if any) and moments as one campaign directory.
///
/// Text files go through `check::check` directly. A file that is not UTF-8 goes through
/// `project::check_group`, which is where reading bytes and reporting the encoding happens.
fn check_files(schema: Option<&Path>, moments: &[PathBuf]) -> (Sources, Checked) {
    let schema = schema.map(relative);
    let moments: Vec<PathBuf> = moments.iter().map(|m| relative(m)).collect();
    let all: Vec<&PathBuf> = schema.iter().chain(&moments).collect();
    let texts: Vec<Option<String>> = all
        .iter()
        .map(|p| String::from_utf8(std::fs::read(p).expect("read case")).ok())
        .collect();
    if texts.iter().any(Option::is_none) {
        let group = Group {
            root: PathBuf::from("tests/check"),
            schema,
            moments,
        };
        return project::check_group(&group).expect("check group");
    }
    let mut sources = Sources::default();
    let mut ids = all
        .iter()
        .zip(texts)
        .map(|(path, text)| sources.add(SourceFile::new(*path, text.unwrap_or_default())));
    let schema_id = schema.as_ref().and_then(|_| ids.next());
    let moment_ids: Vec<usize> = ids.collect();
    let checked = check(&sources, schema_id, &moment_ids);
    (sources, checked)
}

fn human(sources: &Sources, checked: &Checked) -> String {
    render(
        Format::Human,
        &[(sources, checked.diagnostics.as_slice())],
        false,
    )
}

/// The codes a case file's first line announces.
fn expected_codes(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).expect("read case");
    let text = String::from_utf8_lossy(&bytes);
    let first = text.lines().next().unwrap_or("");
    match first.strip_prefix("# expect:") {
        Some(list) => list
            .split(',')
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect(),
        None => Vec::new(),
    }
}

fn found_codes(checked: &Checked) -> Vec<String> {
    checked
        .diagnostics
        .iter()
        .map(|d| d.code.as_str().to_string())
        .collect()
}

/// Every `.moment` file below `dir`, sorted.
fn moment_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            found.extend(moment_files(&entry));
        } else if entry.extension().is_some_and(|e| e == "moment") {
            found.push(entry);
        }
    }
    found
}

/// Records the cases whose codes differ from their `# expect:` line, to report them all at
/// once after the glob (a panic inside it would stop at the first).
#[derive(Default)]
struct Mismatches(Vec<String>);

impl Mismatches {
    fn compare(&mut self, case: &Path, mut expected: Vec<String>, mut found: Vec<String>) {
        expected.sort();
        found.sort();
        if expected.is_empty() {
            self.0
                .push(format!("{}: no `# expect:` line", relative(case).display()));
        } else if expected != found {
            self.0.push(format!(
                "{}: expected {expected:?}, found {found:?}",
                relative(case).display()
            ));
        }
    }

    fn assert_none(self) {
        assert!(
            self.0.is_empty(),
            "cases that do not give the codes they expect:\n{}",
            self.0.join("\n")
        );
    }
}

#[test]
fn moment_cases() {
    let schema = Path::new("tests/check/schema.moment");
    let mut mismatches = Mismatches::default();
    insta::glob!("check/err_*.moment", |path| {
        let (sources, checked) = check_files(Some(schema), &[path.to_path_buf()]);
        mismatches.compare(path, expected_codes(path), found_codes(&checked));
        insta::assert_snapshot!(human(&sources, &checked));
    });
    mismatches.assert_none();
}

#[test]
fn schema_cases() {
    let mut mismatches = Mismatches::default();
    insta::glob!("check/schema/err_*.moment", |path| {
        let (sources, checked) = check_files(Some(path), &[]);
        mismatches.compare(path, expected_codes(path), found_codes(&checked));
        insta::assert_snapshot!(human(&sources, &checked));
    });
    mismatches.assert_none();
}

#[test]
fn directory_cases() {
    let mut mismatches = Mismatches::default();
    insta::glob!("check/dir_*", |dir| {
        let files = moment_files(dir);
        let schema = dir.join("schema.moment");
        let schema = files.contains(&schema).then_some(schema);
        let moments: Vec<PathBuf> = files
            .iter()
            .filter(|f| Some(*f) != schema.as_ref())
            .cloned()
            .collect();
        let (sources, checked) = check_files(schema.as_deref(), &moments);
        let expected: Vec<String> = files.iter().flat_map(|f| expected_codes(f)).collect();
        mismatches.compare(dir, expected, found_codes(&checked));
        insta::assert_snapshot!(human(&sources, &checked));
    });
    mismatches.assert_none();
}

/// A file over the size limit, made here rather than committed.
fn too_large_text() -> String {
    let mut text = String::from(
        "moment too_large \"Too large\" {\n  trigger {\n    on product_added\n  }\n}\n",
    );
    let filler = "# a comment that pads the file past the size limit of a campaign file\n";
    while text.len() <= moments::parse::MAX_FILE_BYTES {
        text.push_str(filler);
    }
    text
}

#[test]
fn too_large_file() {
    let mut sources = Sources::default();
    let schema_text = std::fs::read_to_string("tests/check/schema.moment").unwrap();
    let schema = sources.add(SourceFile::new("tests/check/schema.moment", schema_text));
    let moment = sources.add(SourceFile::new(
        "tests/check/too_large.moment",
        too_large_text(),
    ));
    let checked = check(&sources, Some(schema), &[moment]);
    assert_eq!(found_codes(&checked), ["moment::parse::too_large"]);
    insta::assert_snapshot!(human(&sources, &checked));
}

#[test]
fn good_campaigns_have_no_findings() {
    let files = moment_files(Path::new("campaigns"));
    let schema = PathBuf::from("campaigns/schema.moment");
    assert!(files.contains(&schema));
    let moments: Vec<PathBuf> = files.iter().filter(|f| **f != schema).cloned().collect();
    assert!(moments.len() >= 12, "the twelve campaigns, at least");
    // Together, and each one alone with the schema.
    let (sources, checked) = check_files(Some(&schema), &moments);
    assert!(
        checked.diagnostics.is_empty(),
        "{}",
        human(&sources, &checked)
    );
    assert!(checked.model.is_some());
    for moment in &moments {
        let (sources, checked) = check_files(Some(&schema), std::slice::from_ref(moment));
        assert!(
            checked.diagnostics.is_empty(),
            "{}",
            human(&sources, &checked)
        );
        assert_eq!(checked.model.map(|m| m.moments.len()), Some(1));
    }
    // The corpus's own schema is good too.
    let (sources, checked) = check_files(Some(Path::new("tests/check/schema.moment")), &[]);
    assert!(
        checked.diagnostics.is_empty(),
        "{}",
        human(&sources, &checked)
    );
}

/// Codes no case can give, with the reason.
/// (None today: an unreadable path is not a finding but exit status 2, see tests/cli.rs.)
const NOT_FROM_A_FILE: [(&str, &str); 0] = [];

#[test]
fn every_code_is_covered() {
    let mut covered = BTreeSet::new();
    let mut cases = moment_files(Path::new("tests/check"));
    cases.retain(|p| p.file_name().is_some_and(|n| n != "schema.moment"));
    for case in &cases {
        covered.extend(expected_codes(case));
    }
    // Made in `too_large_file`.
    covered.insert("moment::parse::too_large".to_string());
    let excluded: BTreeSet<&str> = NOT_FROM_A_FILE.iter().map(|(c, _)| *c).collect();
    let missing: Vec<&str> = Code::ALL
        .iter()
        .map(|c| c.as_str())
        .filter(|c| !covered.contains(*c) && !excluded.contains(c))
        .collect();
    assert!(
        missing.is_empty(),
        "codes without a case in tests/check/: {missing:?}"
    );
    let unknown: Vec<&String> = covered
        .iter()
        .filter(|c| !Code::ALL.iter().any(|code| code.as_str() == c.as_str()))
        .collect();
    assert!(unknown.is_empty(), "`# expect:` names no code: {unknown:?}");
}

// ---------------------------------------------------------------------------------------
// One file, three mistakes on three lines, in every format.

const THREE: &str = "tests/check/three_mistakes.moment";

/// (line, code) of each finding expected in `three_mistakes.moment`.
const THREE_FINDINGS: [(usize, &str); 3] = [
    (6, "moment::check::type_mismatch"),
    (7, "moment::parse::duration_unit"),
    (12, "moment::check::unknown_trait"),
];

fn three_mistakes(format: Format) -> String {
    let (sources, checked) = check_files(
        Some(Path::new("tests/check/schema.moment")),
        &[PathBuf::from(THREE)],
    );
    render(format, &[(&sources, checked.diagnostics.as_slice())], false)
}

fn sorted(mut findings: Vec<(usize, String)>) -> Vec<(usize, String)> {
    findings.sort();
    findings
}

fn expected_three() -> Vec<(usize, String)> {
    THREE_FINDINGS
        .iter()
        .map(|(l, c)| (*l, c.to_string()))
        .collect()
}

#[test]
fn three_mistakes_human() {
    let text = three_mistakes(Format::Human);
    let mut found = Vec::new();
    // Each report starts with its code, then `╭─[file:line:column]` under it.
    let mut code = None;
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(c) = Code::ALL.iter().find(|c| trimmed.ends_with(c.as_str())) {
            code = Some(c.as_str().to_string());
        }
        if let Some(rest) = trimmed.split(&format!("[{THREE}:")).nth(1) {
            let line_number: usize = rest.split(':').next().unwrap().parse().unwrap();
            found.push((
                line_number,
                code.take().expect("a code before the location"),
            ));
        }
    }
    assert_eq!(sorted(found), expected_three(), "{text}");
    insta::assert_snapshot!(text);
}

#[test]
fn three_mistakes_json() {
    let text = three_mistakes(Format::Json);
    let value: serde_json::Value = serde_json::from_str(&text).expect("json");
    let found: Vec<(usize, String)> = value
        .as_array()
        .expect("an array")
        .iter()
        .map(|f| {
            assert_eq!(f["file"], THREE);
            (
                f["line"].as_u64().unwrap() as usize,
                f["code"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(sorted(found), expected_three(), "{text}");
}

#[test]
fn three_mistakes_github() {
    let text = three_mistakes(Format::Github);
    let found: Vec<(usize, String)> = text
        .lines()
        .map(|line| {
            assert!(line.starts_with("::error file="), "{line}");
            let (properties, _message) = line["::error ".len()..].split_once("::").unwrap();
            let property = |name: &str| {
                properties
                    .split(',')
                    .find_map(|p| p.strip_prefix(&format!("{name}=")))
                    .unwrap()
                    .replace("%3A", ":")
                    .replace("%2C", ",")
            };
            assert_eq!(property("file"), THREE);
            (property("line").parse().unwrap(), property("title"))
        })
        .collect();
    assert_eq!(sorted(found), expected_three(), "{text}");
}

#[test]
fn three_mistakes_sarif() {
    let text = three_mistakes(Format::Sarif);
    let value: serde_json::Value = serde_json::from_str(&text).expect("sarif json");
    assert_eq!(value["version"], "2.1.0");
    let found: Vec<(usize, String)> = value["runs"][0]["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            let location = &r["locations"][0]["physicalLocation"];
            assert_eq!(location["artifactLocation"]["uri"], THREE);
            (
                location["region"]["startLine"].as_u64().unwrap() as usize,
                r["ruleId"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(sorted(found), expected_three(), "{text}");
}
