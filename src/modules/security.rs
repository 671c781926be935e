//! The `security` module: how the hive is reached and what it refuses. It owns the sshd
//! drop-in and SSH's enablement (with no host keys in the image: they are made on the
//! device), the WireGuard tunnel to the hub, the nftables firewall, and the hardening
//! the old generator applied by hand (sysctl, unattended upgrades, password quality,
//! `/tmp` on tmpfs, Bluetooth off unless a sensor needs it).
//!
//! The firewall is the one place that sees every listening port, so it is also where two
//! services configured on one port are refused ([`ModuleError`]) rather than discovered
//! on a hive in a field.
//!
//! Packages this module configures but does not install: `nftables` and `wireguard-tools`
//! come from the package sets `//packages:w4b-firewall` and `//packages:w4b-vpn`,
//! installed at build time (see the software module). Their units are enabled here by
//! symlink; the `security/activate` section starts them on the first boot once their
//! configuration is in place (a no-op when systemd already has).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_json::json;

use super::{Body, GenFile, Generated, Module, ModuleError, Section};
use crate::hive::config::{HiveImage, WireGuard};

/// The hive network's VPN port (REFERENCE §1); the subnet is the fleet's
/// ([`WireGuard::subnet`], `hives.vpn.subnet` of `w4b.yaml`).
pub const VPN_PORT: u16 = 51820;

const SSHD_DROPIN: &str = "/etc/ssh/sshd_config.d/10-w4b.conf";
const WG_CONF: &str = "/etc/wireguard/wg0.conf";
/// The tunnel's unit, an instance of `wg-quick@.service`.
pub const WG_UNIT: &str = "wg-quick@wg0.service";
const UNITS: &str = "/etc/systemd/system";

/// Sensor kinds that talk Bluetooth LE (they keep the radio on).
const BLUETOOTH_KINDS: [&str; 4] = ["ble", "bluetooth", "ruuvi", "xiaomi"];

/// SSH, WireGuard, firewall, hardening.
pub struct Security;

/// What this module reads, resolved (hive values over image defaults).
struct Plan<'a> {
    ssh_enabled: bool,
    ssh_port: u16,
    password_auth: bool,
    allow_root: bool,
    vpn: Option<&'a WireGuard>,
    firewall: bool,
    allow_ports: Vec<u16>,
    /// Other listeners, by port: which service (for clash checks).
    services: Vec<(u16, &'static str)>,
    auto_update: bool,
    update_hour: u8,
    bluetooth_needed: bool,
}

fn plan(cfg: &HiveImage) -> Plan<'_> {
    let s = &cfg.settings;
    let hs = cfg.hive.security.as_ref();
    let mut services = Vec::new();
    if s.monitoring.enabled {
        services.push((s.monitoring.node_exporter_port, "node exporter"));
    }
    if s.sensor_manager.enabled {
        services.push((s.sensor_manager.metrics_port, "sensor manager metrics"));
    }
    Plan {
        ssh_enabled: s.system.ssh_enabled,
        ssh_port: hs.map_or(s.system.ssh_port, |h| h.ssh.port),
        password_auth: hs.map_or(s.system.ssh_password_auth, |h| h.ssh.enable_password_auth),
        allow_root: hs.is_some_and(|h| h.ssh.allow_root),
        vpn: hs.filter(|_| s.vpn_enabled).map(|h| &h.wireguard),
        firewall: s.firewall.enabled,
        allow_ports: s.firewall.allow_ports.clone(),
        services,
        auto_update: cfg.hive.maintenance.updates.auto_update,
        update_hour: cfg.hive.maintenance.updates.update_hour,
        bluetooth_needed: cfg.hive.sensors.iter().any(|x| {
            let kind = x.kind.to_ascii_lowercase();
            x.enabled && BLUETOOTH_KINDS.iter().any(|k| kind.starts_with(k))
        }),
    }
}

