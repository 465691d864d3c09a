//! `check` never panics, whatever the input: every campaign cut short at every character
//! boundary, and each with thousands of byte-level mutations, is checked to the end.

use std::path::Path;

use moments::check::check;
use moments::diagnostic::{SourceFile, Sources};

fn campaigns() -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir("campaigns")
        .expect("campaigns directory")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "moment"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            (
                name,
                std::fs::read_to_string(&p).expect("readable campaign"),
            )
        })
        .collect();
    files.sort();
    assert!(files.len() >= 13, "expected the schema and twelve moments");
    files
}

/// Check `text` as the moment file `name` beside the real schema; returns how many
/// findings came out (the point is that it returns at all).
fn check_moment(schema: &str, name: &str, text: &str) -> usize {
    let mut sources = Sources::default();
    let schema_id = sources.add(SourceFile::new("campaigns/schema.moment", schema));
    let id = sources.add(SourceFile::new(Path::new("campaigns").join(name), text));
    let checked = check(&sources, Some(schema_id), &[id]);
    moments::output::render(
        moments::output::Format::Human,
        &[(&sources, &checked.diagnostics)],
        false,
    );
    // Every finding points inside its file.
    for d in &checked.diagnostics {
        let len = sources.get(d.file).text.len();
        assert!(
            d.span.start <= d.span.end && d.span.end <= len,
            "{d:?} outside {len} bytes"
        );
    }
    checked.diagnostics.len()
}

fn check_schema(text: &str) -> usize {
    let mut sources = Sources::default();
    let id = sources.add(SourceFile::new("campaigns/schema.moment", text));
    check(&sources, Some(id), &[]).diagnostics.len()
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn truncated_campaigns_are_checked_without_panic() {
    let files = campaigns();
    let schema = &files.iter().find(|(n, _)| n == "schema.moment").unwrap().1;
    for (name, text) in &files {
        for cut in (0..=text.len()).filter(|i| text.is_char_boundary(*i)) {
            let prefix = &text[..cut];
            if name == "schema.moment" {
                check_schema(prefix);
            } else {
                check_moment(schema, name, prefix);
            }
        }
    }
}

#[test]
fn mutated_campaigns_are_checked_without_panic() {
    let files = campaigns();
    let schema = &files.iter().find(|(n, _)| n == "schema.moment").unwrap().1;
    // Bytes that matter to the grammar, and some that do not belong at all.
    let interesting: &[&[u8]] = &[
        b"{",
        b"}",
        b"(",
        b")",
        b"\"",
        b"\"\"\"",
        b"#",
        b"\n",
        b" ",
        b"=",
        b"==",
        b".",
        b",",
        b"%",
        b"?",
        b"<",
        b">",
        b"-",
        b"0",
        b"9",
        b"99999999999999999999999",
        b"1 hour",
        b"and",
        b"not",
        b"where",
        b"within",
        b"crosses",
        b"across customers",
        b"{{",
        b"}}",
        b"{%",
        b"\xe2\x80\x9c",
        b"\xff",
        b"\x00",
        b"on",
        b"every",
        b"let",
        b"event.",
        b"customer.",
    ];
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut findings = 0;
    for (name, text) in &files {
        for _ in 0..300 {
            let mut bytes = text.as_bytes().to_vec();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(bytes.len() + 1);
                match rng.below(4) {
                    0 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    1 => {
                        let piece = interesting[rng.below(interesting.len())];
                        bytes.splice(at..at, piece.iter().copied());
                    }
                    2 if at < bytes.len() => bytes[at] = rng.next() as u8,
                    _ => {
                        // Duplicate a slice: repeated clauses and blocks.
                        let end = (at + rng.below(80)).min(bytes.len());
                        let piece = bytes[at..end].to_vec();
                        bytes.splice(at..at, piece);
                    }
                }
            }
            let mutated = String::from_utf8_lossy(&bytes);
            findings += if name == "schema.moment" {
                check_schema(&mutated)
            } else {
                check_moment(schema, name, &mutated)
            };
        }
    }
    assert!(findings > 0, "mutations should produce findings");
}

#[test]
fn hostile_inputs_get_a_diagnostic() {
    let schema = std::fs::read_to_string("campaigns/schema.moment").unwrap();
    let deep = format!(
        "moment deep \"t\" {{ trigger {{ on product_added where {}1{} }} }}",
        "(".repeat(10_000),
        ")".repeat(10_000)
    );
    let long_chain = format!(
        "moment chain \"t\" {{ trigger {{ on product_added where 1{} > 0 }} }}",
        " + 1".repeat(50_000)
    );
    let negations = format!(
        "moment neg \"t\" {{ trigger {{ on product_added where {}true }} }}",
        "not ".repeat(50_000)
    );
    let huge = "#".repeat(10 << 20);
    for (name, text) in [
        ("deep.moment", deep.as_str()),
        ("chain.moment", long_chain.as_str()),
        ("neg.moment", negations.as_str()),
        ("huge.moment", huge.as_str()),
        ("empty.moment", ""),
        ("nul.moment", "\0\0\0"),
    ] {
        assert!(
            check_moment(&schema, name, text) > 0,
            "{name} should be reported"
        );
    }
}

#[test]
fn every_finding_renders_in_every_format() {
    // Multi-byte characters next to mistakes: spans must land on character boundaries.
    let schema = std::fs::read_to_string("campaigns/schema.moment").unwrap();
    let text = "moment m \"t\" {\n  trigger { on product_addéd where customer.tiér == 3 }\n  message email { subject \"{{ customer.frist_namé }}\" body \"\"\"\n    ü {{ x\n  \"\"\" }\n}\n";
    let mut sources = Sources::default();
    let schema_id = sources.add(SourceFile::new("campaigns/schema.moment", schema));
    let id = sources.add(SourceFile::new("campaigns/m.moment", text));
    let checked = check(&sources, Some(schema_id), &[id]);
    assert!(!checked.diagnostics.is_empty());
    for format in [
        moments::output::Format::Human,
        moments::output::Format::Json,
        moments::output::Format::Github,
        moments::output::Format::Sarif,
    ] {
        let out = moments::output::render(format, &[(&sources, &checked.diagnostics)], false);
        assert!(!out.is_empty());
    }
}
