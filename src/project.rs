//! Finding campaign files on disk and grouping them by schema.
//!
//! A campaign directory is one holding a `schema.moment`; every other `.moment` file below it
//! (not below a deeper `schema.moment`) is one of its moments. Files are read as bytes:
//! text that is not UTF-8 is reported, not refused.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::ast::Span;
use crate::check::{self, Checked};
use crate::diagnostic::{Code, Diagnostic, SourceFile, Sources};

pub const SCHEMA_FILE: &str = "schema.moment";

/// One campaign directory's files, read.
#[derive(Debug)]
pub struct Group {
    /// The directory of `schema.moment`, or of the files when there is none.
    pub root: PathBuf,
    pub schema: Option<PathBuf>,
    pub moments: Vec<PathBuf>,
}

/// Everything found under the paths given, grouped; sorted so output is stable.
pub fn discover(paths: &[PathBuf]) -> io::Result<Vec<Group>> {
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot read `{}`: {e}", path.display()))
        })?;
        if meta.is_dir() {
            walk(path, &mut files)?;
        } else {
            files.push(path.clone());
        }
    }
    files.sort();
    files.dedup();
    let mut groups: BTreeMap<PathBuf, Group> = BTreeMap::new();
    for file in files {
        let is_schema = file.file_name().is_some_and(|n| n == SCHEMA_FILE);
        let schema = if is_schema {
            Some(file.clone())
        } else {
            find_schema(&file)
        };
        let root = schema
            .as_ref()
            .and_then(|s| s.parent())
            .or_else(|| file.parent())
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let group = groups.entry(root.clone()).or_insert_with(|| Group {
            root,
            schema: schema.clone(),
            moments: Vec::new(),
        });
        if !is_schema {
            group.moments.push(file);
        }
    }
    Ok(groups.into_values().collect())
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot read `{}`: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        let hidden = entry
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        if entry.is_dir() {
            walk(&entry, files)?;
        } else if entry.extension().is_some_and(|e| e == "moment") {
            files.push(entry);
        }
    }
    Ok(())
}

/// The nearest `schema.moment` in the file's directory or above it.
fn find_schema(file: &Path) -> Option<PathBuf> {
    let mut dir = file.parent();
    while let Some(d) = dir {
        let candidate = d.join(SCHEMA_FILE);
        if candidate.is_file() {
            return Some(candidate);
        }
        dir = d.parent().filter(|p| !p.as_os_str().is_empty());
        if dir.is_none() && !d.as_os_str().is_empty() && d.is_relative() {
            // A relative path's last parent is the current directory.
            let here = Path::new(SCHEMA_FILE);
            return here.is_file().then(|| here.to_path_buf());
        }
    }
    None
}

/// Read a file for checking: bytes that are not UTF-8 become a diagnostic and replacement
/// characters, so the rest of the file is still checked.
pub fn read_source(path: &Path) -> io::Result<(SourceFile, Option<(usize, String)>)> {
    let bytes = std::fs::read(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot read `{}`: {e}", path.display())))?;
    Ok(match String::from_utf8(bytes) {
        Ok(text) => (SourceFile::new(path, text), None),
        Err(error) => {
            let at = error.utf8_error().valid_up_to();
            let byte = error.as_bytes().get(at).copied().unwrap_or(0);
            let text = String::from_utf8_lossy(error.as_bytes()).into_owned();
            let message = format!("file is not valid UTF-8: the byte `0x{byte:02X}` is not text");
            (SourceFile::new(path, text), Some((at, message)))
        }
    })
}

/// Read and check one group.
pub fn check_group(group: &Group) -> io::Result<(Sources, Checked)> {
    let mut sources = Sources::default();
    let mut encoding = Vec::new();
    let mut add = |path: &Path, sources: &mut Sources| -> io::Result<usize> {
        let (file, bad) = read_source(path)?;
        let id = sources.add(file);
        if let Some((at, message)) = bad {
            encoding.push(
                Diagnostic::new(Code::NotUtf8, id, Span::new(at, at + 1), message)
                    .with_label("not UTF-8")
                    .with_help("save the file as UTF-8"),
            );
        }
        Ok(id)
    };
    let schema = match &group.schema {
        Some(path) => Some(add(path, &mut sources)?),
        None => None,
    };
    let mut moments = Vec::new();
    for path in &group.moments {
        moments.push(add(path, &mut sources)?);
    }
    let mut checked = check::check(&sources, schema, &moments);
    if !encoding.is_empty() {
        checked.model = None;
        checked.diagnostics.extend(encoding);
        crate::diagnostic::sort(&mut checked.diagnostics);
    }
    Ok((sources, checked))
}
