//! A throwaway system user with subordinate ids, for the tests that run w4b as an
//! ordinary user (installs through a user namespace): created with `useradd`, given a
//! range in `/etc/subuid` and `/etc/subgid`, and removed with its processes and home
//! when the test ends, pass or fail.

#![allow(clippy::disallowed_methods)] // runs useradd, usermod, userdel, setpriv and pgrep

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::install::run;

/// A throwaway user with 65,536 subordinate ids, removed (with its processes) on drop.
pub(crate) struct ThrowawayUser {
    pub(crate) name: String,
    pub(crate) home: PathBuf,
}

impl ThrowawayUser {
    /// The user `name`, home `/tmp/NAME-home`, subordinate ids `subids` (`FIRST-LAST`).
    /// Each test takes its own name and range: tests run in parallel.
    pub(crate) fn create(name: &str, subids: &str) -> Result<ThrowawayUser, String> {
        let _ = Command::new("userdel").arg(name).output();
        let home = PathBuf::from(format!("/tmp/{name}-home"));
        let _ = fs::remove_dir_all(&home);
        run(Command::new("useradd").args(["-M", "-s", "/bin/sh", name]))?;
        let user = ThrowawayUser {
            name: name.to_owned(),
            home,
        };
        run(Command::new("usermod")
            .args(["--add-subuids", subids, "--add-subgids", subids])
            .arg(name))?;
        fs::create_dir_all(&user.home).map_err(|e| e.to_string())?;
        Ok(user)
    }

    /// `w4b ARGS` as the user, in its home, with an empty environment.
    pub(crate) fn w4b(&self, args: &[&str]) -> Command {
        self.w4b_in(&self.home, &[], args)
    }

    /// `w4b ARGS` as the user, in `dir`, with only `PATH`, `HOME` and `env` set. The binary
    /// is the copy in the user's home (the test's own may sit where the user cannot reach).
    pub(crate) fn w4b_in(&self, dir: &Path, env: &[(&str, &OsStr)], args: &[&str]) -> Command {
        let mut c = Command::new("setpriv");
        c.args(["--reuid", &self.name, "--regid", &self.name, "--init-groups"])
            .arg("env")
            .arg("-i")
            .arg("PATH=/usr/sbin:/usr/bin:/sbin:/bin")
            .arg(format!("HOME={}", self.home.display()));
        for (k, v) in env {
            let mut kv = std::ffi::OsString::from(format!("{k}="));
            kv.push(v);
            c.arg(kv);
        }
        c.arg(self.home.join("w4b")).args(args).current_dir(dir);
        c
    }

    /// Copies the test's `w4b` binary into the home, where [`ThrowawayUser::w4b`] runs it.
    pub(crate) fn copy_w4b(&self) {
        fs::copy(env!("CARGO_BIN_EXE_w4b"), self.home.join("w4b")).unwrap();
    }

    /// Gives the user everything at and under `path` (its home, a workspace, a cache).
    pub(crate) fn chown(&self, path: &Path) {
        run(Command::new("chown")
            .arg("-R")
            .arg(format!("{0}:{0}", self.name))
            .arg(path))
        .unwrap();
    }

    pub(crate) fn chown_home(&self) {
        self.chown(&self.home);
    }

    /// The user's processes, `pgrep -a` style; empty when none is left.
    pub(crate) fn processes(&self) -> String {
        Command::new("pgrep")
            .args(["-a", "-u", &self.name])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for ThrowawayUser {
    fn drop(&mut self) {
        let _ = Command::new("pkill").args(["-KILL", "-u", &self.name]).output();
        let _ = Command::new("userdel").arg(&self.name).output();
        let _ = fs::remove_dir_all(&self.home);
    }
}
