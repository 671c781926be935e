//! The corpus of hostile inputs in `tests/hostile/` (see its README), each run through the
//! real binary: the expected exit code and diagnostics, and no host file in any output.

#![allow(clippy::disallowed_methods)] // Runs the binary, reads the host's /etc/passwd.

use std::path::Path;

use serde_json::Value;

use crate::env::TestEnv;

const MARKER: &str = "HOST-SECRET-MARKER";

/// Copies `from` into `to` (the corpus holds no symlinks; `case.json` makes them).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    let mut entries: Vec<_> = std::fs::read_dir(from).unwrap().map(|e| e.unwrap()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let ft = e.file_type().unwrap();
        if ft.is_symlink() {
            let _ = std::fs::remove_file(&dst);
            std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
        } else if ft.is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// Every regular file below `dir` (symlinks not followed).
fn files_below(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            files_below(&e.path(), out);
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
}

/// Entries of an uncompressed tar: path → (is symlink, symlink target or contents).
fn tar_entries(path: &Path) -> std::collections::BTreeMap<String, (bool, Vec<u8>)> {
    let mut a = tar::Archive::new(std::fs::File::open(path).unwrap());
    let mut m = std::collections::BTreeMap::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("./")
            .to_owned();
        let link = e.header().entry_type().is_symlink();
        let body = if link {
            e.link_name()
                .unwrap()
                .unwrap()
                .to_string_lossy()
                .as_bytes()
                .to_vec()
        } else {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut v).unwrap();
            v
        };
        m.insert(name, (link, body));
    }
    m
}

fn run_case(dir: &Path) -> Result<(), String> {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let case: Value = serde_json::from_slice(&std::fs::read(dir.join("case.json")).unwrap())
        .map_err(|e| format!("{name}: case.json: {e}"))?;
    let env = TestEnv::new();
    let outside = env.root.path().join("outside");
    if dir.join("outside").is_dir() {
        copy_tree(&dir.join("outside"), &outside);
    }
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), format!("{MARKER}\n")).unwrap();
    if dir.join("ws").is_dir() {
        copy_tree(&dir.join("ws"), &env.ws);
    }
    // Symlinks are made here rather than kept in git: links to `/etc` or `/proc` inside
    // the repository would lead every tool that walks it out of it.
    for (at, target) in case["symlinks"].as_object().into_iter().flatten() {
        let at = env.root.path().join(at);
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target.as_str().unwrap(), &at).unwrap();
    }

    let args: Vec<&str> = case["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let out = env.run(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let want = case["exit"].as_i64().unwrap();
    if i64::from(out.status.code().unwrap_or(-1)) != want {
        return Err(format!(
            "{name}: exit {:?}, expected {want}\n{stderr}",
            out.status.code()
        ));
    }
    for s in case["stderr"].as_array().into_iter().flatten() {
        let s = s.as_str().unwrap();
        if !stderr.contains(s) {
            return Err(format!("{name}: stderr lacks `{s}`\n{stderr}"));
        }
    }
    let tar = env.path("out/x.tar");
    for (key, symlink) in [("tar_files", false), ("tar_symlinks", true)] {
        let Some(want) = case[key].as_object() else {
            continue;
        };
        let entries = tar_entries(&tar);
        for (path, body) in want {
            match entries.get(path) {
                Some((link, got)) if *link == symlink && got == body.as_str().unwrap().as_bytes() => {}
                other => {
                    return Err(format!(
                        "{name}: `{path}` in the tar is {other:?}, expected {body}"
                    ))
                }
            }
        }
    }
    // No host file in any output: not in out/, not in the cache.
    let passwd_line = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|t| t.lines().next().map(str::to_owned))
        .unwrap_or_else(|| MARKER.to_owned());
    let mut files = Vec::new();
    files_below(&env.ws.join("out"), &mut files);
    files_below(&env.cache, &mut files);
    for f in files {
        let bytes = std::fs::read(&f).unwrap_or_default();
        for needle in [MARKER, passwd_line.as_str()] {
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                return Err(format!(
                    "{name}: `{}` holds `{needle}` from the host",
                    f.display()
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn every_hostile_input_in_the_corpus_is_refused_or_contained() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile");
    let mut cases: Vec<_> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.json").is_file())
        .collect();
    cases.sort();
    assert!(cases.len() >= 8, "the corpus shrank: {cases:?}");
    let failures: Vec<String> = cases.iter().filter_map(|c| run_case(c).err()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
