//! The ops_release binary, run as Ansible runs it, on bundles made here
//! (a small ACI, a unit file, a volume archive) and a repository in a
//! temporary directory.

use std::fs;
use std::path::{Path, PathBuf};

use ops_core::testkit::{protocol_results, run_file};
use serde_json::{json, Value};
use sha2::{Digest, Sha256, Sha512};

const BIN: &str = env!("CARGO_BIN_EXE_ops_release");

fn run(args: &Value) -> Value {
    run_file(Path::new(BIN), args)
}

/// A tar of `files` (name, contents), the same bytes every time.
fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, contents) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        builder.append_data(&mut header, name, *contents).unwrap();
    }
    builder.into_inner().unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What goes into a bundle.
struct Content<'a> {
    version: &'a str,
    app: &'a str,
    unit: &'a str,
    volume: &'a str,
    /// Leave the image file out (pod.json still names it).
    without_image: bool,
    without_volume: bool,
}

const V1: Content = Content {
    version: "1",
    app: "hello 1",
    unit: "[Service]\nExecStart=/bin/true\n",
    volume: "static 1",
    without_image: false,
    without_volume: false,
};

/// Write a bundle into `dir`; returns the image id.
fn bundle(dir: &Path, content: &Content) -> String {
    fs::create_dir_all(dir.join("units")).unwrap();
    let manifest = br#"{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/app"}"#;
    let aci = tar_of(&[
        ("manifest", manifest),
        ("rootfs/hello", content.app.as_bytes()),
    ]);
    let id = format!("sha512-{}", hex(&Sha512::digest(&aci)));
    if !content.without_image {
        fs::write(dir.join("app.aci"), &aci).unwrap();
    }
    if !content.without_volume {
        fs::write(
            dir.join("static.tar"),
            tar_of(&[("index.html", content.volume.as_bytes())]),
        )
        .unwrap();
    }
    fs::write(dir.join("units/shop.service"), content.unit).unwrap();
    let pod = json!({
        "name": "shop",
        "version": content.version,
        "containers": [{"name": "web", "image": id, "systemd": {"unit-files": ["units/shop.service"]}}],
        "images": [{"id": id, "path": "app.aci"}],
        "volumes": [{"name": "static", "path": "/srv/static", "data": "static.tar"}],
    });
    fs::write(
        dir.join("pod.json"),
        serde_json::to_string_pretty(&pod).unwrap(),
    )
    .unwrap();
    id
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    repo: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(dir.path()).unwrap();
    Fixture {
        repo: root.join("repo"),
        root,
        _dir: dir,
    }
}

impl Fixture {
    fn bundle(&self, name: &str, content: &Content) -> PathBuf {
        let dir = self.root.join(name);
        bundle(&dir, content);
        dir
    }

    fn publish(&self, bundle: &Path, extra: Value) -> Value {
        let mut args = json!({"repo": self.repo, "bundle": bundle, "channel": "stable"});
        for (k, v) in extra.as_object().unwrap() {
            args[k] = v.clone();
        }
        run(&args)
    }

    /// Every path under the repository with what it holds.
    fn listing(&self) -> Vec<String> {
        let mut out = Vec::new();
        list(&self.repo, &self.repo, &mut out);
        out.sort();
        out
    }
}

fn list(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let rel = path.strip_prefix(root).unwrap().display().to_string();
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.file_type().is_symlink() {
            out.push(format!(
                "{rel} -> {}",
                fs::read_link(&path).unwrap().display()
            ));
        } else if meta.is_dir() {
            out.push(format!("{rel}/"));
            list(root, &path, out);
        } else {
            out.push(format!(
                "{rel} {}",
                hex(&Sha256::digest(fs::read(&path).unwrap()))
            ));
        }
    }
}

#[test]
fn speaks_the_module_protocol() {
    let valid = json!({"repo": "/nonexistent/repo", "channel": "stable", "name": "shop", "version": "1", "state": "absent"});
    insta::assert_json_snapshot!(protocol_results(Path::new(BIN), &valid));
}

