//! The standard demo workspace: two layers (one using every file operation) on a scratch
//! base, written to a `.tar.zst`.

use std::os::unix::fs::PermissionsExt;

use crate::env::TestEnv;

pub const MOTD: &str = r#"kind: layer
files:
  - {path: /etc/motd, content: "hello\n", mode: "0644"}
  - {path: /opt/app, source: files/app}
  - {path: /etc/app.conf, template: files/app.conf.j2}
  - {path: /usr/bin/app-link, symlink: /opt/app/bin/app}
  - {path: /var/lib/app, dir: true, mode: "0750", owner: "1000:1000"}
  - {path: /etc/issue, remove: true}
  - {path: /etc/profile, append: "export A=1\n"}
"#;

pub const EXTRA: &str = "kind: layer\nfiles:\n  - {path: /etc/extra, content: \"x\\n\"}\n";

pub const DEMO: &str = r#"kind: image
base: scratch
layers: [//layers:motd, //layers:extra]
epoch: 1700000000
output: {format: tar}
config: {greeting: hi}
"#;

pub const ALL_STEPS: [&str; 5] = [
    "//images:demo#base",
    "//images:demo#extra",
    "//images:demo#motd",
    "//images:demo#rootfs",
    "//images:demo#tar",
];

pub fn demo() -> TestEnv {
    let env = TestEnv::new();
    env.write("defs/layers/motd.yaml", MOTD);
    env.write("defs/layers/extra.yaml", EXTRA);
    env.write("defs/images/demo.yaml", DEMO);
    let app = env.write("defs/layers/files/app/bin/app", "#!/bin/sh\necho app\n");
    std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.write("defs/layers/files/app/README", "read me\n");
    env.write(
        "defs/layers/files/app.conf.j2",
        "greeting={{ config.greeting }}\n",
    );
    env
}

pub fn steps(names: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}
