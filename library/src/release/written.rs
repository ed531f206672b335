//! The paths as pod.json writes them.
//!
//! The validated model keeps each bundle file by its resolved path (a
//! symlink inside the bundle followed), but a published version must hold
//! each file where pod.json names it, and release.json keys files by that
//! name. pod.json names a file by a string that resolves to it in one of
//! the fields that name files: a container's `systemd.unit-files`, an
//! image's `path` and `signature`, a volume's `data` (and in an Appc
//! manifest's `ops` annotation, itself JSON: `systemd-units[].unit-file`,
//! `images[].path` and `signature`, `volumes[].data`). A plain relative
//! path there resolving to a file of the model is taken as that file's
//! written path; any other string (an environment value, say) never is.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use serde_json::Value;

/// Each resolved path of `files` mapped to the path pod.json writes for
/// it, when that differs; `dir` is the bundle directory (canonical).
pub fn written_paths(manifest: &[u8], dir: &Path, files: &[PathBuf]) -> HashMap<PathBuf, PathBuf> {
    let mut strings = Vec::new();
    if let Ok(value) = serde_json::from_slice::<Value>(manifest) {
        file_fields(&value, &mut strings);
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

/// The strings of the fields of pod.json that name files: a native
/// pod.json's and an Appc manifest's `ops` annotation's.
fn file_fields(value: &Value, out: &mut Vec<String>) {
    let items = |v: &Value, key: &str| -> Vec<Value> {
        v.get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let mut push = |v: Option<&Value>| {
        if let Some(s) = v.and_then(Value::as_str) {
            out.push(s.to_owned());
        }
    };
    let mut shapes = vec![value.clone()];
    for annotation in items(value, "annotations") {
        let ops = annotation.get("name").and_then(Value::as_str) == Some("ops");
        let inner = annotation.get("value").and_then(Value::as_str);
        if let (true, Some(inner)) = (ops, inner) {
            shapes.extend(serde_json::from_str::<Value>(inner).ok());
        }
    }
    for shape in &shapes {
        for container in items(shape, "containers") {
            let systemd = container.get("systemd").cloned().unwrap_or_default();
            items(&systemd, "unit-files")
                .iter()
                .for_each(|f| push(Some(f)));
        }
        for unit in items(shape, "systemd-units") {
            push(unit.get("unit-file"));
        }
        for image in items(shape, "images") {
            push(image.get("path"));
            push(image.get("signature"));
        }
        for volume in items(shape, "volumes") {
            push(volume.get("data"));
        }
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
        let both = br#"{"images": [{"path": "app.aci", "signature": "images/app.aci"}]}"#;
        assert!(written_paths(both, &dir, &files).is_empty());
        // A string in a field that names no file is never a written path.
        let noted = br#"{"images": [{"path": "images/app.aci"}], "environment": {"N": "app.aci"}}"#;
        assert!(written_paths(noted, &dir, &files).is_empty());
        let units = vec![PathBuf::from("images/app.aci")];
        let appc = serde_json::json!({"annotations": [{"name": "ops", "value":
            r#"{"systemd-units": [{"unit-file": "app.aci"}]}"#}]});
        let appc = serde_json::to_vec(&appc).unwrap();
        assert_eq!(
            written_paths(&appc, &dir, &units)[Path::new("images/app.aci")],
            Path::new("app.aci")
        );
        assert_eq!(
            plain("./units/a.service").unwrap(),
            Path::new("units/a.service")
        );
        assert_eq!(plain("units/../a"), None);
        assert_eq!(plain("/etc/passwd"), None);
    }
}