impl Module for Security {
    fn name(&self) -> &'static str {
        "security"
    }

    fn version(&self) -> u32 {
        2
    }

    fn inputs<'a>(&self, cfg: &'a HiveImage) -> Result<crate::modules::Inputs<'a>, ModuleError> {
        let p = plan(cfg);
        let value = json!({
            "ssh": {"enabled": p.ssh_enabled, "port": p.ssh_port,
                    "password_auth": p.password_auth, "allow_root": p.allow_root},
            "vpn": p.vpn,
            "firewall": {"enabled": p.firewall, "allow_ports": p.allow_ports},
            "services": p.services,
            "updates": {"auto_update": p.auto_update, "update_hour": p.update_hour},
            "bluetooth_needed": p.bluetooth_needed,
        });
        let mut secrets = Vec::new();
        if let Some(wg) = p.vpn {
            match &wg.config {
                Some(c) => secrets.push(c),
                None => secrets.push(&wg.private_key),
            }
        }
        Ok((value, secrets))
    }

    fn generate(&self, cfg: &HiveImage) -> Result<Generated, ModuleError> {
        let p = plan(cfg);
        let mut g = Generated::default();
        check_ports(&p)?;
        ssh(&p, &mut g)?;
        if let Some(wg) = p.vpn {
            wireguard(wg, &mut g)?;
        }
        if p.firewall {
            let rules = nftables(&p)?;
            g.files.push(GenFile::file("/etc/nftables.conf", rules, 0o755));
            enable(&mut g, "sysinit.target", "nftables.service", true);
        }
        hardening(&p, &mut g);
        g.sections.push(Section {
            order: 90,
            name: "security/activate".into(),
            script: ACTIVATE_SCRIPT.into(),
        });
        Ok(g)
    }
}

fn error(message: impl Into<String>, help: impl Into<Option<String>>) -> ModuleError {
    ModuleError {
        module: "security",
        message: message.into(),
        help: help.into(),
    }
}

/// `<target>.wants/<unit>` → the unit file (packaged under `/lib`, or ours under `/etc`).
fn enable(g: &mut Generated, target: &str, unit: &str, packaged: bool) {
    let file = match unit.split_once('@') {
        // `wg-quick@wg0.service` is an instance of `wg-quick@.service`.
        Some((base, rest)) => format!("{base}@{}", &rest[rest.find('.').unwrap_or(rest.len())..]),
        None => unit.to_owned(),
    };
    let dir = if packaged { "/lib/systemd/system" } else { UNITS };
    g.files.push(GenFile::symlink(
        &format!("{UNITS}/{target}.wants/{unit}"),
        &format!("{dir}/{file}"),
    ));
}

fn mask(g: &mut Generated, unit: &str) {
    g.files
        .push(GenFile::symlink(&format!("{UNITS}/{unit}"), "/dev/null"));
}

fn ssh(p: &Plan<'_>, g: &mut Generated) -> Result<(), ModuleError> {
    if p.ssh_port == 0 {
        return Err(error(
            "the SSH port is 0",
            Some("use a port from 1 to 65535".to_owned()),
        ));
    }
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    // sshd keeps the first value it reads for each keyword and includes
    // `sshd_config.d/*.conf` at the top of `sshd_config`, so `10-` wins over the base
    // file and over later drop-ins.
    let conf = format!(
        "# Generated by w4b: the hive's SSH policy.\n\
         Port {port}\n\
         PermitRootLogin {root}\n\
         PasswordAuthentication {pw}\n\
         KbdInteractiveAuthentication no\n\
         PermitEmptyPasswords no\n\
         PubkeyAuthentication yes\n\
         X11Forwarding no\n\
         MaxAuthTries 3\n\
         LoginGraceTime 30\n\
         ClientAliveInterval 300\n\
         ClientAliveCountMax 2\n",
        port = p.ssh_port,
        root = if p.allow_root { "prohibit-password" } else { "no" },
        pw = yes_no(p.password_auth),
    );
    g.files.push(GenFile::file(SSHD_DROPIN, conf, 0o644));

    // No host keys in the image: every hive makes its own. The `ExecStartPre` makes them
    // before sshd's own config test on every start (so SSH works even before the
    // first-boot script has run); the section below logs their fingerprints.
    for kind in ["rsa", "ecdsa", "ed25519", "dsa"] {
        for suffix in ["", ".pub"] {
            let path = format!("/etc/ssh/ssh_host_{kind}_key{suffix}");
            g.files.push(GenFile::owned(&path, Body::Remove, 0o600, 0, 0));
        }
    }
    g.files.push(GenFile::file(
        &format!("{UNITS}/ssh.service.d/10-w4b-host-keys.conf"),
        "# Generated by w4b: host keys are made on the device, never shipped.\n[Service]\nExecStartPre=/usr/bin/ssh-keygen -A\n",
        0o644,
    ));
    g.sections.push(Section {
        order: 20,
        name: "security/ssh-host-keys".into(),
        script: "\
ssh-keygen -A
for key in /etc/ssh/ssh_host_*_key.pub; do
    if [ -f \"$key\" ]; then
        ssh-keygen -l -f \"$key\"
    fi
done
"
        .into(),
    });

    let wants = format!("{UNITS}/multi-user.target.wants/ssh.service");
    if p.ssh_enabled {
        enable(g, "multi-user.target", "ssh.service", true);
        // What `systemctl enable ssh` also makes: the `sshd.service` alias.
        g.files.push(GenFile::symlink(
            &format!("{UNITS}/sshd.service"),
            "/lib/systemd/system/ssh.service",
        ));
    } else {
        g.files.push(GenFile::owned(&wants, Body::Remove, 0o644, 0, 0));
        g.files.push(GenFile::owned(
            &format!("{UNITS}/sshd.service"),
            Body::Remove,
            0o644,
            0,
            0,
        ));
    }
    Ok(())
}

/// A key for `wg0.conf`: base64 on one line. (Real keys are 44 characters, 32 bytes;
/// the length is not enforced because the manager's test fixtures use 45-character
/// stand-ins. What matters here is that a key cannot add a line to the file.)
fn base64_key(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c))
}

