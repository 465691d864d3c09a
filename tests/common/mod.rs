//! Helpers shared by the test files that say `mod common;`.
//!
//! Each test file is its own crate and uses only some of these, hence `dead_code`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh directory under the system's temp directory, removed when dropped. Tests run in
/// parallel, and several test binaries at once: the name holds the process id and a
/// counter, so no two share one.
pub struct TempDir(PathBuf);

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "moments-test-{}-{}-{name}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `relative` inside the directory.
    pub fn join(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.0.join(relative)
    }

    /// Writes `contents` to `relative` inside the directory, creating parents; its path.
    pub fn write(&self, relative: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent");
        }
        std::fs::write(&path, contents).expect("write file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The repository's root (where `Cargo.toml` and `campaigns/` are).
pub fn crate_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped campaigns and the committed sample shop (`data/sample`).
pub fn sample_shop() -> (moments::model::Model, moments::data::DataSet) {
    let root = crate_root();
    let groups = moments::project::discover(&[root.join("campaigns")]).expect("discover");
    let group = groups.into_iter().next().expect("a group");
    let (_, checked) = moments::project::check_group(&group).expect("check");
    let model = checked.model.expect("valid campaigns");
    let data =
        moments::data::DataSet::open(&root.join("data/sample"), &model.schema).expect("data");
    (model, data)
}
