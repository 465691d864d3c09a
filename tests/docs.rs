//! `docs/diagnostics.md` lists every diagnostic code; it is made from the code itself.
//! When a code is added, run `UPDATE_DOCS=1 cargo test --test docs` and commit the file.

use moments::diagnostic::Code;

fn render() -> String {
    let mut out = String::from(
        "# Diagnostic codes\n\n\
         Every finding of `moments check` carries one of these codes. They are stable: CI may\n\
         filter on them (`--format json` gives `code`; SARIF gives `ruleId`). Errors fail the\n\
         check; warnings fail it only with `--deny-warnings`.\n\n\
         This file is generated from `src/diagnostic.rs` by `UPDATE_DOCS=1 cargo test --test docs`;\n\
         `tests/check/` holds an example of each.\n\n\
         | code | severity | meaning |\n|---|---|---|\n",
    );
    for code in Code::ALL {
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            code.as_str(),
            code.severity().as_str(),
            code.description().replace('|', "\\|")
        ));
    }
    out
}

#[test]
fn diagnostics_reference_is_up_to_date() {
    let path = "docs/diagnostics.md";
    let expected = render();
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(path, &expected).expect("writable docs");
    }
    let actual = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        actual == expected,
        "{path} is out of date: run `UPDATE_DOCS=1 cargo test --test docs`"
    );
}