fn wireguard(wg: &WireGuard, g: &mut Generated) -> Result<(), ModuleError> {
    let text = match &wg.config {
        Some(full) => {
            let mut t = full.expose().to_owned();
            if !t.contains("[Interface]") {
                return Err(error(
                    format!("`{}` has no `[Interface]` section", full.name),
                    Some(
                        "give a complete wg0.conf, or leave `config` out to build it from its parts"
                            .to_owned(),
                    ),
                ));
            }
            if !t.ends_with('\n') {
                t.push('\n');
            }
            t
        }
        None => {
            let peer = wg.peer_public_key.as_deref().ok_or_else(|| {
                error(
                    "WireGuard needs the hub's public key (`security.wireguard.peer_public_key`) or a full `config`",
                    Some("add the hub's key, or set `vpn.enabled: false` for an image without VPN".to_owned()),
                )
            })?;
            if !base64_key(peer) {
                return Err(error(
                    format!("hub public key `{peer}` is not a WireGuard key (base64)"),
                    None,
                ));
            }
            if !base64_key(wg.private_key.expose()) {
                return Err(error(
                    format!("`{}` is not a WireGuard key (base64)", wg.private_key.name),
                    None,
                ));
            }
            let ok_ip = wg.client_ip.split_once('/').is_some_and(|(ip, pfx)| {
                ip.parse::<Ipv4Addr>().is_ok() && pfx.parse::<u8>().is_ok_and(|p| p <= 32)
            });
            if !ok_ip {
                return Err(error(
                    format!("WireGuard `client_ip` `{}` is not an IPv4 CIDR", wg.client_ip),
                    Some("hives use `10.10.0.N/32`".to_owned()),
                ));
            }
            let ep_ok = wg.endpoint.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty()
                    && !host.contains(char::is_whitespace)
                    && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !ep_ok {
                return Err(error(
                    format!("WireGuard endpoint `{}` is not `host:port`", wg.endpoint),
                    Some(format!("for example `hub.example.org:{VPN_PORT}`")),
                ));
            }
            format!(
                "# Generated by w4b: the tunnel to the hive network's hub.\n[Interface]\nAddress = {addr}\nPrivateKey = {key}\n\n\
                 [Peer]\nPublicKey = {peer}\nEndpoint = {ep}\nAllowedIPs = {subnet}\nPersistentKeepalive = 25\n",
                addr = wg.client_ip,
                key = wg.private_key.expose(),
                ep = wg.endpoint,
                subnet = wg.subnet,
            )
        }
    };
    g.files.push(GenFile::dir("/etc/wireguard", 0o700));
    g.files.push(GenFile::file(WG_CONF, text, 0o600));
    enable(g, "multi-user.target", WG_UNIT, true);
    Ok(())
}

/// No two services on one port, whether or not the firewall is on.
fn check_ports(p: &Plan<'_>) -> Result<(), ModuleError> {
    let mut owners: BTreeMap<u16, &str> = BTreeMap::new();
    let mut claim = |port: u16, who: &'static str| -> Result<(), ModuleError> {
        match owners.insert(port, who) {
            Some(other) if other != who => Err(error(
                format!("port {port} is configured for both {other} and {who}"),
                Some("give each service its own port (node exporter 9100, sensor manager metrics 9101, SSH 22)".to_owned()),
            )),
            _ => Ok(()),
        }
    };
    if p.ssh_enabled {
        claim(p.ssh_port, "SSH")?;
    }
    for &(port, who) in &p.services {
        claim(port, who)?;
    }
    Ok(())
}

