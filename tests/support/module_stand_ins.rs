//! For hive images on a Raspberry Pi OS-like base without dpkg (the tests' base, the
//! benches' realistic base): the W4B modules' package sets asking for nothing (so no lock
//! and no install, and no network), and a layer `//layers:packaged-units` standing in for
//! the unit files those packages ship, which the hive checklist requires. Shared by the
//! integration tests (`tests/it/testbase.rs`) and the fleet bench, which cannot import
//! each other.

/// The definition files, as workspace-relative paths and their contents.
pub fn files() -> Vec<(String, String)> {
    let mut files = Vec::new();
    for name in [
        "w4b-system",
        "w4b-database",
        "w4b-monitoring",
        "w4b-vpn",
        "w4b-firewall",
        "w4b-python",
        "w4b-software",
    ] {
        files.push((
            format!("defs/packages/{name}.yaml"),
            "kind: packages\ndescription: empty for the tests on a base without dpkg\n".to_string(),
        ));
    }
    let mut layer =
        String::from("kind: layer\ndescription: unit files as the modules' packages ship them\nfiles:\n");
    for (unit, exec, wanted_by) in [
        (
            "nftables.service",
            "/usr/sbin/nft -f /etc/nftables.conf",
            "sysinit.target",
        ),
        ("postgresql.service", "/bin/true", "multi-user.target"),
        (
            "prometheus-node-exporter.service",
            "/usr/bin/prometheus-node-exporter",
            "multi-user.target",
        ),
        (
            "wg-quick@.service",
            "/usr/bin/wg-quick up %i",
            "multi-user.target",
        ),
    ] {
        layer.push_str(&format!(
            "  - {{path: /usr/lib/systemd/system/{unit}, content: \"[Service]\\nExecStart={exec}\\n\\n[Install]\\nWantedBy={wanted_by}\\n\"}}\n"
        ));
    }
    files.push(("defs/layers/packaged-units.yaml".to_string(), layer));
    files
}
