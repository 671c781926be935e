//! The definition loader: the input is one definition file, `defs/fuzz/target.yaml`, in a
//! copy of the repository's workspace (so it can `extends:` real bases, boards, images and
//! layers). Each execution loads it as a command-line target would be — spanned YAML,
//! `${VAR}` substitution, `extends`, `w4b.yaml` defaults, typing — then resolves it as a
//! hive (a hive file in the manager's format, or an image carrying one), and finally
//! opens a second workspace whose `w4b.yaml` is the input.
#![no_main]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use w4b::defs::{Label, Loader, Workspace};

struct Setup {
    _dir: tempfile::TempDir,
    workspace: Workspace,
    target_file: PathBuf,
    config_root: PathBuf,
    env: BTreeMap<String, String>,
    label: Label,
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("a directory");
    for entry in fs::read_dir(from).expect("the repository's defs") {
        let entry = entry.expect("an entry");
        let dest = to.join(entry.file_name());
        if entry.file_type().expect("a type").is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            fs::copy(entry.path(), dest).expect("a copy");
        }
    }
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let dir = tempfile::Builder::new()
            .prefix("w4b-fuzz-defs")
            .tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .expect("a temporary directory");
        let root = dir.path().join("ws");
        copy_tree(&repo.join("defs"), &root.join("defs"));
        fs::copy(repo.join("w4b.yaml"), root.join("w4b.yaml")).expect("w4b.yaml");
        fs::create_dir_all(root.join("defs/fuzz/files")).expect("defs/fuzz");
        fs::write(root.join("defs/fuzz/files/secret.txt"), "a file secret\n").expect("a secret file");
        let config_root = dir.path().join("config");
        fs::create_dir_all(&config_root).expect("a second workspace");
        let env: BTreeMap<String, String> = [
            ("HOME", "/root"),
            ("DL_TOKEN", "token"),
            ("WIFI_PASSWORD", "correct horse battery"),
            ("W4B_EPOCH", "1700000000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let workspace = Workspace::open(&root, &env).expect("the repository's workspace opens");
        Setup {
            target_file: root.join("defs/fuzz/target.yaml"),
            workspace,
            config_root,
            env,
            label: Label::parse("//fuzz:target", None).expect("a label"),
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let s = setup();
    fs::write(&s.target_file, data).expect("the input is written");
    match Loader::new(s.workspace.clone(), s.env.clone(), &[]) {
        Ok(loader) => {
            if let Err(e) = loader.load(&s.label) {
                let _ = w4b_fuzz::render(&e);
            }
            if let Err(e) = w4b::hive::load::resolve(&loader, &s.label) {
                let _ = w4b_fuzz::render(&e);
            }
        }
        Err(e) => panic!("a loader without overrides failed: {e}"),
    }
    fs::write(s.config_root.join("w4b.yaml"), data).expect("the input is written");
    if let Err(e) = Workspace::open(&s.config_root, &s.env) {
        let _ = w4b_fuzz::render(&e);
    }
});