/// The ruleset.
fn nftables(p: &Plan<'_>) -> Result<String, ModuleError> {
    if let Some(bad) = p.allow_ports.iter().find(|&&x| x == 0) {
        return Err(error(
            format!("`firewall.allow_ports` lists port {bad}"),
            Some("ports are 1 to 65535".to_owned()),
        ));
    }
    let mut tcp: Vec<u16> = p.allow_ports.clone();
    if p.ssh_enabled {
        tcp.push(p.ssh_port);
    }
    tcp.sort_unstable();
    tcp.dedup();

    let mut r = String::from(
        "#!/usr/sbin/nft -f\n# Generated by w4b: default-deny inbound, nothing forwarded.\n\nflush ruleset\n\n\
         table inet w4b {\n\
         \tchain input {\n\
         \t\ttype filter hook input priority filter; policy drop;\n\
         \t\tiif \"lo\" accept\n\
         \t\tct state established,related accept\n\
         \t\tct state invalid drop\n\
         \t\tmeta l4proto icmp accept\n\
         \t\tmeta l4proto ipv6-icmp accept\n\
         \t\tudp dport 546 ip6 saddr fe80::/10 accept comment \"DHCPv6 replies\"\n",
    );
    if let Some(wg) = p.vpn {
        r.push_str(&format!(
            "\t\tiifname \"wg0\" ip saddr {} accept comment \"the hive network\"\n",
            wg.subnet
        ));
        r.push_str(&format!(
            "\t\tudp dport {VPN_PORT} accept comment \"WireGuard\"\n"
        ));
    }
    if !tcp.is_empty() {
        let list: Vec<String> = tcp.iter().map(u16::to_string).collect();
        r.push_str(&format!("\t\ttcp dport {{ {} }} accept\n", list.join(", ")));
    }
    r.push_str(
        "\t}\n\n\
         \tchain forward {\n\t\ttype filter hook forward priority filter; policy drop;\n\t}\n\n\
         \tchain output {\n\t\ttype filter hook output priority filter; policy accept;\n\t}\n\
         }\n",
    );
    Ok(r)
}

fn hardening(p: &Plan<'_>, g: &mut Generated) {
    g.files.push(GenFile::file(
        "/etc/sysctl.d/90-w4b.conf",
        "# Generated by w4b: network and kernel hardening.\n\
         net.ipv4.conf.all.rp_filter = 1\n\
         net.ipv4.conf.default.rp_filter = 1\n\
         net.ipv4.conf.all.accept_redirects = 0\n\
         net.ipv4.conf.default.accept_redirects = 0\n\
         net.ipv4.conf.all.secure_redirects = 0\n\
         net.ipv4.conf.default.secure_redirects = 0\n\
         net.ipv4.conf.all.send_redirects = 0\n\
         net.ipv4.conf.default.send_redirects = 0\n\
         net.ipv6.conf.all.accept_redirects = 0\n\
         net.ipv6.conf.default.accept_redirects = 0\n\
         net.ipv4.conf.all.accept_source_route = 0\n\
         net.ipv4.conf.default.accept_source_route = 0\n\
         net.ipv6.conf.all.accept_source_route = 0\n\
         net.ipv6.conf.default.accept_source_route = 0\n\
         net.ipv4.conf.all.log_martians = 1\n\
         net.ipv4.icmp_echo_ignore_broadcasts = 1\n\
         net.ipv4.icmp_ignore_bogus_error_responses = 1\n\
         net.ipv4.tcp_syncookies = 1\n\
         net.ipv4.ip_forward = 0\n\
         kernel.kptr_restrict = 2\n\
         kernel.dmesg_restrict = 1\n\
         fs.protected_hardlinks = 1\n\
         fs.protected_symlinks = 1\n",
        0o644,
    ));

    if p.auto_update {
        g.files.push(GenFile::file(
            "/etc/apt/apt.conf.d/20auto-upgrades",
            "// Generated by w4b.\nAPT::Periodic::Update-Package-Lists \"1\";\nAPT::Periodic::Unattended-Upgrade \"1\";\nAPT::Periodic::AutocleanInterval \"7\";\n",
            0o644,
        ));
        // A file of our own after the package's `50unattended-upgrades` (a dpkg conffile:
        // writing it before the package is installed would stop the install at a
        // conffile question). `#clear` replaces the package's origin list.
        g.files.push(GenFile::file(
            "/etc/apt/apt.conf.d/52w4b-unattended-upgrades",
            format!(
                "// Generated by w4b: security and point-release updates from Debian and Raspberry Pi.\n\
                 #clear Unattended-Upgrade::Origins-Pattern;\n\
                 Unattended-Upgrade::Origins-Pattern {{\n\
                 \t\"origin=Debian,codename=${{distro_codename}},label=Debian\";\n\
                 \t\"origin=Debian,codename=${{distro_codename}}-security,label=Debian-Security\";\n\
                 \t\"origin=Debian,codename=${{distro_codename}}-updates\";\n\
                 \t\"origin=Raspbian,codename=${{distro_codename}},label=Raspbian\";\n\
                 \t\"origin=Raspberry Pi Foundation,codename=${{distro_codename}},label=Raspberry Pi Foundation\";\n\
                 }};\n\
                 Unattended-Upgrade::Remove-Unused-Dependencies \"true\";\n\
                 Unattended-Upgrade::Automatic-Reboot \"true\";\n\
                 Unattended-Upgrade::Automatic-Reboot-Time \"{:02}:00\";\n",
                p.update_hour
            ),
            0o644,
        ));
    }

    g.files.push(GenFile::file(
        "/etc/security/pwquality.conf.d/w4b.conf",
        "# Generated by w4b: local passwords (the administrator's is generated, 16 characters).\n\
         minlen = 12\nminclass = 3\nmaxrepeat = 3\ndictcheck = 1\nusercheck = 1\nenforce_for_root\n",
        0o644,
    ));

    // `/tmp` on tmpfs by a mount unit of our own rather than an `/etc/fstab` line: the
    // disk step rewrites fstab's PARTUUIDs, and a unit can be checked by
    // `systemd-analyze verify`. (Debian ships the same unit in /usr/share/systemd.)
    g.files.push(GenFile::file(
        &format!("{UNITS}/tmp.mount"),
        "# Generated by w4b: /tmp in memory (less SD-card wear, nothing survives a reboot).\n\
         [Unit]\nDescription=Temporary Directory /tmp\nConditionPathIsSymbolicLink=!/tmp\nDefaultDependencies=no\n\
         Conflicts=umount.target\nBefore=local-fs.target umount.target\nAfter=swap.target\n\n\
         [Mount]\nWhat=tmpfs\nWhere=/tmp\nType=tmpfs\nOptions=mode=1777,strictatime,nosuid,nodev,size=25%,nr_inodes=400k\n\n\
         [Install]\nWantedBy=local-fs.target\n",
        0o644,
    ));
    enable(g, "local-fs.target", "tmp.mount", false);

    if !p.bluetooth_needed {
        g.files.push(GenFile::owned(
            "/boot/firmware/config.txt",
            Body::Append(b"\n# w4b: no sensor uses Bluetooth; the UART goes back to the header.\n[all]\ndtoverlay=disable-bt\n".to_vec()),
            0o644,
            0,
            0,
        ));
        mask(g, "hciuart.service");
        mask(g, "bluetooth.service");
    }
}

