//! The `moments` binary, run for real: exit codes, output formats, hostile input.
//!
//! Exit status of `moments check`: 0 no error, 1 errors (or warnings with
//! `--deny-warnings`), 2 the command itself cannot run (bad usage, unreadable path).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh directory under the system's temp directory, removed when dropped. Tests run in
/// parallel: the name holds the process id and a counter, so no two share one.
struct TempDir(PathBuf);

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "moments-cli-{}-{}-{name}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// Write `contents` to `relative` inside the directory, creating parents.
    fn write(&self, relative: &str, contents: impl AsRef<[u8]>) {
        let path = self.0.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).expect("create parent");
        std::fs::write(path, contents).expect("write file");
    }

    /// A campaign directory `relative` with the repository's schema.
    fn campaign(&self, relative: &str) {
        let schema = std::fs::read(crate_root().join("campaigns/schema.moment")).unwrap();
        self.write(&format!("{relative}/schema.moment"), schema);
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn crate_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Run `moments ARGS` in `dir`, colours off.
fn moments(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moments"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("run moments")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The exit status, after checking the run did not panic.
fn status(output: &Output) -> i32 {
    let err = stderr(output);
    assert!(!err.contains("panicked"), "the binary panicked:\n{err}");
    output.status.code().expect("exited, not killed")
}

/// A good moment, to edit into a bad one.
const GOOD: &str = r#"# Something went into the cart but no order followed within the hour.
moment cart_wobble "The instant cart wobble" {
  trigger {
    on product_added
    where event.price * event.quantity >= 20
    unless order_completed within 1h
  }

  message email {
    subject "Still thinking it over, {{ customer.first_name | default('friend') }}?"
    body "Your cart is saved."
  }

  kpi "Return-to-cart rate" = rate(cart_viewed within 24h after send)
    goal >= 15%
}
"#;

/// `GOOD` with an unused `let`: a warning, no error.
fn with_warning() -> String {
    GOOD.replace(
        "    where event.price",
        "    let basket = event.price * event.quantity\n    where event.price",
    )
}

/// `GOOD` with `1 hour` for `1h`: an error.
fn with_error() -> String {
    GOOD.replace("within 1h", "within 1 hour")
}

/// A directory with one error and one warning, in two files.
fn error_and_warning() -> TempDir {
    let dir = TempDir::new("error-and-warning");
    dir.campaign("shop");
    dir.write("shop/cart_wobble.moment", with_error());
    dir.write(
        "shop/cart_wobble_again.moment",
        with_warning().replace("moment cart_wobble ", "moment cart_wobble_again "),
    );
    dir
}

#[test]
fn good_campaigns_exit_0() {
    let output = moments(&crate_root(), &["check", "campaigns"]);
    assert_eq!(status(&output), 0, "{}", stdout(&output));
    let text = stdout(&output);
    assert!(
        text.starts_with("checked ") && text.ends_with(" files: no problems\n"),
        "{text}"
    );
}

#[test]
fn errors_exit_1() {
    let dir = error_and_warning();
    let output = moments(dir.path(), &["check", "shop"]);
    assert_eq!(status(&output), 1);
    insta::assert_snapshot!(stdout(&output));
}

#[test]
fn a_nonexistent_path_exits_2() {
    let dir = TempDir::new("nonexistent");
    let output = moments(dir.path(), &["check", "no/such/place"]);
    assert_eq!(status(&output), 2);
    assert!(stdout(&output).is_empty());
    assert!(
        stderr(&output).contains("no/such/place"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_bad_flag_exits_2() {
    let output = moments(&crate_root(), &["check", "--no-such-flag", "campaigns"]);
    assert_eq!(status(&output), 2);
    assert!(stdout(&output).is_empty());
    let output = moments(&crate_root(), &["check", "--format", "xml", "campaigns"]);
    assert_eq!(status(&output), 2);
    assert!(stdout(&output).is_empty());
}

#[test]
fn deny_warnings_fails_on_warnings() {
    let dir = TempDir::new("warnings");
    dir.campaign("shop");
    dir.write("shop/cart_wobble.moment", with_warning());
    let output = moments(dir.path(), &["check", "shop"]);
    assert_eq!(status(&output), 0);
    assert!(stdout(&output).contains("moment::check::unused_let"));
    assert!(stdout(&output).ends_with("checked 2 files: 1 warning\n"));
    let output = moments(dir.path(), &["check", "--deny-warnings", "shop"]);
    assert_eq!(status(&output), 1);
}

#[test]
fn json_is_an_array_of_findings() {
    let dir = error_and_warning();
    let output = moments(dir.path(), &["check", "--format", "json", "shop"]);
    assert_eq!(status(&output), 1);
    let value: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("json");
    let findings = value.as_array().expect("an array");
    assert_eq!(findings.len(), 2);
    for finding in findings {
        for field in [
            "file",
            "line",
            "column",
            "end_line",
            "end_column",
            "severity",
            "code",
            "message",
            "help",
        ] {
            assert!(finding.get(field).is_some(), "no `{field}` in {finding}");
        }
        assert!(finding["line"].as_u64().unwrap() >= 1);
        assert!(finding["column"].as_u64().unwrap() >= 1);
    }
    let summary: Vec<(String, String, String, u64)> = findings
        .iter()
        .map(|f| {
            (
                f["file"].as_str().unwrap().to_string(),
                f["severity"].as_str().unwrap().to_string(),
                f["code"].as_str().unwrap().to_string(),
                f["line"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "shop/cart_wobble.moment".to_string(),
                "error".to_string(),
                "moment::parse::duration_unit".to_string(),
                6
            ),
            (
                "shop/cart_wobble_again.moment".to_string(),
                "warning".to_string(),
                "moment::check::unused_let".to_string(),
                5
            ),
        ]
    );
}

#[test]
fn json_of_a_good_directory_is_an_empty_array() {
    let output = moments(&crate_root(), &["check", "--format", "json", "campaigns"]);
    assert_eq!(status(&output), 0);
    let value: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("json");
    assert_eq!(value, serde_json::json!([]));
}

#[test]
fn github_annotations() {
    let dir = error_and_warning();
    let output = moments(dir.path(), &["check", "--format", "github", "shop"]);
    assert_eq!(status(&output), 1);
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("::error file=shop/cart_wobble.moment,"));
    assert!(lines[1].starts_with("::warning file=shop/cart_wobble_again.moment,"));
    for line in lines {
        assert!(line.contains(",line=") && line.contains(",col="), "{line}");
    }
    assert!(text.contains("line=6,col=35,"), "{text}");
}

#[test]
fn sarif_log() {
    let dir = error_and_warning();
    let output = moments(dir.path(), &["check", "--format", "sarif", "shop"]);
    assert_eq!(status(&output), 1);
    let value: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("sarif json");
    assert_eq!(value["version"], "2.1.0");
    let results = value["runs"][0]["results"].as_array().expect("results");
    let found: Vec<(&str, u64)> = results
        .iter()
        .map(|r| {
            (
                r["ruleId"].as_str().expect("ruleId"),
                r["locations"][0]["physicalLocation"]["region"]["startLine"]
                    .as_u64()
                    .expect("startLine"),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            ("moment::parse::duration_unit", 6),
            ("moment::check::unused_let", 5)
        ]
    );
}

#[test]
fn bytes_that_are_not_utf8_are_a_finding() {
    let dir = TempDir::new("not-utf8");
    dir.campaign("shop");
    let mut bytes = GOOD.replace("Your cart", "Votre panier").into_bytes();
    // "Your cart is saved" in Latin-1: `é` as the single byte 0xe9.
    let at = bytes.windows(6).position(|w| w == b"panier").unwrap();
    bytes.splice(at..at, b"caf\xe9 ".iter().copied());
    dir.write("shop/cart_wobble.moment", bytes);
    let output = moments(dir.path(), &["check", "shop"]);
    assert_eq!(status(&output), 1);
    let text = stdout(&output);
    assert!(text.contains("moment::parse::not_utf8"), "{text}");
    assert!(text.contains("shop/cart_wobble.moment:11:"), "{text}");
}

#[test]
fn a_two_megabyte_file_is_a_finding() {
    let dir = TempDir::new("too-large");
    dir.campaign("shop");
    let mut text = GOOD.to_string();
    while text.len() < 2 << 20 {
        text.push_str("# padding, padding, padding, padding, padding, padding, padding\n");
    }
    dir.write("shop/cart_wobble.moment", text);
    let output = moments(dir.path(), &["check", "shop"]);
    assert_eq!(status(&output), 1);
    let text = stdout(&output);
    assert!(text.contains("moment::parse::too_large"), "{text}");
    assert!(text.ends_with("checked 2 files: 1 error\n"), "{text}");
}

#[test]
fn deep_nesting_is_a_finding() {
    let dir = TempDir::new("too-deep");
    dir.campaign("shop");
    let depth = 100_000;
    let nested = format!("{}1{}", "(".repeat(depth), ")".repeat(depth));
    dir.write(
        "shop/cart_wobble.moment",
        GOOD.replace(
            "event.price * event.quantity >= 20",
            &format!("{nested} >= 20"),
        ),
    );
    let output = moments(dir.path(), &["check", "shop"]);
    assert_eq!(status(&output), 1);
    assert!(stdout(&output).contains("moment::parse::too_deep"));
}
