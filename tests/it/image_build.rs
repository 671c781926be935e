//! Whole disk images through the real binary: a Raspberry-Pi-OS-like base served over HTTP
//! on 127.0.0.1 → fetch, unpack, the board's and the image's layers, FAT and ext4 written
//! in-process, the disk assembled, validated, compressed, with checksum, bmap and
//! manifest. Judged by the real tools (sfdisk, fsck.fat, e2fsck, debugfs, mtools,
//! sha256sum, bmaptool) and by `w4b verify`.

#![allow(clippy::disallowed_methods)] // Tests run the image tools and the binary.

use std::path::Path;

use crate::env::TestEnv;
use crate::http::TestServer;
use crate::testbase::{images, sh};

/// blake3 of `edge.img.zst` built from the test base with [`edge_workspace`]. Pinned so
/// that any change to what reaches the image's bytes is a deliberate one.
const EDGE_IMG_ZST_BLAKE3: &str = "41bba9015e858cc0bf2f5ab4003985dae8197086baf22336da1a00655d5522e8";

const LAYER: &str = r##"kind: layer
files:
  - {path: /etc/w4b/hive.conf, content: "hive=edge\n", mode: "0640", owner: "0:0"}
  - {path: /boot/firmware/w4b.txt, content: "on the boot partition\n"}
  - {path: /opt/w4b, dir: true, owner: "1000:1000"}
  - {path: /usr/local/bin/w4b-hello, content: "#!/bin/sh\necho hi\n", mode: "0755"}
"##;

/// A workspace with the repository's boards, a base served by `server`, and
/// `//images:edge` (pi4, the test base, one layer, zstd level 3 to keep tests quick).
fn edge_workspace(server: &TestServer) -> Option<TestEnv> {
    let env = crate::testbase::workspace_with_served_base(server)?;
    env.write("defs/layers/hive.yaml", LAYER);
    env.write(
        "defs/images/edge.yaml",
        "kind: image\nboard: //boards:pi4\nbase: //bases:test\nlayers: [//layers:hive]\noutput: {compression: zstd, level: 3}\n",
    );
    Some(env)
}

fn decompress(env: &TestEnv, name: &str) -> std::path::PathBuf {
    let img = env.root.path().join(format!("{name}.img"));
    sh(&format!(
        "zstd -q -d -f -o '{}' '{}'",
        img.display(),
        env.path(&format!("out/{name}.img.zst")).display()
    ));
    img
}