/// Starts the firewall and the tunnel on the first boot, after the sections that complete
/// their configuration. Idempotent: each start is a no-op when already running.
const ACTIVATE_SCRIPT: &str = r#"systemctl daemon-reload
if [ -f /etc/nftables.conf ] && command -v nft >/dev/null; then
    systemctl start nftables.service
    echo "firewall loaded"
fi
if [ -f /etc/wireguard/wg0.conf ] && command -v wg-quick >/dev/null; then
    systemctl start wg-quick@wg0.service
    echo "WireGuard up"
fi
"#;

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // nft, sshd, systemd-analyze and sh are the oracles.
mod tests {
    use std::process::Command;

    use crate::hive::config::Secret;

    use super::*;
    use crate::modules::testing::{lan_hive, lookup as find, render, text, wifi_hive};

    fn no_vpn(mut cfg: HiveImage) -> HiveImage {
        cfg.settings.vpn_enabled = false;
        cfg
    }

    #[test]
    fn snapshot_wifi_hive() {
        let g = Security.generate(&wifi_hive()).expect("generates");
        insta::assert_snapshot!("security_wifi", render(&g));
    }

    #[test]
    fn snapshot_lan_hive() {
        let g = Security.generate(&lan_hive()).expect("generates");
        insta::assert_snapshot!("security_lan", render(&g));
    }

    #[test]
    fn wireguard_is_secret_and_enabled() {
        let g = Security.generate(&wifi_hive()).expect("generates");
        let conf = find(&g, WG_CONF).expect("wg0.conf");
        assert_eq!((conf.mode, conf.uid, conf.gid), (0o600, 0, 0));
        assert_eq!(find(&g, "/etc/wireguard").map(|f| f.mode), Some(0o700));
        let t = text(&g, WG_CONF);
        for want in [
            "Address = 10.10.0.2/32",
            "PrivateKey = SECRETwgPrivateKeyFixture",
            "PublicKey = hubPublicKeyFixture",
            "Endpoint = hub.example.org:51820",
            "AllowedIPs = 10.10.0.0/24",
            "PersistentKeepalive = 25",
        ] {
            assert!(t.contains(want), "{want} missing in\n{t}");
        }
        assert_eq!(
            find(
                &g,
                "/etc/systemd/system/multi-user.target.wants/wg-quick@wg0.service"
            )
            .map(|f| &f.body),
            Some(&Body::Symlink("/lib/systemd/system/wg-quick@.service".into()))
        );
    }

