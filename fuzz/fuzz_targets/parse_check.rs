//! Any bytes, as a moment file beside the shipped schema, and as a schema: parse, check and
//! render must return, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moments::check::check;
use moments::diagnostic::{SourceFile, Sources};
use moments::output::{render, Format};

const SCHEMA: &str = include_str!("../../campaigns/schema.moment");

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut sources = Sources::default();
    let schema = sources.add(SourceFile::new("campaigns/schema.moment", SCHEMA));
    let moment = sources.add(SourceFile::new("campaigns/fuzz.moment", text.as_ref()));
    let checked = check(&sources, Some(schema), &[moment]);
    render(Format::Human, &[(&sources, &checked.diagnostics)], false);

    let mut sources = Sources::default();
    let schema = sources.add(SourceFile::new("campaigns/schema.moment", text.as_ref()));
    let checked = check(&sources, Some(schema), &[]);
    render(Format::Json, &[(&sources, &checked.diagnostics)], false);
});
