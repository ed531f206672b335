//! The paths as pod.json writes them.
//!
//! The validated model keeps each bundle file by its resolved path (a
//! symlink inside the bundle followed), but a published version must hold
//! each file where pod.json names it, and release.json keys files by that
//! name. Whatever its shape, pod.json names a file by a string that
//! resolves to it: every string of the document (and of an Appc
//! manifest's `ops` annotation, itself JSON) that is a plain relative path
//! resolving to a file of the model is taken as that file's written path.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use serde_json::Value;

/// Each resolved path of `files` mapped to the path pod.json writes for
/// it, when that differs; `dir` is the bundle directory (canonical).
pub fn written_paths(manifest: &[u8], dir: &Path, files: &[PathBuf]) -> HashMap<PathBuf, PathBuf> {
    let mut strings = Vec::new();
    if let Ok(value) = serde_json::from_slice::<Value>(manifest) {
        collect(&value, &mut strings, 0);
    }
    let mut written = HashMap::new();
    for text in &strings {
        let Some(path) = plain(text) else { continue };
        if files.contains(&path) {
            continue; // named by its own resolved path
        }
        let Ok(resolved) = std::fs::canonicalize(dir.join(&path)) else {
            continue;
        };
        if let Ok(inside) = resolved.strip_prefix(dir) {
            if files.iter().any(|f| f == inside)
                && !strings.iter().any(|s| plain(s).as_deref() == Some(inside))
            {
                written.entry(inside.to_path_buf()).or_insert(path);
            }
        }
    }
    written
}

/// Every string in `value`, and in strings that are JSON objects
/// themselves (an Appc annotation's value).
fn collect(value: &Value, out: &mut Vec<String>, depth: usize) {
    match value {
        Value::String(s) => {
            if depth < 2 && s.trim_start().starts_with('{') {
                if let Ok(inner) = serde_json::from_str::<Value>(s) {
                    collect(&inner, out, depth + 1);
                }
            }
            out.push(s.clone());
        }
        Value::Array(items) => items.iter().for_each(|v| collect(v, out, depth)),
        Value::Object(map) => map.values().for_each(|v| collect(v, out, depth)),
        _ => {}
    }
}

/// A relative path of plain names (`./` dropped), else `None`.
fn plain(text: &str) -> Option<PathBuf> {
    if text.is_empty() || text.contains("://") {
        return None;
    }
    let mut path = PathBuf::new();
    for component in Path::new(text).components() {
        match component {
            Component::Normal(name) => path.push(name),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!path.as_os_str().is_empty()).then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_through_a_link_inside_the_bundle_is_kept_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let dir = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(dir.join("images")).unwrap();
        std::fs::write(dir.join("images/app.aci"), "x").unwrap();
        std::os::unix::fs::symlink("images/app.aci", dir.join("app.aci")).unwrap();
        let manifest = br#"{"images": [{"path": "app.aci"}], "name": "images"}"#;
        let files = vec![PathBuf::from("images/app.aci")];
        let written = written_paths(manifest, &dir, &files);
        assert_eq!(written[Path::new("images/app.aci")], Path::new("app.aci"));
        // Named by its own path too: kept there.
        let both = br#"{"a": "app.aci", "b": "images/app.aci"}"#;
        assert!(written_paths(both, &dir, &files).is_empty());
        assert_eq!(
            plain("./units/a.service").unwrap(),
            Path::new("units/a.service")
        );
        assert_eq!(plain("units/../a"), None);
        assert_eq!(plain("/etc/passwd"), None);
    }
}