    #[test]
    fn the_fleets_subnet_is_routed_and_trusted_and_keys_only_a_non_default_one() {
        let default_key = Security.inputs(&wifi_hive()).expect("inputs").0;
        assert!(!default_key.to_string().contains("subnet"), "{default_key}");
        let mut cfg = wifi_hive();
        if let Some(s) = cfg.hive.security.as_mut() {
            s.wireguard.subnet = "10.20.0.0/23".into();
            s.wireguard.client_ip = "10.20.1.7/32".into();
        }
        let key = Security.inputs(&cfg).expect("inputs").0;
        assert_eq!(key["vpn"]["subnet"], "10.20.0.0/23");
        let g = Security.generate(&cfg).expect("generates");
        assert!(text(&g, WG_CONF).contains("AllowedIPs = 10.20.0.0/23\n"));
        assert!(text(&g, "/etc/nftables.conf").contains("iifname \"wg0\" ip saddr 10.20.0.0/23 accept"));
    }

    #[test]
    fn a_full_wireguard_config_is_used_verbatim_and_is_the_secret_read() {
        let mut cfg = wifi_hive();
        let full = "[Interface]\nAddress = 10.10.0.9/32\nPrivateKey = SECRETfull\n\n[Peer]\nPublicKey = x\nAllowedIPs = 10.10.0.0/24";
        if let Some(s) = cfg.hive.security.as_mut() {
            s.wireguard.config = Some(Secret::new("security.wireguard.config", full));
        }
        let g = Security.generate(&cfg).expect("generates");
        assert_eq!(text(&g, WG_CONF), format!("{full}\n"));
        let names = crate::modules::secret_names(&Security.inputs(&cfg).expect("inputs").1);
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            ["security.wireguard.config"]
        );
    }

    #[test]
    fn a_vpn_less_image_builds_without_wireguard() {
        for cfg in [no_vpn(wifi_hive()), {
            let mut c = lan_hive();
            c.hive.security = None;
            c
        }] {
            let g = Security.generate(&cfg).expect("generates without a VPN");
            assert!(
                !g.files
                    .iter()
                    .any(|f| f.path.to_string().contains("wireguard")
                        || f.path.to_string().contains("wg-quick"))
            );
            let rules = text(&g, "/etc/nftables.conf");
            assert!(!rules.contains("wg0") && !rules.contains("51820"), "{rules}");
            assert!(
                Security.inputs(&cfg).expect("inputs").1.is_empty(),
                "no secret is read"
            );
        }
    }

    #[test]
    fn firewall_is_default_deny_with_the_configured_openings() {
        let mut cfg = wifi_hive();
        cfg.settings.firewall.allow_ports = vec![22, 8080];
        let g = Security.generate(&cfg).expect("generates");
        let rules = text(&g, "/etc/nftables.conf");
        assert!(rules.contains("hook input priority filter; policy drop;"));
        assert!(rules.contains("hook forward priority filter; policy drop;"));
        assert!(rules.contains("hook output priority filter; policy accept;"));
        assert!(rules.contains("tcp dport { 22, 8080 } accept"), "{rules}");
        assert!(rules.contains("iifname \"wg0\" ip saddr 10.10.0.0/24 accept"));
        assert!(rules.contains("udp dport 51820 accept"));
        assert!(find(&g, "/etc/systemd/system/sysinit.target.wants/nftables.service").is_some());
    }

    #[test]
    fn nft_accepts_the_ruleset() {
        let g = Security.generate(&wifi_hive()).expect("generates");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nftables.conf");
        std::fs::write(&path, text(&g, "/etc/nftables.conf")).expect("write");
        crate::oracle::require!("nft");
        let out = Command::new("nft")
            .arg("-c")
            .arg("-f")
            .arg(&path)
            .output()
            .expect("nft runs");
        let err = String::from_utf8_lossy(&out.stderr);
        // Without CAP_NET_ADMIN, `nft -c` cannot open its netlink socket: that is the
        // sandbox, not the ruleset (CI runs as root, where this must not happen).
        if !out.status.success() && (err.contains("Operation not permitted") || err.contains("netlink")) {
            crate::oracle::unavailable(&format!("`nft -c` needs CAP_NET_ADMIN: {err}"));
            return;
        }
        assert!(out.status.success(), "nft rejects the ruleset: {err}");
    }

    #[test]
    fn sshd_accepts_the_drop_in() {
        let g = Security.generate(&wifi_hive()).expect("generates");
        crate::oracle::require!("/usr/sbin/sshd", "ssh-keygen");
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("sshd_config");
        let key = dir.path().join("hostkey");
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status();
        assert!(made.is_ok_and(|s| s.success()), "ssh-keygen makes a host key");
        let text = format!("{}HostKey {}\n", text(&g, SSHD_DROPIN), key.display());
        std::fs::write(&conf, text).expect("write");
        let out = Command::new("/usr/sbin/sshd")
            .arg("-t")
            .arg("-f")
            .arg(&conf)
            .output()
            .expect("sshd runs");
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("Missing privilege separation directory") {
            // Debian creates it when the service starts; CI's .ci/install-deps makes it.
            crate::oracle::unavailable(&format!("`sshd -t` cannot run here: {err}"));
            return;
        }
        assert!(out.status.success(), "sshd -t: {err}");
    }

    #[test]
    fn ssh_policy_follows_the_hive() {
        let g = Security.generate(&wifi_hive()).expect("generates");
        let conf = text(&g, SSHD_DROPIN);
        for want in [
            "Port 22\n",
            "PermitRootLogin no\n",
            "PasswordAuthentication no\n",
            "KbdInteractiveAuthentication no\n",
            "X11Forwarding no\n",
            "MaxAuthTries 3\n",
        ] {
            assert!(conf.contains(want), "{want} in\n{conf}");
        }
        let mut cfg = wifi_hive();
        if let Some(s) = cfg.hive.security.as_mut() {
            s.ssh.port = 2222;
            s.ssh.allow_root = true;
            s.ssh.enable_password_auth = true;
        }
        let g = Security.generate(&cfg).expect("generates");
        let conf = text(&g, SSHD_DROPIN);
        assert!(
            conf.contains("Port 2222\nPermitRootLogin prohibit-password\nPasswordAuthentication yes\n"),
            "{conf}"
        );
        assert!(text(&g, "/etc/nftables.conf").contains("tcp dport { 22, 2222 } accept"));
        // No host keys ship; they are made on the device.
        assert_eq!(
            find(&g, "/etc/ssh/ssh_host_ed25519_key").map(|f| &f.body),
            Some(&Body::Remove)
        );
        assert!(g
            .sections
            .iter()
            .any(|s| s.name == "security/ssh-host-keys" && s.script.contains("ssh-keygen -A")));
        assert_eq!(
            find(&g, "/etc/systemd/system/multi-user.target.wants/ssh.service").map(|f| &f.body),
            Some(&Body::Symlink("/lib/systemd/system/ssh.service".into()))
        );
    }

    #[test]
    fn two_services_on_one_port_are_refused() {
        let mut cfg = wifi_hive();
        cfg.settings.monitoring.node_exporter_port = 22;
        let err = Security.generate(&cfg).expect_err("clash");
        assert!(
            err.message.contains("port 22")
                && err.message.contains("SSH")
                && err.message.contains("node exporter"),
            "{err}"
        );
        let mut cfg = wifi_hive();
        cfg.settings.sensor_manager.metrics_port = 9100;
        assert!(Security.generate(&cfg).is_err());
        // Refused with the firewall off too: the clash is the services', not the rules'.
        cfg.settings.firewall.enabled = false;
        assert!(Security.generate(&cfg).is_err());
        // A disabled service claims nothing.
        cfg.settings.sensor_manager.enabled = false;
        assert!(Security.generate(&cfg).is_ok());
    }

    #[test]
    fn bluetooth_stays_on_only_for_a_bluetooth_sensor() {
        let g = Security.generate(&wifi_hive()).expect("generates");
        let off = find(&g, "/boot/firmware/config.txt").expect("config.txt");
        assert!(
            matches!(&off.body, Body::Append(b) if String::from_utf8_lossy(b).contains("dtoverlay=disable-bt"))
        );
        assert_eq!(
            find(&g, "/etc/systemd/system/hciuart.service").map(|f| &f.body),
            Some(&Body::Symlink("/dev/null".into()))
        );
        let mut cfg = wifi_hive();
        cfg.hive.sensors[1].kind = "ruuvi_tag".into();
        let g = Security.generate(&cfg).expect("generates");
        assert!(find(&g, "/boot/firmware/config.txt").is_none());
        assert!(find(&g, "/etc/systemd/system/hciuart.service").is_none());
    }

    #[test]
    fn unattended_upgrades_only_when_auto_update() {
        let g = Security.generate(&wifi_hive()).expect("generates");
        assert!(text(&g, "/etc/apt/apt.conf.d/20auto-upgrades").contains("Unattended-Upgrade \"1\""));
        let uu = text(&g, "/etc/apt/apt.conf.d/52w4b-unattended-upgrades");
        assert!(
            uu.contains("origin=Debian,")
                && uu.contains("Raspberry Pi Foundation")
                && uu.contains("\"03:00\""),
            "{uu}"
        );
        let mut cfg = wifi_hive();
        cfg.hive.maintenance.updates.auto_update = false;
        let g = Security.generate(&cfg).expect("generates");
        assert!(!g
            .files
            .iter()
            .any(|f| f.path.to_string().starts_with("/etc/apt/")));
    }

    #[test]
    fn hardening_files_exist() {
        let g = Security.generate(&lan_hive()).expect("generates");
        let sysctl = text(&g, "/etc/sysctl.d/90-w4b.conf");
        for key in [
            "rp_filter = 1",
            "accept_redirects = 0",
            "accept_source_route = 0",
            "tcp_syncookies = 1",
            "kptr_restrict = 2",
        ] {
            assert!(sysctl.contains(key), "{key}");
        }
        // Every sysctl line is `key = value` with a key under /proc/sys.
        for line in sysctl.lines().filter(|l| !l.starts_with('#')) {
            let (k, v) = line.split_once(" = ").expect("key = value");
            assert!(!k.is_empty() && !v.is_empty() && !k.contains(' '), "{line}");
        }
        assert!(text(&g, "/etc/security/pwquality.conf.d/w4b.conf").contains("minlen = 12"));
        assert_eq!(
            find(&g, "/etc/systemd/system/local-fs.target.wants/tmp.mount").map(|f| &f.body),
            Some(&Body::Symlink("/etc/systemd/system/tmp.mount".into()))
        );
    }

    #[test]
    fn systemd_accepts_the_tmp_mount_unit() {
        let g = Security.generate(&lan_hive()).expect("generates");
        let dir = tempfile::tempdir().expect("tempdir");
        let unit = dir.path().join("tmp.mount");
        std::fs::write(&unit, text(&g, "/etc/systemd/system/tmp.mount")).expect("write");
        crate::oracle::require!("systemd-analyze");
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&unit)
            .output()
            .expect("systemd-analyze runs");
        let err = String::from_utf8_lossy(&out.stderr);
        // Outside a booted systemd, verify warns about the host; only complaints about our
        // file count.
        let ours: Vec<&str> = err.lines().filter(|l| l.contains("tmp.mount")).collect();
        assert!(
            ours.iter()
                .all(|l| !l.contains("Unknown") && !l.contains("Failed to parse")),
            "{err}"
        );
    }

    #[test]
    fn inputs_ignore_unrelated_fields() {
        let cfg = wifi_hive();
        let (before, _) = Security.inputs(&cfg).expect("inputs");
        let mut changed = cfg.clone();
        changed.hive.sensors[0].interface.pin = Some(17);
        changed.hive.sensors[1].name = "Scale 2".into();
        changed.hive.collector.batch_size = 5;
        changed.hive.network.wifi[0].priority = 7;
        changed.settings.system.locale = "de_DE.UTF-8".into();
        changed.settings.software.python_packages.clear();
        assert_eq!(Security.inputs(&changed).expect("inputs").0, before);
        let mut related = cfg.clone();
        related.settings.firewall.allow_ports.push(443);
        assert_ne!(Security.inputs(&related).expect("inputs").0, before);
        let mut related = cfg;
        related.hive.sensors[0].kind = "ble_scale".into();
        assert_ne!(Security.inputs(&related).expect("inputs").0, before);
    }

    #[test]
    fn no_secret_reaches_inputs_or_sections() {
        let cfg = wifi_hive();
        let g = Security.generate(&cfg).expect("generates");
        let shown = serde_json::to_string(&Security.inputs(&cfg).expect("inputs").0).expect("json");
        for secret in cfg.secrets() {
            assert!(!shown.contains(secret.expose()), "{}", secret.name);
            for s in &g.sections {
                assert!(
                    !s.script.contains(secret.expose()),
                    "{} in {}",
                    secret.name,
                    s.name
                );
            }
        }
    }

    #[test]
    fn sections_are_valid_posix_sh() {
        let g = Security.generate(&wifi_hive()).expect("generates");
        let orders: Vec<u32> = g.sections.iter().map(|s| s.order).collect();
        assert_eq!(orders, [20, 90]);
        for s in &g.sections {
            crate::modules::oracles::sh_syntax_ok(&s.name, &s.script);
        }
    }
}
