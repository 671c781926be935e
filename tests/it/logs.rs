//! Logs a person can use: `-v` names why each step runs (after a change: what changed, in
//! `why`'s words), `-vv` shows the commands a step runs and their output, `--log-file`
//! holds all of it with times, mode 0600 and no secret value, and `-q` prints only errors
//! and the summary.

#![allow(clippy::disallowed_methods)] // Tests run the binary and read file modes.

use std::os::unix::fs::PermissionsExt;

use crate::fixture::demo;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn verbose_names_why_a_step_ran_after_a_change() {
    let env = demo();
    let first = env.run(&["build", "-v", "//images:demo"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let said = stderr(&first);
    // A first build: every step starts, with the engine's miss reason.
    assert!(
        said.contains("//images:demo#motd: start (layer): no record in the local or remote cache"),
        "{said}"
    );
    assert!(said.contains("//images:demo#tar: ran (tar) in "), "{said}");

    env.write(
        "defs/layers/motd.yaml",
        &crate::fixture::MOTD.replace("hello\\n", "hello world\\n"),
    );
    let second = env.run(&["build", "-v", "//images:demo"]);
    assert!(second.status.success(), "{}", stderr(&second));
    let said = stderr(&second);
    assert!(
        said.contains("//images:demo#motd: start (layer): its key changed since the last build"),
        "{said}"
    );
    // What changed, where it is written: the same words `w4b why` uses.
    let changed = said
        .lines()
        .find(|l| l.contains("changed: ") && l.contains("hello world"))
        .unwrap_or_else(|| panic!("no change line names the new content:\n{said}"));
    assert!(changed.contains("defs/layers/motd.yaml:"), "{changed}");
    // Steps the change does not reach are cache hits, and say so.
    assert!(said.contains("cached ("), "{said}");
    // No progress display beside the log lines, and no JSON on stdout.
    assert!(!said.contains("running //"), "{said}");
    assert!(second.stdout.is_empty());
}

#[test]
fn quiet_prints_only_errors_and_the_summary() {
    let env = demo();
    let out = env.run(&["build", "-q", "-v", "//images:demo"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stderr(&out);
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(lines.len(), 1, "{said}");
    assert!(lines[0].contains("5 steps: 5 ran, 0 cached"), "{said}");

    env.write("defs/images/demo.yaml", "kind: image\nnot_a_key: 1\n");
    let out = env.run(&["build", "-q", "//images:demo"]);
    assert!(!out.status.success());
    let said = stderr(&out);
    assert!(said.contains("w4b::"), "errors keep their codes:\n{said}");
}

#[test]
fn json_mode_keeps_stdout_clean_and_logs_on_stderr() {
    let env = demo();
    let b = env.build(&["-v", "//images:demo"]);
    assert!(b.ok(), "{}", b.stderr());
    for line in String::from_utf8_lossy(&b.output.stdout).lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not JSON on stdout: {line}"
        );
    }
    assert!(
        b.stderr().contains("//images:demo#tar: ran (tar)"),
        "{}",
        b.stderr()
    );
}

/// A hive build at `-vv` with `--log-file`: the file holds the step lines with their
/// times, is private, and neither it nor the terminal shows a secret value; a failing
/// build's error, with its code, is in the file too.
#[test]
fn the_log_file_has_everything_is_private_and_holds_no_secret() {
    let server = crate::http::TestServer::start();
    let Some(env) = crate::hive_build::workspace(&server) else {
        return;
    };
    let label = format!("//hives:{}", crate::hive_build::WIFI);
    let log = env.root.path().join("build.log");
    let out = env.run(&["build", "-vv", "--log-file", log.to_str().unwrap(), &label]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&log).unwrap();
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the log file is private");
    assert!(text.contains(&format!("{label}#")), "{text}");
    assert!(text.contains(": start ("), "{text}");
    assert!(text.contains(": ran ("), "{text}");
    let stamped = text
        .lines()
        .all(|l| l.starts_with('[') && l.split_once("] ").is_some());
    assert!(stamped, "every line has its time since the start:\n{text}");

    // A terminal at default verbosity: the file still gets every detail, through the
    // environment variable this time.
    let path = format!("defs/hives/{}.yaml", crate::hive_build::WIFI);
    let hive = String::from_utf8(env.read(&path)).unwrap();
    env.write(&path, &hive.replace("SECRET-wifi-farm", "SECRET-wifi-farm2"));
    let log2 = env.root.path().join("second.log");
    let out2 = env
        .command()
        .env("W4B_LOG_FILE", &log2)
        .args(["build", &label])
        .output()
        .unwrap();
    assert!(out2.status.success(), "{}", stderr(&out2));
    assert!(!stderr(&out2).contains(": start ("), "{}", stderr(&out2));
    let text2 = std::fs::read_to_string(&log2).unwrap();
    assert!(text2.contains("changed: "), "what changed is logged:\n{text2}");

    // An error goes to the file with its code.
    env.write(&path, &hive.replace("priority: 2", "priority: 0"));
    let log3 = env.root.path().join("failed.log");
    let bad = env.run(&["build", "--log-file", log3.to_str().unwrap(), &label]);
    assert!(!bad.status.success());
    let text3 = std::fs::read_to_string(&log3).unwrap();
    assert!(text3.contains("error: [w4b::"), "{text3}");

    for (name, seen) in [
        ("stderr", stderr(&out)),
        ("stdout", String::from_utf8_lossy(&out.stdout).into_owned()),
        ("second stderr", stderr(&out2)),
        ("failed stderr", stderr(&bad)),
        ("log", text),
        ("second log", text2),
        ("failed log", text3),
    ] {
        for s in crate::hive_build::SECRETS.iter().chain(&["SECRET-wifi-farm2"]) {
            assert!(!seen.contains(s), "{name} shows `{s}`:\n{seen}");
        }
    }
}

/// `-vv` on a build that installs packages: the commands dpkg runs (argv, directory, exit
/// status) and what they print, each line prefixed with the step.
#[test]
fn very_verbose_shows_the_commands_a_step_runs_and_their_output() {
    let Some(base) = crate::packages::shared_debian_base() else {
        return;
    };
    let Some(repo) = crate::packages::repository() else {
        return;
    };
    let env = crate::packages::workspace(base, repo.server());
    std::fs::create_dir_all(env.ws.join("keys")).unwrap();
    std::fs::write(env.ws.join("keys/w4b-test.asc"), &repo.key).unwrap();
    env.write(
        "defs/packages/hive.yaml",
        &format!(
            "kind: packages\nrepositories:\n  - {{url: \"{}\", suite: w4b-test, key: ../../keys/w4b-test.asc, fingerprint: \"{}\"}}\npackages: [w4b-hello]\n",
            repo.url(),
            repo.fingerprint
        ),
    );
    // `lock` logs its steps as `build` does: each start with its reason, each end.
    let out = env.run(&["lock", "-v"]);
    let said = stderr(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.lines()
            .any(|l| l.contains(": start (fetch): no record in the local")),
        "no step start in `lock -v`:\n{said}"
    );
    assert!(
        said.lines().any(|l| l.contains(": ran (")),
        "no step end in `lock -v`:\n{said}"
    );
    assert!(
        !said.contains("\nrunning "),
        "progress lines as well as the log:\n{said}"
    );
    let log = env.root.path().join("build.log");
    let out = env.run(&[
        "build",
        "-vv",
        "--log-file",
        log.to_str().unwrap(),
        "//images:edge",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stderr(&out);
    let step = "//images:edge#packages: ";
    let command = said
        .lines()
        .find(|l| l.starts_with(step) && l.contains("| [w4b] $ ") && l.contains("dpkg"))
        .unwrap_or_else(|| panic!("no dpkg command line:\n{said}"));
    assert!(command.contains("(in /)"), "{command}");
    assert!(
        said.lines()
            .any(|l| l.starts_with(step) && l.contains("| Setting up w4b-hello")),
        "dpkg's own output:\n{said}"
    );
    assert!(
        said.lines()
            .any(|l| l.starts_with(step) && l.contains("| [w4b] chroot: exit status: 0")),
        "the exit status:\n{said}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("| Setting up w4b-hello"), "{text}");
}

/// `--log-file` naming something that is not a regular file (`/dev/null`, a pipe to a log
/// collector) writes to it and leaves its mode alone: run as root, the chmod that makes a
/// log file private made `/dev/null` unwritable for every other user. Shown with a FIFO
/// (safe to get wrong), read by a thread so the writer's open does not wait.
#[test]
fn a_log_file_that_is_a_pipe_keeps_its_mode() {
    let env = crate::env::TestEnv::new();
    let fifo = env.root.path().join("collector.fifo");
    let made = std::process::Command::new("mkfifo")
        .args(["-m", "0644"])
        .arg(&fifo)
        .status()
        .expect("mkfifo (coreutils)");
    assert!(made.success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
    };
    let out = env.run(&["--log-file", fifo.to_str().unwrap(), "completions", "bash"]);
    assert!(out.status.success(), "{}", stderr(&out));
    reader.join().unwrap();
    let mode = std::fs::metadata(&fifo).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "the FIFO's mode is its owner's business");
}