#[test]
fn a_disk_image_builds_from_a_served_base_and_the_tools_accept_it() {
    let server = TestServer::start();
    let Some(env) = edge_workspace(&server) else {
        return;
    };
    let b = env.build(&["//images:edge"]);
    assert!(b.ok(), "{}", b.stderr());
    for f in [
        "edge.img.zst",
        "edge.img.zst.sha256",
        "edge.bmap",
        "edge.manifest.json",
    ] {
        assert!(env.path(&format!("out/{f}")).exists(), "{f} missing");
    }
    // sha256sum format, checked by sha256sum itself.
    sh(&format!(
        "cd '{}' && sha256sum -c edge.img.zst.sha256",
        env.path("out").display()
    ));

    let img = decompress(&env, "edge");
    let table: serde_json::Value =
        serde_json::from_str(&sh(&format!("sfdisk --json '{}'", img.display()))).unwrap();
    let pt = &table["partitiontable"];
    assert_eq!(pt["label"], "dos");
    assert_eq!(pt["id"], "0x1a2b3c4d", "the base's disk signature is kept");
    assert_eq!(pt["partitions"][0]["start"], 8192);
    assert_eq!(pt["partitions"][0]["type"], "c");
    assert_eq!(pt["partitions"][1]["type"], "83");

    let part = |i: usize| -> std::path::PathBuf {
        let p = &pt["partitions"][i];
        let out = env.root.path().join(format!("p{i}"));
        sh(&format!(
            "dd if='{}' of='{}' bs=512 skip={} count={} status=none",
            img.display(),
            out.display(),
            p["start"],
            p["size"]
        ));
        out
    };
    let (boot, root) = (part(0), part(1));
    sh(&format!("fsck.fat -n '{}'", boot.display()));
    sh(&format!("e2fsck -fn '{}'", root.display()));
    let mtype = |f: &str| {
        sh(&format!(
            "MTOOLS_SKIP_CHECK=1 mtype -i '{}' ::{f}",
            boot.display()
        ))
    };
    assert_eq!(mtype("w4b.txt"), "on the boot partition\n");
    let config = mtype("config.txt");
    assert!(
        config.contains(
            "# Added by w4b for //boards:pi4\n[all]\ndtparam=i2c_arm=on\ndtoverlay=w1-gpio,gpiopin=4\n"
        ),
        "{config}"
    );
    let debugfs = |req: &str| sh(&format!("debugfs -R '{req}' '{}' 2>/dev/null", root.display()));
    assert_eq!(debugfs("cat /etc/w4b/hive.conf"), "hive=edge\n");
    assert_eq!(
        debugfs("cat /etc/modules-load.d/w4b-i2c.conf").lines().last(),
        Some("i2c-dev")
    );
    let stat = debugfs("stat /usr/local/bin/w4b-hello");
    assert!(stat.contains("Mode:  0755"), "{stat}");
    // The layer's boot file is on the boot partition only; the mount point stays empty.
    assert!(!debugfs("ls -l /boot/firmware").contains("w4b.txt"));
    // The base's own files are all still there (fstab, the setuid binary).
    assert!(debugfs("cat /etc/fstab").contains("PARTUUID=1a2b3c4d-02"));

    // The manifest verifies against the artifacts.
    let out = env.run(&[
        "verify",
        "out/edge.manifest.json",
        "--artifact",
        "out/edge.img.zst",
        "--artifact",
        "out/edge.bmap",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    // The image is kept as frames (a chunk index); the manifest still traces it to the
    // step that made it, through its flat digest.
    assert!(text.contains("`edge.img.zst` ok (output of `//"), "{text}");
    let manifest = String::from_utf8(env.read("out/edge.manifest.json")).unwrap();
    assert!(
        manifest.contains(&server.url("/base.img.xz")),
        "the base is a resolved dependency"
    );
    let parsed: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(
        parsed["predicate"]["buildDefinition"]["externalParameters"]["epochSource"],
        serde_json::json!({"kind": "base-release-date", "base": "//bases:test", "date": "2023-11-14", "at": "defs/bases/test.yaml:6:7"})
    );
    for step in [
        "#fetch",
        "#unpack",
        "#graft",
        "#board",
        "#hive",
        "#rootfs",
        "#split",
        "#disk",
        "#compress",
    ] {
        assert!(manifest.contains(step), "manifest lacks {step}");
    }

    // Signed: the same build, nothing runs, the manifest becomes a DSSE envelope.
    let out = env.run(&["keygen", "--out", "release"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let signed = env.build(&["//images:edge", "--sign-key", "release.key"]);
    assert!(signed.ok(), "{}", signed.stderr());
    assert_eq!(signed.finished()["ran"], 0);
    let out = env.run(&[
        "verify",
        "out/edge.manifest.json",
        "--artifact",
        "out/edge.img.zst",
        "--key",
        "release.pub",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    // `--rebuild`: the same definitions rebuild to the manifest's outputs.
    let out = env.run(&["verify", "out/edge.manifest.json", "--rebuild"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    // Regression: a layer edited since the manifest was reported as "not reproducible".
    // The rebuild differs because the definition changed, and the report says exactly
    // that: the file, its digest in the manifest and now (bit 4, not 8).
    let changed = LAYER.replace("hive=edge", "hive=changed");
    env.write("defs/layers/hive.yaml", &changed);
    let out = env.run(&["verify", "out/edge.manifest.json", "--rebuild"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{stdout}");
    assert!(stdout.contains("w4b::verify::definitions_changed"), "{stdout}");
    let line = format!(
        "`defs/layers/hive.yaml`: blake3 {} in the manifest, {} now",
        blake3::hash(LAYER.as_bytes()).to_hex(),
        blake3::hash(changed.as_bytes()).to_hex()
    );
    assert!(stdout.contains(&line), "{line} missing from {stdout}");
    assert!(!stdout.contains("not reproducible"), "{stdout}");
    assert!(
        stdout.contains("`//images:edge#hive` output `changeset`"),
        "{stdout}"
    );
    env.write("defs/layers/hive.yaml", LAYER);

    // bmaptool writes the image back from the bmap and the compressed file.
    if crate::oracle::have("bmaptool") {
        let copy = env.root.path().join("copy.img");
        sh(&format!(
            "bmaptool copy --bmap '{}' '{}' '{}'",
            env.path("out/edge.bmap").display(),
            env.path("out/edge.img.zst").display(),
            copy.display()
        ));
        assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&img).unwrap());
    }

    // Nothing changed: nothing runs, nothing is rewritten.
    let again = env.build(&["//images:edge"]);
    assert!(again.ok(), "{}", again.stderr());
    assert_eq!(again.finished()["ran"], 0, "{:?}", again.ran());

    // One file on the root partition changes: the download, the unpacked base and the boot
    // filesystem are not touched.
    env.write("defs/layers/hive.yaml", &LAYER.replace("hive=edge", "hive=edge2"));
    let one = env.build(&["//images:edge"]);
    assert!(one.ok(), "{}", one.stderr());
    let ran: Vec<String> = one.ran().iter().map(|s| s.replace("//images:edge", "")).collect();
    assert_eq!(
        ran,
        [
            "#compress",
            "#disk",
            "#hive",
            "#rootfs",
            "#rootfs.ext4",
            "#split.bootfs",
            "#split.rootfs",
            "#validate"
        ],
    );
}

/// Freshness of the partition images as chunks: one file changed on the root partition
/// makes `#rootfs.ext4` run and store only the few 1 MiB chunks the stable layout touched
/// (its `fs` is a chunk index), while `#bootfs` (`mkfs-fat`) is cut off.
#[test]
fn a_one_file_change_stores_a_few_new_root_chunks_and_leaves_the_boot_fs_cached() {
    let server = TestServer::start();
    let Some(env) = edge_workspace(&server) else {
        return;
    };
    let (root, boot) = ("//images:edge#rootfs.ext4", "//images:edge#bootfs");
    let first = env.build(&["//images:edge"]);
    assert!(first.ok(), "{}", first.stderr());
    let store = w4b_cache::StoreDir::open(&env.cache).unwrap();
    let index = |b: &crate::env::Build, step: &str| {
        let d: w4b_cache::Digest = b.output(step, "fs").unwrap().parse().unwrap();
        let idx = store.index(&d).unwrap();
        idx.unwrap_or_else(|| panic!("`fs` of {step} is not a chunk index"))
    };
    let (old_root, old_boot) = (index(&first, root), index(&first, boot));
    assert!(old_root.chunks.len() >= 16, "{} chunks", old_root.chunks.len());

    env.write(
        "defs/layers/hive.yaml",
        &LAYER.replace("hive=edge", "hive=edge, changed"),
    );
    let one = env.build(&["//images:edge"]);
    assert!(one.ok(), "{}", one.stderr());
    assert!(one.ran().iter().any(|s| s == root), "{:?}", one.ran());
    assert!(one.cached().iter().any(|s| s == boot), "{:?}", one.ran());
    assert_eq!(index(&one, boot), old_boot);
    let new_root = index(&one, root);
    assert_eq!(new_root.chunks.len(), old_root.chunks.len());
    let changed: Vec<usize> = (0..new_root.chunks.len())
        .filter(|&i| new_root.chunks[i] != old_root.chunks[i])
        .collect();
    assert!(
        (1..=6).contains(&changed.len()),
        "a one-file change rewrote chunks {changed:?} of `#rootfs.ext4`"
    );
    // Every chunk but those is shared with the first build's image, and the new ones are
    // stored (zero chunks never are).
    for &i in &changed {
        let c = new_root.chunks[i];
        assert!(c.is_zero() || store.contains(&c.digest), "chunk {i}");
    }
    // `#validate` ran on the new disk but read only the root filesystem again: the boot
    // filesystem's chunks are the first build's, and so is its summary.
    let note = |b: &crate::env::Build| -> String {
        b.events
            .iter()
            .filter(|e| e["event"] == "step-note" && e["step"] == "//images:edge#validate")
            .filter_map(|e| e["message"].as_str())
            .collect::<Vec<_>>()
            .join("; ")
    };
    assert!(
        note(&first).contains("0 unchanged since a checked disk (summary reused), 2 read"),
        "{}",
        note(&first)
    );
    assert!(
        note(&one).contains("1 unchanged since a checked disk (summary reused), 1 read"),
        "{}",
        note(&one)
    );
}

/// `disk` lists the partition images' chunks after checking they are here: a chunk of
/// `#rootfs.ext4`'s index lost from the store makes `disk` give the input up as
/// unavailable, the engine runs `mkfs-ext4` again (which stores the chunk again), and the
/// image comes out the same.
#[test]
fn a_lost_chunk_of_the_root_image_is_repaired_when_disk_reads_it() {
    let server = TestServer::start();
    let Some(env) = edge_workspace(&server) else {
        return;
    };
    let first = env.build(&["//images:edge"]);
    assert!(first.ok(), "{}", first.stderr());
    let image = env.read("out/edge.img.zst");
    let store = w4b_cache::StoreDir::open(&env.cache).unwrap();
    let digest =
        |step: &str, name: &str| -> w4b_cache::Digest { first.output(step, name).unwrap().parse().unwrap() };
    let fs = digest("//images:edge#rootfs.ext4", "fs");
    let idx = store.index(&fs).unwrap().unwrap();
    let lost = idx.chunks.iter().find(|c| !c.is_zero()).unwrap().digest;
    let blob = |d: &w4b_cache::Digest| {
        let hex = d.to_hex();
        env.cache.join("v1/blobs").join(&hex[..2]).join(&hex)
    };
    std::fs::remove_file(blob(&lost)).unwrap();
    // `disk` must run to read it: its own output (an index) is gone too.
    let disk = digest("//images:edge#disk", "disk").to_hex();
    std::fs::remove_file(env.cache.join("v1/indexes").join(&disk[..2]).join(&disk)).unwrap();
    std::fs::remove_file(env.path("out/edge.img.zst")).unwrap();

    let again = env.build(&["//images:edge"]);
    assert!(again.ok(), "{}", again.stderr());
    let retried: Vec<&str> = again
        .events
        .iter()
        .filter(|e| e["event"] == "step-retrying")
        .filter_map(|e| e["step"].as_str())
        .collect();
    assert_eq!(retried, ["//images:edge#disk"], "{:?}", again.events);
    assert!(
        again.ran().iter().any(|s| s == "//images:edge#rootfs.ext4"),
        "{:?}",
        again.ran()
    );
    assert!(store.contains(&lost), "the chunk is stored again");
    assert_eq!(
        again.output("//images:edge#rootfs.ext4", "fs"),
        first.output("//images:edge#rootfs.ext4", "fs")
    );
    assert!(
        env.read("out/edge.img.zst") == image,
        "the repaired image differs"
    );
}

/// `unpack` stores the base's small files and listings in one pack, a few files in the
/// cache instead of one per file; a damaged chunk of that pack, met when `mkfs-ext4` reads
/// the files again, is found by the files' own digests, quarantined, and repaired by
/// running `unpack` again; the image comes out the same.
#[test]
fn the_base_is_unpacked_into_a_pack_and_a_damaged_pack_chunk_is_repaired() {
    let server = TestServer::start();
    let Some(env) = edge_workspace(&server) else {
        return;
    };
    let first = env.build(&["//images:edge"]);
    assert!(first.ok(), "{}", first.stderr());
    let image = env.read("out/edge.img.zst");
    let store = w4b_cache::StoreDir::open(&env.cache).unwrap();
    let markers: Vec<std::path::PathBuf> = std::fs::read_dir(env.cache.join("v1/packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(markers.len(), 1, "one pack: {markers:?}");
    let table: w4b_cache::Digest = markers[0].file_name().unwrap().to_str().unwrap().parse().unwrap();
    let bytes = store.read(&table).unwrap();
    assert_eq!(&bytes[..8], w4b_cache::PACK_MAGIC);
    let members = u64::from_le_bytes(bytes[40..48].try_into().unwrap());
    assert!(members > 50, "{members} members");
    let stream = w4b_cache::Digest(bytes[8..40].try_into().unwrap());
    let chunk = store.index(&stream).unwrap().unwrap().chunks[0].digest;
    // The root tree's files read back through the pack.
    let rootfs: w4b_cache::Digest = first
        .output("//bases:test#unpack", "rootfs")
        .unwrap()
        .parse()
        .unwrap();
    let loose = |d: &w4b_cache::Digest| env.cache.join("v1/blobs").join(&d.to_hex()[..2]).join(d.to_hex());
    assert!(
        store.contains(&rootfs) && !loose(&rootfs).exists(),
        "the root listing is packed"
    );

    crate::robustness::flip_byte(&loose(&chunk));
    // Make `mkfs-ext4` run and read every file: its output and its chunk memos gone.
    let fs = first.output("//images:edge#rootfs.ext4", "fs").unwrap();
    std::fs::remove_file(env.cache.join("v1/indexes").join(&fs[..2]).join(fs)).unwrap();
    std::fs::remove_dir_all(env.cache.join("v1/memo")).unwrap();
    std::fs::remove_file(env.path("out/edge.img.zst")).unwrap();

    let again = env.build(&["//images:edge"]);
    assert!(again.ok(), "{}", again.stderr());
    assert!(
        again.ran().iter().any(|s| s == "//bases:test#unpack"),
        "unpack repairs the pack: {:?}",
        again.ran()
    );
    assert!(
        again.stderr().contains("warning: quarantined"),
        "{}",
        again.stderr()
    );
    assert_eq!(
        again.output("//images:edge#rootfs.ext4", "fs"),
        first.output("//images:edge#rootfs.ext4", "fs")
    );
    assert!(
        env.read("out/edge.img.zst") == image,
        "the repaired image differs"
    );
}

#[test]
fn the_image_is_byte_identical_across_caches_directories_and_conditions() {
    let server = TestServer::start();
    let Some(env) = edge_workspace(&server) else {
        return;
    };
    let first = env.build(&["//images:edge", "-j", "1"]);
    assert!(first.ok(), "{}", first.stderr());
    let a = env.read("out/edge.img.zst");

    // Another cache, working directory, TZ, locale, umask and thread count.
    let elsewhere = env.root.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let line = format!(
        "umask 077 && exec '{}' --workspace '{}' build //images:edge -j 2 --out '{}'",
        env!("CARGO_BIN_EXE_w4b"),
        env.ws.display(),
        elsewhere.join("out").display()
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &line])
        .current_dir(&elsewhere)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &elsewhere)
        .env("TZ", "Pacific/Chatham")
        .env("LC_ALL", "C.UTF-8")
        .env("W4B_CACHE_DIR", elsewhere.join("cache"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let b = std::fs::read(elsewhere.join("out/edge.img.zst")).unwrap();
    assert!(a == b, "the image differs between the two builds");
    assert_eq!(
        blake3::hash(&a).to_hex().to_string(),
        EDGE_IMG_ZST_BLAKE3,
        "the pinned image digest changed"
    );

    // `--check` does the same by itself and agrees.
    let out = env.run(&["build", "--check", "//images:edge"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("every output identical"), "{stderr}");
}

/// Regression for the disk read unverified by `validate`: a damaged chunk of the disk met
/// while validating is the cache's fault, not the image's. The engine re-runs `disk`
/// (and through it whatever wrote the chunk) and the image comes out byte-identical.
#[test]
fn a_corrupt_disk_chunk_met_by_validate_is_rebuilt_to_the_same_image() {
    let server = TestServer::start();
    let Some(env) = edge_workspace(&server) else {
        return;
    };
    let first = env.build(&["//images:edge"]);
    assert!(first.ok(), "{}", first.stderr());
    let good = env.read("out/edge.img.zst");
    let finished = |b: &crate::env::Build, step: &str| -> serde_json::Value {
        b.events
            .iter()
            .find(|e| e["event"] == "step-finished" && e["step"] == format!("//images:edge#{step}"))
            .unwrap_or_else(|| panic!("no #{step} in the events"))
            .clone()
    };
    let disk = finished(&first, "disk")["outputs"]["disk"].clone();
    let hex = disk["digest"].as_str().unwrap().to_owned();
    let index = std::fs::read(env.cache.join("v1/indexes").join(&hex[..2]).join(&hex)).unwrap();
    let chunks = w4b_cache::ChunkIndex::decode(&index).unwrap().chunks;

    // Damage the chunk holding the partition table and the one holding the root
    // filesystem's superblock: both are read by the checks.
    let img = decompress(&env, "edge");
    let table: serde_json::Value =
        serde_json::from_str(&sh(&format!("sfdisk --json '{}'", img.display()))).unwrap();
    let root_start = table["partitiontable"]["partitions"][1]["start"]
        .as_u64()
        .unwrap()
        * 512;
    for position in [0, root_start / (1 << 20)] {
        let chunk = chunks[position as usize].digest.to_string();
        let path = env.cache.join("v1/blobs").join(&chunk[..2]).join(&chunk);
        crate::robustness::flip_byte(&path);
    }
    // `validate` forgets its result (its record is gone), so it reads the disk again.
    let key = finished(&first, "validate")["key"].as_str().unwrap().to_owned();
    std::fs::remove_dir_all(env.cache.join("v1/records").join(&key[..2]).join(&key)).unwrap();
    std::fs::remove_file(env.path("out/edge.img.zst")).unwrap();

    let again = env.build(&["//images:edge"]);
    assert!(again.ok(), "{}", again.stderr());
    let ran = again.ran();
    assert!(ran.contains(&"//images:edge#validate".to_owned()), "{ran:?}");
    assert!(ran.contains(&"//images:edge#disk".to_owned()), "{ran:?}");
    assert!(
        again
            .events
            .iter()
            .any(|e| e["event"] == "step-retrying" && e["step"] == "//images:edge#validate"),
        "validate did not ask for its input to be repaired"
    );
    assert_eq!(finished(&again, "disk")["outputs"]["disk"], disk);
    assert!(
        env.read("out/edge.img.zst") == good,
        "the repaired build's image differs"
    );
    // The repaired chunks are whole again: the store verifies clean.
    let out = env.run(&["cache", "verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn an_arm64_base_for_a_32_bit_board_is_an_error_naming_both() {
    let server = TestServer::start();
    let Some(env) = edge_workspace(&server) else {
        return;
    };
    env.write("defs/images/zero.yaml", "extends: :edge\nboard: //boards:zero\n");
    let out = env.run(&["build", "//images:zero"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("w4b::compile::arch_mismatch"), "{stderr}");
    assert!(
        stderr.contains("//boards:zero") && stderr.contains("//bases:test"),
        "{stderr}"
    );
    assert!(stderr.contains("defs/images/zero.yaml:2"), "{stderr}");
    assert!(
        server.requests().is_empty(),
        "nothing is downloaded for a plan that cannot work"
    );
}

#[test]
fn a_board_that_boots_gpt_refuses_an_mbr_disk_and_exports_nothing() {
    let server = TestServer::start();
    let Some(env) = edge_workspace(&server) else {
        return;
    };
    env.write("defs/boards/pi4gpt.yaml", "extends: :pi4\npartition_table: gpt\n");
    env.write("defs/images/gpt.yaml", "extends: :edge\nboard: //boards:pi4gpt\n");
    let b = env.build(&["//images:gpt"]);
    assert!(!b.ok());
    let stderr = b.stderr();
    assert!(stderr.contains("w4b::validate::partition_table_kind"), "{stderr}");
    assert!(stderr.contains("partition_table: mbr"), "{stderr}");
    assert!(!env.path("out/gpt.img.zst").exists());
}

#[test]
fn the_embedded_north_hive_locks_and_installs_its_modules_packages_at_build_time() {
    // The repository's workspace as shipped — its hive, image and the modules' package
    // sets with their pinned Debian keys — with the base pointed at a Raspberry-Pi-shaped
    // disk around a real Debian arm64 root, and Debian's URLs mapped to the host's apt
    // mirror. A Debian minbase lacks what Raspberry Pi OS Lite brings (systemd, sshd, sudo): the
    // image's `software.packages` add them, through the `w4b-software` set.
    let Some(base) = crate::packages::shared_debian_base() else {
        return;
    };
    let (Some(debian), Some(security)) = (
        crate::testbase::host_mirror("bookworm"),
        crate::testbase::host_mirror("bookworm-security"),
    ) else {
        crate::oracle::skipped("the host's apt sources name no bookworm and bookworm-security mirror");
        return;
    };
    let server = TestServer::start();
    server.serve("/raspios.img.zst", base.bytes.clone());
    let env = TestEnv::new();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate::env::copy_dir(&repo.join("defs"), &env.ws.join("defs"));
    // The shipped hive image on Raspberry Pi OS: the one line w4b.yaml's comment names.
    let w4b_yaml = std::fs::read_to_string(repo.join("w4b.yaml")).unwrap().replace(
        "hives: {image: //images:w4b-edge}",
        "hives: {image: //images:w4b-edge-raspios}",
    );
    assert!(w4b_yaml.contains("w4b-edge-raspios"), "{w4b_yaml}");
    env.write(
        "w4b.yaml",
        &format!(
            "{w4b_yaml}mirrors:\n  \"http://deb.debian.org/debian/\": [\"{debian}/\"]\n  \"http://deb.debian.org/debian-security/\": [\"{security}/\"]\n"
        ),
    );
    env.write(
        "defs/bases/raspios-bookworm-arm64-lite.yaml",
        &format!(
            "kind: base\nurl: {}\nsha256: {}\narch: arm64\nrelease: bookworm\ndate: 2024-11-19\n",
            server.url("/raspios.img.zst"),
            base.sha256
        ),
    );
    let image = std::fs::read_to_string(env.path("defs/images/w4b-edge-raspios.yaml")).unwrap();
    env.write(
        "defs/images/w4b-edge-raspios.yaml",
        &format!("{image}software: {{packages: [systemd, openssh-server, sudo]}}\n"),
    );

    // No lock yet: the build says what to run, and fetches nothing.
    let b = env.build(&["//hives:north", "--set", "output.level=3"]);
    assert!(!b.ok());
    assert!(b.stderr().contains("w4b::lock::missing"), "{}", b.stderr());
    let out = env.run(&["lock", "//hives:north"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lock = std::fs::read_to_string(env.path("w4b.lock")).unwrap();
    let entry = "//packages:w4b-system + //packages:w4b-monitoring + //packages:w4b-firewall + //packages:w4b-software + //images:w4b-edge-raspios for arm64 on //bases:raspios-bookworm-arm64-lite";
    assert!(lock.contains(entry), "{lock}");
    for name in [
        "\"nftables\"",
        "\"prometheus-node-exporter\"",
        "\"openssh-server\"",
    ] {
        assert!(lock.contains(name), "{name} not locked:\n{lock}");
    }

    let b = env.build(&["//hives:north", "--set", "output.level=3"]);
    assert!(b.ok(), "{}", b.stderr());
    let dir = tempfile::tempdir().unwrap();
    let root = crate::packages::root_partition(&env.path("out/north.img.zst"), dir.path());
    sh(&format!("e2fsck -fn '{}'", root.display()));
    let cat = |p: &str| crate::packages::debugfs_cat(&root, p);
    assert_eq!(cat("/etc/hostname").trim(), "w4b-north001");
    // The packages are installed, by dpkg's own account, with their unit files.
    let status = cat("/var/lib/dpkg/status");
    for name in ["nftables", "prometheus-node-exporter", "openssh-server", "sudo"] {
        let stanza = status
            .split("\n\n")
            .find(|s| s.starts_with(&format!("Package: {name}\n")))
            .unwrap_or_else(|| panic!("{name} is not in the dpkg status"));
        assert!(stanza.contains("Status: install ok installed"), "{stanza}");
    }
    for unit in [
        "nftables.service",
        "prometheus-node-exporter.service",
        "ssh.service",
    ] {
        assert!(
            !cat(&format!("/usr/lib/systemd/system/{unit}")).is_empty(),
            "{unit} missing"
        );
    }
    // The first boot installs nothing.
    let sections = sh(&format!(
        "debugfs -R 'ls -l /usr/local/lib/w4b/firstboot.d' '{}' 2>/dev/null",
        root.display()
    ));
    for name in sections.split_whitespace().filter(|w| w.ends_with(".sh")) {
        let script = cat(&format!("/usr/local/lib/w4b/firstboot.d/{name}"));
        assert!(
            !script.contains("apt-get") && !script.contains("dpkg -i"),
            "{name}:\n{script}"
        );
    }
    assert!(sections.contains("system-locale"), "{sections}");
    // No `security:` in north: the default administrator, key-only (`*` in /etc/shadow).
    assert!(cat("/etc/shadow").contains("\nhiveadmin:*:"));
    // The manifest lists the installed packages.
    let manifest = std::fs::read_to_string(env.path("out/north.manifest.json")).unwrap();
    assert!(manifest.contains("pkg:deb/debian/nftables@"), "{manifest}");
}

#[test]
fn the_old_generators_download_server_and_output_dir_variables_are_honoured() {
    let server = TestServer::start();
    let Some(mut env) = edge_workspace(&server) else {
        return;
    };
    // The base names the real download host; `W4B_DOWNLOAD_SERVER` serves the same path.
    let base = String::from_utf8(env.read("defs/bases/test.yaml")).unwrap();
    let url = server.url("/base.img.xz");
    env.write(
        "defs/bases/test.yaml",
        &base.replace(&url, "https://downloads.raspberrypi.com/base.img.xz"),
    );
    let out_dir = env.root.path().join("images-out");
    env.extra_env
        .insert("W4B_DOWNLOAD_SERVER".into(), server.url("/"));
    env.extra_env
        .insert("W4B_IMAGE_OUTPUT_DIR".into(), out_dir.display().to_string());
    let b = env.build(&["//images:edge"]);
    assert!(b.ok(), "{}", b.stderr());
    assert!(out_dir.join("edge.img.zst").is_file());
    assert!(!env.path("out/edge.img.zst").exists());
    assert_eq!(server.requests_for("/base.img.xz").len(), 1);
}

/// The newest mtime given to one file of the undated base below: the epoch the image
/// must take from the base's bytes.
const BASE_NEWEST: i64 = 1_712_345_678;

/// Issue 9's promised spellings, exactly: a board with only `kind`, `arch` and
/// `config_txt` (no `kernel:`), a base with neither `date:` nor a date in its URL, and no
/// `epoch` anywhere. The image boots Raspberry Pi OS's `kernel8.img`, takes its epoch from
/// the newest mtime in the base's root filesystem (the manifest says so), is accepted by
/// the real tools, the kernel and `w4b validate`, and `--check` proves it reproducible.
#[test]
fn the_promised_spellings_build_a_checked_reproducible_image() {
    use sha2::{Digest as _, Sha256};
    let server = TestServer::start();
    let Some(imgs) = images() else { return };
    let env = crate::env::TestEnv::new();

    // The test base with one file made newer than the rest, in the root partition's bytes.
    let raw = env.root.path().join("undated.img");
    std::fs::copy(&imgs.raw, &raw).unwrap();
    let table: serde_json::Value =
        serde_json::from_str(&sh(&format!("sfdisk --json '{}'", raw.display()))).unwrap();
    let root_part = &table["partitiontable"]["partitions"][1];
    let part = env.root.path().join("undated.p2");
    sh(&format!(
        "dd if='{0}' of='{1}' bs=512 skip={2} count={3} status=none && \
         debugfs -w -R 'sif /etc/hostname mtime @{BASE_NEWEST}' '{1}' 2>/dev/null && \
         dd if='{1}' of='{0}' bs=512 seek={2} conv=notrunc status=none && \
         xz -T1 -1 -f '{0}'",
        raw.display(),
        part.display(),
        root_part["start"],
        root_part["size"]
    ));
    let bytes = std::fs::read(env.root.path().join("undated.img.xz")).unwrap();
    let sha = hex::encode(Sha256::digest(&bytes));
    server.serve("/images/raspios-lite-arm64.img.xz", bytes);

    env.write(
        "defs/bases/plain.yaml",
        &format!(
            "kind: base\nurl: {}\nsha256: {sha}\narch: arm64\n",
            server.url("/images/raspios-lite-arm64.img.xz")
        ),
    );
    env.write(
        "defs/boards/plain.yaml",
        "kind: board\narch: arm64\nconfig_txt: [\"dtoverlay=w1-gpio,gpiopin=4\"]\n",
    );
    env.write("defs/layers/hive.yaml", LAYER);
    env.write(
        "defs/images/edge.yaml",
        "kind: image\nboard: //boards:plain\nbase: //bases:plain\nlayers: [//layers:hive]\noutput: {compression: zstd, level: 3}\n",
    );

    let b = env.build(&["//images:edge"]);
    assert!(b.ok(), "{}", b.stderr());
    assert!(
        b.ran().iter().any(|s| s == "//bases:plain#epoch"),
        "{:?}",
        b.ran()
    );

    // The manifest names the epoch and where it came from.
    let manifest: serde_json::Value = serde_json::from_slice(&env.read("out/edge.manifest.json")).unwrap();
    let params = &manifest["predicate"]["buildDefinition"]["externalParameters"];
    assert_eq!(params["epoch"], BASE_NEWEST, "{params}");
    assert_eq!(
        params["epochSource"],
        serde_json::json!({"kind": "base-content", "base": "//bases:plain"})
    );

    // The real tools accept both filesystems; the layer's files carry the base's epoch.
    let img = decompress(&env, "edge");
    let table: serde_json::Value =
        serde_json::from_str(&sh(&format!("sfdisk --json '{}'", img.display()))).unwrap();
    let pt = &table["partitiontable"]["partitions"];
    let extract = |i: usize| {
        let out = env.root.path().join(format!("edge.p{i}"));
        sh(&format!(
            "dd if='{}' of='{}' bs=512 skip={} count={} status=none",
            img.display(),
            out.display(),
            pt[i]["start"],
            pt[i]["size"]
        ));
        out
    };
    let (boot, root) = (extract(0), extract(1));
    sh(&format!("fsck.fat -n '{}'", boot.display()));
    sh(&format!("e2fsck -fn '{}'", root.display()));
    let stat = sh(&format!(
        "debugfs -R 'stat /etc/w4b/hive.conf' '{}' 2>/dev/null",
        root.display()
    ));
    assert!(
        stat.contains(&format!("mtime: {BASE_NEWEST:#010x}")),
        "the layer's file has the base's epoch: {stat}"
    );
    let config = sh(&format!(
        "MTOOLS_SKIP_CHECK=1 mtype -i '{}' ::config.txt",
        boot.display()
    ));
    assert!(
        config.contains("# Added by w4b for //boards:plain\n[all]\ndtoverlay=w1-gpio,gpiopin=4\n"),
        "{config}"
    );

    // `w4b validate` with the workspace's board: its default kernel is on the boot partition.
    let out = env.run(&["validate", "out/edge.img.zst", "--board", "//boards:plain"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("kernel8.img"), "{stdout}");
    // The kernel's own view agrees with w4b's reader (root and loop devices only).
    if crate::kernel::is_root() && Path::new("/dev/loop-control").exists() {
        let out = env.run(&[
            "validate",
            "out/edge.img.zst",
            "--board",
            "//boards:plain",
            "--mount",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    } else {
        crate::oracle::unavailable(
            "the kernel mount of the promised-spellings image needs root and loop devices",
        );
    }

    let out = env.run(&[
        "verify",
        "out/edge.manifest.json",
        "--artifact",
        "out/edge.img.zst",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("epoch from the newest modification time in `//bases:plain`'s root filesystem"),
        "{stdout}"
    );

    // Reproducible: `--check` rebuilds everything in a scratch cache and compares.
    let out = env.run(&["build", "--check", "//images:edge"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("every output identical"), "{stderr}");

    // `w4b graph` plans without downloading: the epoch is a step of the graph.
    let requests = server.requests().len();
    let out = env.run(&["graph", "//images:edge"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("//bases:plain#epoch"));
    assert_eq!(server.requests().len(), requests);
}