#[test]
fn a_bundle_is_published_with_links_into_images_and_volumes() {
    let f = fixture();
    let b = f.bundle("b1", &V1);
    let id = bundle(&b, &V1);
    let result = f.publish(&b, json!({}));
    assert_eq!(result["changed"], json!(true), "{result}");
    assert_eq!(result["version"], json!("1"));
    assert_eq!(result["tip"], json!("1"));
    assert_eq!(
        result["added"],
        json!(["images/app/1", "volumes/static/1", "channels/stable/shop/1"])
    );
    assert_eq!(result["reused"], json!([]));
    assert_eq!(result["path"], json!(f.repo.join("channels/stable/shop/1")));
    let version = f.repo.join("channels/stable/shop/1");
    assert_eq!(
        fs::read_link(version.join("app.aci")).unwrap(),
        Path::new("../../../../images/app/1/app.aci")
    );
    assert_eq!(
        fs::read(version.join("app.aci")).unwrap(),
        fs::read(b.join("app.aci")).unwrap()
    );
    assert_eq!(
        fs::read_link(version.join("static.tar")).unwrap(),
        Path::new("../../../../volumes/static/1/static.tar")
    );
    assert!(!fs::symlink_metadata(version.join("units/shop.service"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        fs::read(version.join("pod.json")).unwrap(),
        fs::read(b.join("pod.json")).unwrap()
    );
    assert_eq!(
        fs::read_link(f.repo.join("channels/stable/shop/tip")).unwrap(),
        Path::new("1")
    );
    assert_eq!(
        fs::read_to_string(f.repo.join("images/app/1/id")).unwrap(),
        format!("{id}\n")
    );
    assert_eq!(
        fs::read_to_string(f.repo.join("images/app/1/sha512")).unwrap(),
        format!("{}\n", id.trim_start_matches("sha512-"))
    );
    let record: Value =
        serde_json::from_slice(&fs::read(version.join("release.json")).unwrap()).unwrap();
    assert_eq!(record["pod"], json!("shop"));
    assert_eq!(record["label"], json!(null));
    assert_eq!(
        record["files"]["app.aci"]["artifact"],
        json!("images/app/1/app.aci")
    );
    assert_eq!(record["images"][0]["id"], json!(id));
    assert!(record["files"]["units/shop.service"]["sha256"].is_string());
    let volume_sha = fs::read_to_string(f.repo.join("volumes/static/1/sha256")).unwrap();
    assert_eq!(record["volumes"][0]["sha256"], json!(volume_sha.trim()));
}

#[test]
fn the_same_bundle_again_changes_nothing() {
    let f = fixture();
    let b = f.bundle("b1", &V1);
    assert_eq!(f.publish(&b, json!({}))["changed"], json!(true));
    let before = f.listing();
    let again = f.publish(&b, json!({}));
    assert_eq!(again["changed"], json!(false), "{again}");
    assert_eq!(again["added"], json!([]));
    assert_eq!(
        again["reused"],
        json!(["images/app/1", "volumes/static/1", "channels/stable/shop/1"])
    );
    assert_eq!(again["actions"], json!([]));
    assert_eq!(f.listing(), before);
}

#[test]
fn a_new_version_moves_tip_and_a_label_goes_into_every_path() {
    let f = fixture();
    let b1 = f.bundle("b1", &V1);
    let b2 = f.bundle(
        "b2",
        &Content {
            version: "2",
            app: "hello 2",
            volume: "static 2",
            unit: "[Service]\nExecStart=/bin/false\n",
            ..V1
        },
    );
    let label = json!({"label": "web/shop"});
    assert_eq!(f.publish(&b1, label.clone())["changed"], json!(true));
    let second = f.publish(&b2, label);
    assert_eq!(second["tip"], json!("2"), "{second}");
    assert_eq!(
        second["added"],
        json!([
            "images/web/shop/app/2",
            "volumes/web/shop/static/2",
            "channels/stable/web/shop/shop/2"
        ])
    );
    let actions: Vec<&str> = second["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        actions.last().unwrap(),
        &"move channels/stable/web/shop/shop/tip from 1 to 2"
    );
    let pod = f.repo.join("channels/stable/web/shop/shop");
    assert_eq!(fs::read_link(pod.join("tip")).unwrap(), Path::new("2"));
    assert_eq!(
        fs::read_link(pod.join("2/app.aci")).unwrap(),
        Path::new("../../../../../../images/web/shop/app/2/app.aci")
    );
    assert!(pod.join("2/app.aci").is_file(), "the link resolves");
    // tip: false publishes without moving it.
    let b3 = f.bundle("b3", &Content { version: "3", ..V1 });
    let third = f.publish(&b3, json!({"label": "web/shop", "tip": false}));
    assert_eq!(third["tip"], json!("2"), "{third}");
    assert_eq!(fs::read_link(pod.join("tip")).unwrap(), Path::new("2"));
}

#[test]
fn publishing_an_old_version_again_leaves_tip_and_name_with_version_points_it() {
    let f = fixture();
    let b1 = f.bundle("b1", &V1);
    let b2 = f.bundle(
        "b2",
        &Content {
            version: "2",
            app: "hello 2",
            ..V1
        },
    );
    assert_eq!(f.publish(&b1, json!({}))["tip"], json!("1"));
    assert_eq!(f.publish(&b2, json!({}))["tip"], json!("2"));
    let tip = f.repo.join("channels/stable/shop/tip");
    let before = f.listing();
    // Rerunning the publish of version 1 (check mode or not) keeps tip at 2.
    for check_mode in [true, false] {
        let again = f.publish(&b1, json!({"_ansible_check_mode": check_mode}));
        assert_eq!(again["changed"], json!(false), "{again}");
        assert_eq!(again["tip"], json!("2"));
        assert_eq!(again["actions"], json!([]));
        let msg = again["msg"].as_str().unwrap();
        assert!(
            msg.contains("is published as requested; tip names 2"),
            "{msg}"
        );
    }
    assert_eq!(f.listing(), before);
    // name + version, no bundle: tip is pointed at a published version.
    let point = |version: &str, extra: Value| {
        let mut args =
            json!({"repo": f.repo, "channel": "stable", "name": "shop", "version": version});
        for (k, v) in extra.as_object().unwrap() {
            args[k] = v.clone();
        }
        run(&args)
    };
    let back = point("1", json!({}));
    assert_eq!(back["changed"], json!(true), "{back}");
    assert_eq!(back["tip"], json!("1"));
    assert_eq!(back["reused"], json!(["channels/stable/shop/1"]));
    assert_eq!(
        back["actions"],
        json!(["move channels/stable/shop/tip from 2 to 1"])
    );
    assert_eq!(fs::read_link(&tip).unwrap(), Path::new("1"));
    assert_eq!(point("1", json!({}))["changed"], json!(false));
    // With tip: false, nothing is done.
    let nothing = point("2", json!({"tip": false}));
    assert_eq!(nothing["changed"], json!(false), "{nothing}");
    assert_eq!(fs::read_link(&tip).unwrap(), Path::new("1"));
    // Publishing version 2 again does not move tip forward either.
    assert_eq!(f.publish(&b2, json!({}))["tip"], json!("1"));
    // A version that is not published is refused, listing those that are.
    let missing = point("10", json!({}));
    assert_eq!(missing["failed"], json!(true), "{missing}");
    insta::assert_snapshot!(missing["msg"].as_str().unwrap());
    // Removing the version tip names removes tip; the next publish of a
    // published version points it again (the channel has no tip).
    let absent = point("1", json!({"state": "absent"}));
    assert_eq!(absent["tip"], json!(null), "{absent}");
    let again = f.publish(&b2, json!({}));
    assert_eq!(again["changed"], json!(true), "{again}");
    assert_eq!(
        again["actions"],
        json!(["point channels/stable/shop/tip at 2"])
    );
    assert_eq!(fs::read_link(&tip).unwrap(), Path::new("2"));
}

#[test]
fn each_image_and_volume_is_stored_once() {
    let f = fixture();
    let version = |n: &'static str, app: &'static str| {
        let b = f.bundle(
            &format!("b{n}"),
            &Content {
                version: n,
                app,
                ..V1
            },
        );
        (b, f.repo.join("channels/stable/shop").join(n))
    };
    let (b1, _) = version("1", "hello 1");
    assert_eq!(f.publish(&b1, json!({}))["changed"], json!(true));
    // Version 2 has the same image and volume: it links to version 1's.
    let (b2, v2) = version("2", "hello 1");
    let second = f.publish(&b2, json!({}));
    assert_eq!(
        second["added"],
        json!(["channels/stable/shop/2"]),
        "{second}"
    );
    assert_eq!(
        second["reused"],
        json!(["images/app/1", "volumes/static/1"])
    );
    assert_eq!(
        fs::read_link(v2.join("app.aci")).unwrap(),
        Path::new("../../../../images/app/1/app.aci")
    );
    assert_eq!(
        fs::read_link(v2.join("static.tar")).unwrap(),
        Path::new("../../../../volumes/static/1/static.tar")
    );
    assert!(!f.repo.join("images/app/2").exists());
    assert!(!f.repo.join("volumes/static/2").exists());
    let record: Value =
        serde_json::from_slice(&fs::read(v2.join("release.json")).unwrap()).unwrap();
    assert_eq!(record["images"][0]["version"], json!("1"));
    assert_eq!(record["volumes"][0]["version"], json!("1"));
    assert_eq!(f.publish(&b2, json!({}))["changed"], json!(false));
    // A new image is stored under the pod version; version 10 has the
    // same one as 3 and links to it (the lowest version holding it).
    let (b3, _) = version("3", "hello 3");
    let third = f.publish(&b3, json!({}));
    assert_eq!(
        third["added"],
        json!(["images/app/3", "channels/stable/shop/3"]),
        "{third}"
    );
    let (b10, _) = version("10", "hello 3");
    let tenth = f.publish(&b10, json!({}));
    assert_eq!(
        tenth["reused"],
        json!(["images/app/3", "volumes/static/1"]),
        "{tenth}"
    );
    // The pod version's own directory is used when it holds the same
    // content (a repository written before images were stored once).
    fs::create_dir_all(f.repo.join("images/app/4")).unwrap();
    for name in ["app.aci", "id", "sha512"] {
        fs::copy(
            f.repo.join("images/app/1").join(name),
            f.repo.join("images/app/4").join(name),
        )
        .unwrap();
    }
    let (b4, _) = version("4", "hello 1");
    let fourth = f.publish(&b4, json!({}));
    assert_eq!(
        fourth["reused"],
        json!(["images/app/4", "volumes/static/1"]),
        "{fourth}"
    );
    // A version an instruction file sets is used as it is.
    let (b5, v5) = version("5", "hello 1");
    let file = instructions(
        &f,
        "5",
        &format!("bundle: {}\nimages: {{app: 5}}\n", b5.display()),
    );
    let fifth = run(&json!({"repo": f.repo, "instructions": file}));
    assert_eq!(
        fifth["added"],
        json!(["images/app/5", "channels/beta/shop/5"]),
        "{fifth}"
    );
    assert_eq!(fifth["reused"], json!(["volumes/static/1"]));
    assert!(f.repo.join("images/app/5/app.aci").is_file());
    assert!(!v5.exists(), "published in channel beta");
    // An instructed bundle without the image file, no version instructed:
    // the lowest version holding its id is taken.
    let b6 = f.bundle(
        "b6",
        &Content {
            version: "6",
            without_image: true,
            ..V1
        },
    );
    let file = instructions(&f, "6", &format!("bundle: {}\n", b6.display()));
    let sixth = run(&json!({"repo": f.repo, "instructions": file}));
    assert_eq!(
        sixth["reused"],
        json!(["images/app/1", "volumes/static/1"]),
        "{sixth}"
    );
}

#[test]
fn other_content_under_a_published_version_is_refused_naming_what_differs() {
    let f = fixture();
    let b1 = f.bundle("b1", &V1);
    assert_eq!(f.publish(&b1, json!({}))["changed"], json!(true));
    let before = f.listing();
    let other = f.bundle(
        "other",
        &Content {
            app: "hello again",
            unit: "[Service]\nExecStart=/bin/false\n",
            volume: "other",
            ..V1
        },
    );
    let refused = f.publish(&other, json!({}));
    assert_eq!(refused["failed"], json!(true), "{refused}");
    assert_eq!(refused["changed"], json!(false));
    insta::assert_snapshot!(refused["msg"].as_str().unwrap());
    assert_eq!(f.listing(), before, "nothing was written");
}

#[test]
fn check_mode_changes_nothing_and_diff_shows_the_record() {
    let f = fixture();
    let b1 = f.bundle("b1", &V1);
    fs::create_dir(&f.repo).unwrap();
    let before = f.listing();
    let check = f.publish(
        &b1,
        json!({"_ansible_check_mode": true, "_ansible_diff": true}),
    );
    assert_eq!(check["changed"], json!(true), "{check}");
    assert!(
        check["msg"]
            .as_str()
            .unwrap()
            .starts_with("check mode: add images/app/1"),
        "{check}"
    );
    assert_eq!(f.listing(), before, "the repository is as it was");
    assert!(fs::read_dir(&f.repo).unwrap().next().is_none());
    let diff = check["diff"].as_array().unwrap();
    assert_eq!(diff.len(), 4, "{check}");
    assert_eq!(
        diff[2]["after_header"],
        json!("channels/stable/shop/1/release.json")
    );
    assert!(diff[2]["after"]
        .as_str()
        .unwrap()
        .contains("\"artifact\": \"images/app/1/app.aci\""));
    assert_eq!(diff[3]["after"], json!("tip -> 1\n"));
    let real = f.publish(&b1, json!({"_ansible_diff": true}));
    assert_eq!(real["diff"], check["diff"]);
    assert_eq!(real["actions"], check["actions"]);
}

/// An instruction file inside the repository, at
/// channels/<channel>/<pod>/<version>.yaml.
fn instructions(f: &Fixture, version: &str, text: &str) -> PathBuf {
    let dir = f.repo.join("channels/beta/shop");
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{version}.yaml"));
    fs::write(&path, text).unwrap();
    path
}

#[test]
fn an_instruction_file_gives_its_metadata_by_its_path_and_takes_artifacts_from_the_repository() {
    let f = fixture();
    let b1 = f.bundle("b1", &V1);
    assert_eq!(f.publish(&b1, json!({}))["changed"], json!(true));
    // Version 2 reuses image 1 and volume 1: the bundle has neither file.
    let b2 = f.bundle(
        "b2",
        &Content {
            version: "2",
            without_image: true,
            without_volume: true,
            ..V1
        },
    );
    let file = instructions(
        &f,
        "2",
        &format!(
            "bundle: {}\nimages: {{app: 1}}\nvolumes:\n  static: 1\nrevisions: {{shop: 4f2a9c1, lib: 17}}\n",
            b2.display()
        ),
    );
    let result = run(&json!({"repo": f.repo, "instructions": file}));
    assert_eq!(result["changed"], json!(true), "{result}");
    assert_eq!(result["added"], json!(["channels/beta/shop/2"]));
    assert_eq!(
        result["reused"],
        json!(["images/app/1", "volumes/static/1"])
    );
    let version = f.repo.join("channels/beta/shop/2");
    assert_eq!(
        fs::read_link(version.join("app.aci")).unwrap(),
        Path::new("../../../../images/app/1/app.aci")
    );
    assert_eq!(
        fs::read_link(f.repo.join("channels/beta/shop/tip")).unwrap(),
        Path::new("2")
    );
    // The source revisions are recorded, as seed 002 has them.
    let record: Value =
        serde_json::from_slice(&fs::read(version.join("release.json")).unwrap()).unwrap();
    assert_eq!(record["revisions"], json!({"lib": "17", "shop": "4f2a9c1"}));
    let bad = instructions(&f, "6", "bundle: x\nrevisions: {shop: \"a\\nb\"}\n");
    let refused = run(&json!({"repo": f.repo, "instructions": bad}));
    assert!(
        refused["msg"]
            .as_str()
            .unwrap()
            .contains("revisions.\"shop\": expected"),
        "{refused}"
    );
    // A value that disagrees with the path is refused.
    let wrong = instructions(&f, "3", &format!("version: 4\nbundle: {}\n", b1.display()));
    let refused = run(&json!({"repo": f.repo, "instructions": wrong}));
    assert_eq!(refused["failed"], json!(true), "{refused}");
    assert!(
        refused["msg"]
            .as_str()
            .unwrap()
            .contains("version: the file says \"4\" but its path in the repository says \"3\""),
        "{refused}"
    );
    // An unknown key is refused, naming the file and the key.
    let unknown = instructions(&f, "5", "bundle: x\nimgaes: {}\n");
    let refused = run(&json!({"repo": f.repo, "instructions": unknown}));
    let msg = refused["msg"].as_str().unwrap();
    assert!(
        msg.contains("5.yaml") && msg.contains("unknown field `imgaes`"),
        "{msg}"
    );
}

#[test]
fn a_volume_or_image_neither_bundle_nor_repository_holds_is_an_error() {
    let f = fixture();
    let refused = |name: &str, content: &Content, text: &str| {
        let b = f.bundle(name, content);
        let file = instructions(
            &f,
            content.version,
            &format!("bundle: {}\n{text}", b.display()),
        );
        let result = run(&json!({"repo": f.repo, "instructions": file}));
        assert_eq!(result["failed"], json!(true), "{result}");
        result["msg"].as_str().unwrap().to_owned()
    };
    let no_volume = Content {
        without_volume: true,
        ..V1
    };
    let no_image = Content {
        without_image: true,
        ..V1
    };
    let mut messages = vec![
        refused("b", &no_volume, "volumes: {static: 9}\n"),
        refused("c", &no_image, ""),
    ];
    assert!(!f.repo.join("images").exists());
    // With versions 1 of the image and volume in the repository: the
    // messages list the versions held, and which holds the image.
    assert_eq!(
        f.publish(&f.bundle("v1", &V1), json!({}))["changed"],
        json!(true)
    );
    messages.push(refused("d", &no_volume, "volumes: {static: 9}\n"));
    let no_image = Content {
        version: "2",
        ..no_image
    };
    messages.push(refused("e", &no_image, "images: {app: 9}\n"));
    let other = Content {
        app: "hello 2",
        ..no_image
    };
    messages.push(refused("g", &other, "images: {app: 2}\n"));
    insta::assert_json_snapshot!(messages);
}

#[test]
fn other_content_under_an_instructed_version_is_refused_suggesting_another_version() {
    let f = fixture();
    assert_eq!(
        f.publish(&f.bundle("v1", &V1), json!({}))["changed"],
        json!(true)
    );
    let b = f.bundle(
        "b2",
        &Content {
            version: "2",
            app: "hello 2",
            ..V1
        },
    );
    let file = instructions(
        &f,
        "2",
        &format!("bundle: {}\nimages: {{app: 1}}\n", b.display()),
    );
    let result = run(&json!({"repo": f.repo, "instructions": file}));
    assert_eq!(result["failed"], json!(true), "{result}");
    insta::assert_snapshot!(result["msg"].as_str().unwrap());
}

#[test]
fn an_instructed_image_or_volume_the_pod_does_not_have_is_refused() {
    let f = fixture();
    let b = f.bundle("b", &V1);
    let file = instructions(
        &f,
        "1",
        &format!(
            "bundle: {}\nimages: {{app: 1, ap: 1}}\nvolumes: {{nosuch: 1}}\n",
            b.display()
        ),
    );
    for check_mode in [true, false] {
        let refused =
            run(&json!({"repo": f.repo, "instructions": file, "_ansible_check_mode": check_mode}));
        assert_eq!(refused["failed"], json!(true), "{refused}");
        assert_eq!(
            refused["msg"],
            json!(format!(
                "{}: images.ap: pod shop has no image of that name (its images: app); \
                 volumes.nosuch: pod shop has no volume of that name (its volumes: static)",
                file.display()
            ))
        );
    }
    assert!(!f.repo.join("images").exists());
}

#[test]
fn absent_removes_the_version_and_the_tip_naming_it_and_leaves_artifacts() {
    let f = fixture();
    let b1 = f.bundle("b1", &V1);
    assert_eq!(f.publish(&b1, json!({}))["changed"], json!(true));
    let args = json!({"repo": f.repo, "channel": "stable", "name": "shop", "version": "1", "state": "absent"});
    let removed = run(&args);
    assert_eq!(removed["changed"], json!(true), "{removed}");
    assert_eq!(
        removed["actions"],
        json!([
            "remove channels/stable/shop/1",
            "remove channels/stable/shop/tip: it named version 1, which is removed (point tip \
             at a published version with state=present, name and version, no bundle)"
        ])
    );
    assert_eq!(removed["tip"], json!(null));
    assert!(!f.repo.join("channels/stable/shop/1").exists());
    assert!(fs::symlink_metadata(f.repo.join("channels/stable/shop/tip")).is_err());
    assert!(
        f.repo.join("images/app/1/app.aci").is_file(),
        "artifacts stay"
    );
    let again = run(&args);
    assert_eq!(again["changed"], json!(false), "{again}");
    // By the bundle too.
    assert_eq!(f.publish(&b1, json!({}))["changed"], json!(true));
    let by_bundle = f.publish(&b1, json!({"state": "absent"}));
    assert_eq!(by_bundle["changed"], json!(true), "{by_bundle}");
}

#[test]
fn bad_options_are_refused_in_one_message() {
    let f = fixture();
    let results: Vec<Value> = [
        json!({"repo": f.repo, "bundle": "/b", "instructions": "/i", "channel": "stable"}),
        json!({"repo": f.repo, "channel": "stable"}),
        json!({"repo": "relative", "bundle": "/b", "channel": "Stable", "label": "web//shop"}),
        json!({"repo": f.repo, "state": "absent", "name": "shop"}),
        json!({"repo": f.repo, "bundle": "/b", "channel": "stable", "state": "gone"}),
        json!({"repo": f.repo, "bundle": "/b", "channel": "stable", "label": "Demo"}),
    ]
    .iter()
    .map(|args| {
        let result = run(args);
        assert_eq!(result["failed"], json!(true), "{result}");
        result["msg"].clone()
    })
    .collect();
    insta::assert_json_snapshot!(results);
}

#[test]
fn a_symlink_leaving_the_bundle_is_refused() {
    let f = fixture();
    let b = f.bundle(
        "b",
        &Content {
            without_volume: true,
            ..V1
        },
    );
    std::os::unix::fs::symlink("/etc/passwd", b.join("static.tar")).unwrap();
    let refused = f.publish(&b, json!({}));
    assert_eq!(refused["failed"], json!(true), "{refused}");
    let msg = refused["msg"].as_str().unwrap();
    assert!(msg.contains("outside the bundle directory"), "{msg}");
    assert!(!f.repo.exists());
}

#[test]
fn an_image_whose_file_is_not_its_id_is_refused() {
    let f = fixture();
    let b = f.bundle("b", &V1);
    let other = tar_of(&[(
        "manifest",
        br#"{"acKind":"ImageManifest","name":"app"}"#.as_slice(),
    )]);
    fs::write(b.join("app.aci"), other).unwrap();
    let refused = f.publish(&b, json!({}));
    assert_eq!(refused["failed"], json!(true), "{refused}");
    assert!(
        refused["msg"]
            .as_str()
            .unwrap()
            .contains("image \"app.aci\": pod.json gives its id as sha512-"),
        "{refused}"
    );
}

#[test]
fn a_docker_archive_is_named_by_its_repo_tag_and_a_signature_is_linked_beside_it() {
    let f = fixture();
    let b = f.root.join("docker");
    fs::create_dir_all(b.join("units")).unwrap();
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let id = format!("sha256:{}", hex(&Sha256::digest(config)));
    let manifest = br#"[{"Config":"config.json","RepoTags":["localhost/shop/web:2"],"Layers":[]}]"#;
    fs::write(
        b.join("image.tar"),
        tar_of(&[("manifest.json", manifest), ("config.json", config)]),
    )
    .unwrap();
    fs::write(b.join("image.tar.asc"), "a signature").unwrap();
    fs::write(
        b.join("units/shop.service"),
        "[Service]\nExecStart=/bin/true\n",
    )
    .unwrap();
    let pod = json!({
        "name": "shop",
        "version": "4",
        "containers": [{"name": "web", "image": id, "systemd": {"unit-files": ["units/shop.service"]}}],
        "images": [{"id": id, "path": "image.tar", "signature": "image.tar.asc"}],
    });
    fs::write(b.join("pod.json"), pod.to_string()).unwrap();
    let result = f.publish(&b, json!({}));
    assert_eq!(
        result["added"],
        json!(["images/web/4", "channels/stable/shop/4"]),
        "{result}"
    );
    let version = f.repo.join("channels/stable/shop/4");
    assert_eq!(
        fs::read_link(version.join("image.tar.asc")).unwrap(),
        Path::new("../../../../images/web/4/image.tar.asc")
    );
    assert_eq!(
        fs::read_to_string(version.join("image.tar.asc")).unwrap(),
        "a signature"
    );
    assert_eq!(
        fs::read_to_string(f.repo.join("images/web/4/id")).unwrap(),
        format!("{id}\n")
    );
    assert!(
        !f.repo.join("images/web/4/sha512").exists(),
        "sha512 is for ACIs only"
    );
}

#[test]
fn an_instruction_file_names_the_version_to_take_out_without_reading_its_bundle() {
    let f = fixture();
    let b1 = f.bundle("b1", &V1);
    let file = instructions(&f, "1", &format!("bundle: {}\n", b1.display()));
    assert_eq!(
        run(&json!({"repo": f.repo, "instructions": file}))["changed"],
        json!(true)
    );
    fs::remove_dir_all(&b1).unwrap();
    let removed = run(&json!({"repo": f.repo, "instructions": file, "state": "absent"}));
    assert_eq!(removed["changed"], json!(true), "{removed}");
    assert!(!f.repo.join("channels/beta/shop/1").exists());
    assert!(
        f.repo.join("channels/beta/shop/1.yaml").exists(),
        "the instruction file stays"
    );
}

#[test]
fn a_file_named_through_a_link_inside_the_bundle_is_published_where_pod_json_names_it() {
    let f = fixture();
    let b = f.bundle("b", &V1);
    fs::create_dir(b.join("images")).unwrap();
    fs::rename(b.join("app.aci"), b.join("images/app.aci")).unwrap();
    std::os::unix::fs::symlink("images/app.aci", b.join("app.aci")).unwrap();
    let result = f.publish(&b, json!({}));
    assert_eq!(result["changed"], json!(true), "{result}");
    let version = f.repo.join("channels/stable/shop/1");
    assert_eq!(
        fs::read_link(version.join("app.aci")).unwrap(),
        Path::new("../../../../images/app/1/app.aci")
    );
    assert!(!version.join("images").exists());
    let record: Value =
        serde_json::from_slice(&fs::read(version.join("release.json")).unwrap()).unwrap();
    assert_eq!(
        record["files"]["app.aci"]["artifact"],
        json!("images/app/1/app.aci")
    );
    assert_eq!(f.publish(&b, json!({}))["changed"], json!(false));
}

#[test]
fn a_symlink_planted_in_the_repository_is_refused_before_anything_is_written() {
    let f = fixture();
    let b = f.bundle("b", &V1);
    let elsewhere = f.root.join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    fs::create_dir_all(&f.repo).unwrap();
    std::os::unix::fs::symlink(&elsewhere, f.repo.join("volumes")).unwrap();
    let before = f.listing();
    for check_mode in [true, false] {
        let refused = f.publish(&b, json!({"_ansible_check_mode": check_mode}));
        assert_eq!(refused["failed"], json!(true), "{refused}");
        assert_eq!(refused["changed"], json!(false));
        let msg = refused["msg"].as_str().unwrap();
        assert!(msg.contains("is a symlink that ops did not make"), "{msg}");
    }
    assert_eq!(f.listing(), before);
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
}

#[test]
fn what_is_published_is_what_ops_pod_reads_from_a_repository() {
    use ops_core::repository::{resolve, Repo, Wanted};
    let f = fixture();
    let b = f.bundle("b", &V1);
    assert_eq!(
        f.publish(&b, json!({"label": "web/shop"}))["changed"],
        json!(true)
    );
    let wanted = Wanted {
        repo: Repo::Dir(f.repo.clone()),
        channel: "stable".into(),
        label: ops_core::release::layout::Label::parse("web/shop").unwrap(),
        name: ops_core::bundle::PodName::parse("shop").unwrap(),
        version: None,
    };
    let (bundle, origin) =
        resolve(&wanted, std::time::Duration::from_secs(5)).expect("ops_pod reads it");
    assert_eq!(origin.tip.unwrap().as_str(), "1");
    assert_eq!(bundle.pod.images.len(), 1);
    assert_eq!(origin.record.files.len(), 3);
    assert_eq!(
        origin.record.files["static.tar"].artifact.as_deref(),
        Some("volumes/web/shop/static/1/static.tar")
    );
}

#[test]
fn what_a_killed_run_left_beside_its_places_is_swept_by_the_rerun() {
    let f = fixture();
    let b = f.bundle("b1", &V1);
    assert_eq!(f.publish(&b, json!({}))["changed"], json!(true));
    let clean = f.listing();
    // As a run killed mid-way leaves them: a half-staged version and
    // image, a half-made tip link.
    fs::remove_dir_all(f.repo.join("channels/stable/shop/1")).unwrap();
    fs::remove_file(f.repo.join("channels/stable/shop/tip")).unwrap();
    fs::remove_dir_all(f.repo.join("images/app/1")).unwrap();
    let leftovers = [
        "channels/stable/shop/.1.ops-tmp.4242.0",
        "images/app/.1.ops-tmp.4242.1",
    ];
    for left in leftovers {
        fs::create_dir_all(f.repo.join(left).join("half")).unwrap();
    }
    std::os::unix::fs::symlink("1", f.repo.join("channels/stable/shop/.tip.ops-tmp.4242.2"))
        .unwrap();
    let rerun = f.publish(&b, json!({}));
    assert_eq!(rerun["changed"], json!(true), "{rerun}");
    assert_eq!(f.listing(), clean, "the rerun converges with no leftovers");
    assert_eq!(f.publish(&b, json!({}))["changed"], json!(false));
}

#[test]
fn absent_removes_only_a_directory_whose_release_json_names_the_version() {
    let f = fixture();
    let b1 = f.bundle("b1", &V1);
    let b2 = f.bundle(
        "b2",
        &Content {
            version: "2",
            app: "hello 2",
            ..V1
        },
    );
    let web = json!({"label": "web"});
    assert_eq!(f.publish(&b1, web.clone())["changed"], json!(true));
    assert_eq!(f.publish(&b2, web)["changed"], json!(true));
    let before = f.listing();
    // channels/stable/web/shop is pod shop's directory (label web), not
    // version shop of a pod web.
    for check_mode in [true, false] {
        let args = json!({"repo": f.repo, "channel": "stable", "name": "web", "version": "shop",
            "state": "absent", "_ansible_check_mode": check_mode, "_ansible_diff": true});
        let result = run(&args);
        assert_eq!(result["changed"], json!(false), "{result}");
        assert_eq!(result["actions"], json!([]));
        let msg = result["msg"].as_str().unwrap();
        assert!(
            msg.contains("is not a published version of the pod"),
            "{msg}"
        );
    }
    // A version directory whose release.json names another pod, version,
    // channel or label is not taken out either.
    let shop = f.repo.join("channels/stable/web/shop");
    fs::create_dir_all(f.repo.join("channels/stable/web/other")).unwrap();
    let copy = f.repo.join("channels/stable/web/other/1");
    fs::create_dir(&copy).unwrap();
    fs::copy(shop.join("1/release.json"), copy.join("release.json")).unwrap();
    let other = json!({"repo": f.repo, "channel": "stable", "label": "web", "name": "other",
        "version": "1", "state": "absent"});
    assert_eq!(run(&other)["changed"], json!(false));
    fs::remove_dir_all(f.repo.join("channels/stable/web/other")).unwrap();
    assert_eq!(f.listing(), before, "nothing was removed");
    // The version itself is.
    let args = json!({"repo": f.repo, "channel": "stable", "label": "web", "name": "shop",
        "version": "1", "state": "absent"});
    assert_eq!(run(&args)["changed"], json!(true));
    assert!(!shop.join("1").exists());
    assert!(shop.join("2/release.json").is_file());
}

#[test]
fn a_publish_inside_or_in_the_place_of_a_published_directory_is_refused() {
    let f = fixture();
    // Pod web version shop (no label), then pod shop under label web: its
    // directory would be web's version shop.
    let web = f.root.join("web");
    bundle(&web, &V1);
    let manifest = fs::read_to_string(web.join("pod.json")).unwrap();
    let manifest = manifest
        .replace("\"name\": \"shop\"", "\"name\": \"web\"")
        .replace("\"version\": \"1\"", "\"version\": \"shop\"");
    fs::write(web.join("pod.json"), manifest).unwrap();
    assert_eq!(f.publish(&web, json!({}))["changed"], json!(true));
    let b1 = f.bundle("b1", &V1);
    let before = f.listing();
    let refused = f.publish(&b1, json!({"label": "web"}));
    assert_eq!(refused["failed"], json!(true), "{refused}");
    let mut messages = vec![refused["msg"].clone()];
    assert_eq!(f.listing(), before, "nothing was written");
    // Pod shop under label web first, then pod web version shop: its
    // version directory would be shop's directory of versions.
    let g = fixture();
    assert_eq!(
        g.publish(&b1, json!({"label": "web"}))["changed"],
        json!(true)
    );
    let before = g.listing();
    let refused = run(&json!({"repo": g.repo, "bundle": web, "channel": "stable"}));
    assert_eq!(refused["failed"], json!(true), "{refused}");
    messages.push(refused["msg"].clone());
    // Pod 1 under label web/shop: inside shop's published version 1, and
    // its image app would go inside images/web/shop, version shop of an
    // image web.
    let one = g.root.join("one");
    bundle(&one, &V1);
    let manifest = fs::read_to_string(one.join("pod.json"))
        .unwrap()
        .replace("\"name\": \"shop\"", "\"name\": \"1\"")
        .replace("\"version\": \"1\"", "\"version\": \"7\"");
    fs::write(one.join("pod.json"), manifest).unwrap();
    fs::create_dir_all(g.repo.join("images/web/shop")).unwrap();
    fs::write(g.repo.join("images/web/shop/id"), "sha512-00\n").unwrap();
    let before_one = g.listing();
    let refused = run(&json!({"repo": g.repo, "bundle": one, "channel": "stable",
        "label": "web/shop"}));
    assert_eq!(refused["failed"], json!(true), "{refused}");
    messages.push(refused["msg"].clone());
    assert_eq!(g.listing(), before_one, "nothing was written");
    fs::remove_dir_all(g.repo.join("images/web/shop")).unwrap();
    assert_eq!(g.listing(), before);
    insta::assert_json_snapshot!(messages);
}

/// The pod directory as a run that added `version` and was killed after
/// renaming it into place, before moving tip from `tip`, leaves it.
fn cut_short(pod: &Path, tip: &str, version: &str) {
    fs::remove_file(pod.join("tip")).unwrap();
    std::os::unix::fs::symlink(tip, pod.join("tip")).unwrap();
    fs::write(pod.join(".tip-intent"), format!("{version}\n")).unwrap();
}

#[test]
fn a_run_cut_short_before_tip_moved_is_finished_by_the_rerun() {
    let f = fixture();
    let b1 = f.bundle("b1", &V1);
    let b2 = f.bundle(
        "b2",
        &Content {
            version: "2",
            app: "hello 2",
            ..V1
        },
    );
    assert_eq!(f.publish(&b1, json!({}))["changed"], json!(true));
    let pod = f.repo.join("channels/stable/shop");
    // A run's own intent record is gone once tip moved.
    assert!(!pod.join(".tip-intent").exists());
    let added = f.publish(&b2, json!({"tip": false}));
    assert_eq!(added["tip"], json!("1"), "{added}");
    cut_short(&pod, "1", "2");
    assert_eq!(fs::read_link(pod.join("tip")).unwrap(), Path::new("1"));
    let before = f.listing();
    let check = f.publish(&b2, json!({"_ansible_check_mode": true}));
    assert_eq!(check["changed"], json!(true), "{check}");
    assert_eq!(f.listing(), before, "check mode writes nothing");
    let rerun = f.publish(&b2, json!({}));
    assert_eq!(rerun["changed"], json!(true), "{rerun}");
    assert_eq!(rerun["tip"], json!("2"));
    assert_eq!(rerun["actions"], check["actions"]);
    insta::assert_json_snapshot!(rerun["actions"]);
    assert_eq!(fs::read_link(pod.join("tip")).unwrap(), Path::new("2"));
    assert!(!pod.join(".tip-intent").exists());
    assert_eq!(f.publish(&b2, json!({}))["changed"], json!(false));
    // Any run on the pod finishes it: pointing tip, or taking out another
    // version.
    cut_short(&pod, "1", "2");
    let absent = json!({"repo": f.repo, "channel": "stable", "name": "shop", "version": "9",
        "state": "absent"});
    let finished = run(&absent);
    assert_eq!(finished["changed"], json!(true), "{finished}");
    assert_eq!(finished["tip"], json!("2"));
    assert_eq!(run(&absent)["changed"], json!(false));
    // An intent naming a version that is not published (the run stopped
    // before its version was in place) is dropped, tip left as it is.
    fs::write(pod.join(".tip-intent"), "3\n").unwrap();
    let dropped = f.publish(&b2, json!({}));
    assert_eq!(dropped["changed"], json!(true), "{dropped}");
    assert_eq!(dropped["tip"], json!("2"));
    assert!(!pod.join(".tip-intent").exists());
    insta::assert_json_snapshot!(dropped["actions"]);
    assert_eq!(f.publish(&b2, json!({}))["changed"], json!(false));
    // Taking out the version an intent names drops the intent, tip left.
    fs::write(pod.join(".tip-intent"), "1\n").unwrap();
    let args = json!({"repo": f.repo, "channel": "stable", "name": "shop", "version": "1",
        "state": "absent"});
    let removed = run(&args);
    assert_eq!(removed["tip"], json!("2"), "{removed}");
    assert!(!pod.join(".tip-intent").exists());
    assert!(!pod.join("1").exists());
    // ops_pod reads the pod directory with an intent record in it.
    fs::write(pod.join(".tip-intent"), "2\n").unwrap();
    let wanted = ops_core::repository::Wanted {
        repo: ops_core::repository::Repo::Dir(f.repo.clone()),
        channel: "stable".into(),
        label: ops_core::release::layout::Label::default(),
        name: ops_core::bundle::PodName::parse("shop").unwrap(),
        version: None,
    };
    let (_, origin) = ops_core::repository::resolve(&wanted, std::time::Duration::from_secs(5))
        .expect("ops_pod reads it");
    assert_eq!(origin.tip.unwrap().as_str(), "2");
}

#[test]
fn a_string_in_a_field_that_names_no_file_never_renames_a_file() {
    let f = fixture();
    let b = f.bundle("b", &V1);
    fs::create_dir(b.join("real")).unwrap();
    fs::rename(b.join("app.aci"), b.join("real/app.aci")).unwrap();
    // pod.json names the image app.aci, a link to real/app.aci; an
    // environment value names another link to it.
    std::os::unix::fs::symlink("real/app.aci", b.join("app.aci")).unwrap();
    std::os::unix::fs::symlink("real/app.aci", b.join("alias")).unwrap();
    let pod: Value = serde_json::from_slice(&fs::read(b.join("pod.json")).unwrap()).unwrap();
    let text = format!(
        "{{\"environment\": {{\"NOTE\": \"alias\"}}, {}",
        &pod.to_string()[1..]
    );
    fs::write(b.join("pod.json"), text).unwrap();
    let result = f.publish(&b, json!({}));
    assert_eq!(result["changed"], json!(true), "{result}");
    let version = f.repo.join("channels/stable/shop/1");
    assert!(version.join("app.aci").is_file());
    assert!(!version.join("alias").exists());
    let record: Value =
        serde_json::from_slice(&fs::read(version.join("release.json")).unwrap()).unwrap();
    assert_eq!(
        record["files"]["app.aci"]["artifact"],
        json!("images/app/1/app.aci")
    );
}

#[test]
fn a_bundle_file_with_a_name_the_release_keeps_for_itself_is_refused() {
    let f = fixture();
    let mut messages = Vec::new();
    for (n, (from, to)) in [
        ("static.tar", "release.json"),
        ("static.tar", "pod.json"),
        ("static.tar", "sha256"),
        ("app.aci", "id"),
    ]
    .into_iter()
    .enumerate()
    {
        let b = f.bundle(&format!("b{n}"), &V1);
        let text = fs::read_to_string(b.join("pod.json")).unwrap();
        if to != "pod.json" {
            fs::rename(b.join(from), b.join(to)).unwrap();
        }
        let key = if from == "app.aci" { "path" } else { "data" };
        let text = text.replace(
            &format!("\"{key}\": \"{from}\""),
            &format!("\"{key}\": \"{to}\""),
        );
        fs::write(b.join("pod.json"), text).unwrap();
        let refused = f.publish(&b, json!({}));
        assert_eq!(refused["failed"], json!(true), "{refused}");
        messages.push(refused["msg"].clone());
    }
    assert!(!f.repo.exists(), "nothing was written");
    insta::assert_json_snapshot!(messages);
}

#[test]
fn bundle_file_names_are_quoted_in_msg_and_actions() {
    let f = fixture();
    let b = f.bundle("b", &V1);
    let odd = "static\n\u{202e}rat.tar";
    fs::rename(b.join("static.tar"), b.join(odd)).unwrap();
    let text = fs::read_to_string(b.join("pod.json")).unwrap().replace(
        "\"data\": \"static.tar\"",
        "\"data\": \"static\\n\u{202e}rat.tar\"",
    );
    fs::write(b.join("pod.json"), text).unwrap();
    let result = f.publish(&b, json!({}));
    assert_eq!(result["changed"], json!(true), "{result}");
    let msg = result["msg"].as_str().unwrap();
    assert!(!msg.contains('\n') && !msg.contains('\u{202e}'), "{msg}");
    assert!(
        msg.contains(r#"("static\n\u{202e}rat.tar", sha256"#),
        "{msg}"
    );
    // A refusal naming the file quotes it too.
    let c = f.bundle("c", &V1);
    fs::write(c.join("app\u{202e}.aci"), "not the image").unwrap();
    let text = fs::read_to_string(c.join("pod.json"))
        .unwrap()
        .replace("\"path\": \"app.aci\"", "\"path\": \"app\u{202e}.aci\"");
    fs::write(c.join("pod.json"), text).unwrap();
    let refused = f.publish(&c, json!({}));
    let msg = refused["msg"].as_str().unwrap();
    assert_eq!(refused["failed"], json!(true), "{refused}");
    assert!(!msg.contains('\u{202e}'), "{msg}");
    assert!(msg.starts_with(r#""app\u{202e}.aci": "#), "{msg}");
}

/// What ops_pod accepts from a bundle deployed directly but a release
/// cannot hold: an image without its id, a unit file by URI (seed 001
/// allows both). Refused, naming the entry, the repository untouched.
#[test]
fn an_image_without_id_or_a_unit_file_by_uri_is_refused() {
    let f = fixture();
    for (case, ops, expected) in [
        (
            "no-id",
            json!({"name": "app", "version": 1,
                   "systemd-units": [{"unit-file": "app.service"}],
                   "images": [{"path": "app.aci"}]}),
            "annotations[0].value.images[0].id: a released image needs its id",
        ),
        (
            "unit-uri",
            json!({"name": "app", "version": 1,
                   "systemd-units": [{"unit-file": "https://user:hunter2@units.example.com/app.service"}]}),
            "unit app.service is given by URI (https://***@units.example.com/app.service); a release holds its unit files",
        ),
    ] {
        let b = f.root.join(case);
        fs::create_dir_all(&b).unwrap();
        fs::write(b.join("app.service"), "[Service]\nExecStart=/bin/true\n").unwrap();
        fs::write(
            b.join("app.aci"),
            tar_of(&[("manifest", br#"{"acKind":"ImageManifest","name":"app"}"#.as_slice())]),
        )
        .unwrap();
        let pod = json!({"acVersion": "0.8.6", "acKind": "PodManifest",
                         "annotations": [{"name": "ops", "value": ops.to_string()}]});
        fs::write(b.join("pod.json"), pod.to_string()).unwrap();
        let refused = f.publish(&b, json!({}));
        assert_eq!(refused["failed"], json!(true), "{case}: {refused}");
        let msg = refused["msg"].as_str().unwrap();
        assert!(msg.contains(expected), "{case}: {msg}");
        assert!(!msg.contains("hunter2"), "{case}: {msg}");
        assert!(!f.repo.exists(), "{case}");
    }
}
