//! From a hive file's raw shape ([`super::raw`]) to the typed [`Hive`], by the hive
//! configuration manager's rules (REFERENCE §1), mapping its spellings to the
//! configuration's (`type` → `kind`/`bus`, `lan.static` → `static_ip`).
//!
//! [`read`] deserialises the document through [`from_value_collecting`], so unknown keys and
//! wrongly typed values are reported by the same machinery as every other definition, and
//! then checks what serde cannot: required keys, ranges, formats, cross-field rules. It
//! never stops at the first problem: every check runs on whatever was readable, and all
//! problems come back together, sorted by where they were written (`w4b hive validate`
//! lists them all). Secret positions go through [`SecretSources`]; no diagnostic shows a
//! secret's value (the document handed in has its secret literals blanked, see
//! [`super::secrets::redacted`]).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use super::config::*;
use super::raw::*;
use super::secrets::{SecretFile, SecretSources};
use crate::defs::de::{from_value_collecting, Checked, Spanned, Verbatim};
use crate::defs::image_settings::{is_dns_label, is_host};
use crate::defs::workspace::VpnSubnet;
use crate::defs::yaml::{Node, Value};
use crate::defs::{suggest, timezones, DefsError, DefsErrorKind, Span};

/// What reading a hive file gave: the hive (when it had no problem), the `image:` it names
/// (hive targets only), and every problem, in source order.
pub struct Read {
    pub hive: Option<Hive>,
    pub image: Option<Spanned<String>>,
    /// `test:`, w4b's extension: the hive's boot test.
    pub test: Option<Spanned<crate::defs::test_spec::TestDef>>,
    pub problems: Vec<DefsError>,
}

/// Reads a hive document (already merged with `hives.defaults`, secrets blanked in its
/// source texts). `allow_image`: the `image:` key (a hive target's) is allowed; `vpn`: the
/// fleet's subnet (`hives.vpn` of `w4b.yaml`), which `client_ip` must be a hive address of.
pub fn read(
    doc: &Value,
    allow_image: bool,
    sources: &SecretSources<'_>,
    secret_files: &mut Vec<SecretFile>,
    vpn: &VpnSubnet,
) -> Read {
    let (raw, found) = from_value_collecting::<RawHive>(doc);
    let mut r = Reader {
        sources,
        secret_files,
        vpn: *vpn,
        problems: Vec::new(),
    };
    for (span, e) in found {
        let e = with_context(doc, &span, e);
        r.problems.push((span, e));
    }
    let mut image = None;
    let mut test = None;
    let hive = raw.and_then(|mut raw| {
        if let Some(Checked::Valid(t)) = raw.test.take() {
            match doc.get("test").map(|e| crate::defs::test_spec::check(&e.value)) {
                Some(Err(e)) => r.problems.push((t.span.clone(), e)),
                _ => test = Some(t),
            }
        }
        if let Some(Checked::Valid(i)) = &raw.image {
            if allow_image {
                image = Some(i.clone());
            } else {
                r.bad(
                    &i.span,
                    "a hive inside an image builds on that image",
                    "not here",
                    "remove `image:`; it belongs in hive files under `defs/`",
                );
            }
        }
        r.hive(raw, &doc.span)
    });
    let mut problems = r.problems;
    // Stable: problems at one place keep the order they were found in.
    problems.sort_by_key(|(span, _)| (span.file.display_name(), span.start));
    Read {
        hive,
        image,
        test,
        problems: problems.into_iter().map(|(_, e)| e).collect(),
    }
}

/// Names the map an unknown key was found in (`in `network``), as the manager's users know
/// the file by its key paths.
fn with_context(doc: &Value, span: &Span, e: DefsError) -> DefsError {
    if !matches!(e.kind(), DefsErrorKind::UnknownKey { .. }) {
        return e;
    }
    let Some(path) = map_of_key(doc, span, "") else {
        return e;
    };
    match e.into_kind() {
        DefsErrorKind::UnknownKey {
            src, span, key, help, ..
        } => DefsErrorKind::UnknownKey {
            src,
            span,
            key,
            help,
            context: if path.is_empty() {
                " in a hive file".into()
            } else {
                format!(" in `{path}`")
            },
        }
        .into(),
        other => other.into(),
    }
}

/// The key path of the map holding the key written at `span`.
fn map_of_key(v: &Value, span: &Span, path: &str) -> Option<String> {
    match &v.node {
        Node::Map(entries) => {
            for e in entries {
                if Arc::ptr_eq(&e.key.span.file, &span.file) && e.key.span.start == span.start {
                    return Some(path.to_owned());
                }
            }
            entries.iter().find_map(|e| {
                let child = if path.is_empty() {
                    e.key.name.clone()
                } else {
                    format!("{path}.{}", e.key.name)
                };
                map_of_key(&e.value, span, &child)
            })
        }
        Node::Seq(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| map_of_key(item, span, &format!("{path}[{i}]"))),
        Node::Scalar(_) => None,
    }
}

/// The conversion's state: where secrets come from, and the problems found so far.
struct Reader<'a, 'b> {
    sources: &'a SecretSources<'a>,
    secret_files: &'b mut Vec<SecretFile>,
    /// The fleet's VPN subnet, for `client_ip`.
    vpn: VpnSubnet,
    problems: Vec<(Span, DefsError)>,
}

/// A value in range, or the bounds it missed.
struct Range {
    min: i128,
    max: i128,
}

impl Range {
    const fn at_least(min: i128) -> Range {
        Range {
            min,
            max: u64::MAX as i128,
        }
    }

    const fn within(min: i128, max: i128) -> Range {
        Range { min, max }
    }

    fn describe(&self) -> String {
        if self.max == u64::MAX as i128 {
            format!("at least {}", self.min)
        } else {
            format!("{}..={}", self.min, self.max)
        }
    }
}

impl Reader<'_, '_> {
    fn report(&mut self, span: &Span, e: DefsError) {
        self.problems.push((span.clone(), e));
    }

    fn bad(&mut self, span: &Span, message: impl Into<String>, label: &str, help: impl Into<String>) {
        let e = span.invalid_value(message, label, Some(help.into()));
        self.report(span, e);
    }

    fn missing(&mut self, map: &Span, key: &str, help: &str) {
        let e = DefsErrorKind::MissingKey {
            src: map.src(),
            span: map.ss(),
            field: key.to_owned(),
            help: Some(help.to_owned()),
        }
        .into();
        self.report(map, e);
    }

    /// A required key: `None` when it is missing (reported here) or invalid (reported).
    fn req<T>(&mut self, f: Field<T>, map: &Span, key: &str, help: &str) -> Option<Spanned<T>> {
        match f {
            None => {
                self.missing(map, key, help);
                None
            }
            Some(c) => c.into_valid(),
        }
    }

    /// An optional key: `Some(None)` when absent, `None` when invalid (reported).
    fn opt<T>(f: Field<T>) -> Option<Option<Spanned<T>>> {
        match f {
            None => Some(None),
            Some(Checked::Valid(v)) => Some(Some(v)),
            Some(Checked::Invalid) => None,
        }
    }

    fn int(&mut self, v: &Spanned<Int>, range: &Range) -> Option<u64> {
        if (range.min..=range.max).contains(&v.value) {
            u64::try_from(v.value).ok()
        } else {
            let bounds = range.describe();
            self.bad(
                &v.span,
                format!("`{}` is out of range", v.span.snippet()),
                &format!("must be {bounds}"),
                format!("write a whole number {bounds}"),
            );
            None
        }
    }

    fn opt_int(&mut self, f: Field<Int>, range: &Range, default: u64) -> Option<u64> {
        match Self::opt(f)? {
            None => Some(default),
            Some(v) => self.int(&v, range),
        }
    }

    fn req_int(&mut self, f: Field<Int>, map: &Span, key: &str, range: &Range, help: &str) -> Option<u64> {
        let v = self.req(f, map, key, help)?;
        self.int(&v, range)
    }

    /// A small integer (a pin, an address) in `range`, which fits a `u8`.
    fn opt_u8(&mut self, f: Field<Int>, range: &Range) -> Option<Option<u8>> {
        match Self::opt(f)? {
            None => Some(None),
            Some(v) => self.int(&v, range).and_then(|n| u8::try_from(n).ok()).map(Some),
        }
    }

    fn float(&mut self, v: &Spanned<f64>) -> Option<f64> {
        if v.value.is_finite() {
            Some(v.value)
        } else {
            self.bad(
                &v.span,
                format!("`{}` is not a finite number", v.span.snippet()),
                "not finite",
                "write a decimal number such as `1.5`",
            );
            None
        }
    }

    fn opt_float(&mut self, f: Field<f64>, default: f64) -> Option<f64> {
        match Self::opt(f)? {
            None => Some(default),
            Some(v) => self.float(&v),
        }
    }

    fn boolean(f: Field<bool>, default: bool) -> Option<bool> {
        Self::opt(f).map(|v| v.map_or(default, |b| b.value))
    }

    fn text(f: Field<String>) -> Option<Option<String>> {
        Self::opt(f).map(|v| v.map(|s| s.value))
    }

    fn secret(
        &mut self,
        v: Option<Verbatim>,
        map: &Span,
        key: &str,
        path: &str,
        help: &str,
    ) -> Option<Secret> {
        let Some(Verbatim(v)) = v else {
            self.missing(map, key, help);
            return None;
        };
        self.secret_value(&v, path)
    }

    fn secret_value(&mut self, v: &Value, path: &str) -> Option<Secret> {
        match self.sources.resolve(v, path, self.secret_files) {
            Ok(s) => Some(s),
            Err(e) => {
                self.report(&v.span, e);
                None
            }
        }
    }

    /// The items of a list whose items each convert on their own; `None` when the list or
    /// any item is invalid (every item is still checked).
    fn items<T, U>(
        &mut self,
        list: Vec<Checked<Spanned<T>>>,
        mut each: impl FnMut(&mut Self, usize, Spanned<T>) -> Option<U>,
    ) -> Option<Vec<U>> {
        let mut out = Some(Vec::with_capacity(list.len()));
        for (i, item) in list.into_iter().enumerate() {
            match (item.into_valid().and_then(|v| each(self, i, v)), out.as_mut()) {
                (Some(u), Some(o)) => o.push(u),
                _ => out = None,
            }
        }
        out
    }

    // -----------------------------------------------------------------------------------

    fn hive(&mut self, raw: RawHive, doc: &Span) -> Option<Hive> {
        let hive_id = self.hive_id(raw.hive_id, doc);
        let version = self.version(raw.version, doc);
        let metadata = self
            .req(
                raw.metadata,
                doc,
                "metadata",
                "add `metadata: {name: …, location: {latitude: …, longitude: …, timezone: …}}`",
            )
            .and_then(|m| self.metadata(m));
        let network = self
            .req(
                raw.network,
                doc,
                "network",
                "add `network: {primary: wifi, wifi: [{ssid: …, password: …, priority: 1}]}`",
            )
            .and_then(|n| self.network(n));
        let administrators = self
            .req(
                raw.administrators,
                doc,
                "administrators",
                "add `administrators: [{name: …, email: …, username: …, role: hive_admin}]`",
            )
            .and_then(|a| self.administrators(a));
        let collector = self
            .req(raw.collector, doc, "collector", "add `collector: {interval: 60, batch_size: 100, retry_attempts: 3, retry_delay: 5, buffer_size: 1000}`")
            .and_then(|c| self.collector(c));
        // Sensors are checked even when the collector is not, so every problem shows; their
        // default interval is the collector's.
        let sensors = self
            .req(
                raw.sensors,
                doc,
                "sensors",
                "add `sensors: []` or a list of sensors",
            )
            .and_then(|s| self.sensors(s, collector.as_ref().map_or(1, |c| c.interval)));
        let maintenance = self
            .req(
                raw.maintenance,
                doc,
                "maintenance",
                "add `maintenance: {backup: {…}, updates: {…}, monitoring: {…}}`",
            )
            .and_then(|m| self.maintenance(m));
        let security = match Self::opt(raw.security)? {
            None => Some(None),
            Some(s) => self.security(s).map(Some),
        };
        Some(Hive {
            hive_id: hive_id?,
            version: version?,
            metadata: metadata?,
            network: network?,
            administrators: administrators?,
            collector: collector?,
            sensors: sensors?,
            maintenance: maintenance?,
            security: security?,
        })
    }

    fn hive_id(&mut self, f: Field<String>, doc: &Span) -> Option<String> {
        let v = self.req(
            f,
            doc,
            "hive_id",
            "add `hive_id: hive_` followed by 8 letters, digits, `_` or `-`",
        )?;
        let id = &v.value;
        let ok = id.strip_prefix("hive_").is_some_and(|rest| {
            rest.len() == 8
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
        if !ok {
            self.bad(
                &v.span,
                format!("`{id}` is not a hive id"),
                "not `hive_` + 8 characters",
                "hive ids are `hive_` followed by 8 of `A-Z a-z 0-9 _ -`, such as `hive_AbCd1234`",
            );
            return None;
        }
        // The host name is derived from the id: it must come out a valid DNS label.
        if !is_dns_label(&host_label(id)) {
            self.bad(
                &v.span,
                format!("`{id}` gives no valid host name"),
                "host name would be invalid",
                "use letters or digits in the id; `_` and `-` alone do not make a host name",
            );
            return None;
        }
        Some(v.value)
    }

    fn version(&mut self, f: Field<String>, doc: &Span) -> Option<String> {
        let v = self.req(f, doc, "version", "add `version: \"1.0.0\"`")?;
        let parts: Vec<&str> = v.value.split('.').collect();
        if parts.len() != 3
            || parts
                .iter()
                .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
        {
            self.bad(
                &v.span,
                format!("`{}` is not a version", v.value),
                "not major.minor.patch",
                "write three numbers separated by dots, quoted: `version: \"1.0.0\"`",
            );
            return None;
        }
        Some(v.value)
    }

    fn metadata(&mut self, m: Spanned<RawMetadata>) -> Option<Metadata> {
        let (raw, span) = (m.value, m.span);
        let name = self
            .req(
                raw.name,
                &span,
                "name",
                "add `name: \"…\"`, the hive's display name",
            )
            .map(|n| n.value);
        let location = self
            .req(
                raw.location,
                &span,
                "location",
                "add `location: {latitude: …, longitude: …, timezone: Europe/Berlin}`",
            )
            .and_then(|l| self.location(l));
        let notes = Self::text(raw.notes);
        Some(Metadata {
            name: name?,
            location: location?,
            notes: notes?,
        })
    }

    fn location(&mut self, l: Spanned<RawLocation>) -> Option<Location_> {
        let (raw, span) = (l.value, l.span);
        let address = Self::text(raw.address);
        let coordinate = |this: &mut Self, f: Field<f64>, key: &str, limit: f64| -> Option<f64> {
            let v = this.req(f, &span, key, &format!("add `{key}:` in degrees"))?;
            let x = this.float(&v)?;
            if !(-limit..=limit).contains(&x) {
                this.bad(
                    &v.span,
                    format!("{key} {x} is out of range"),
                    &format!("must be within ±{limit}"),
                    format!("write the {key} in decimal degrees, from -{limit} to {limit}"),
                );
                return None;
            }
            Some(x)
        };
        let latitude = coordinate(self, raw.latitude, "latitude", 90.0);
        let longitude = coordinate(self, raw.longitude, "longitude", 180.0);
        let timezone = match Self::opt(raw.timezone) {
            None => None,
            Some(None) => Some(String::new()),
            Some(Some(tz)) => {
                if timezones::is_known(&tz.value) {
                    Some(tz.value)
                } else {
                    self.bad(
                        &tz.span,
                        format!("`{}` is not an IANA time zone", tz.value),
                        "unknown time zone",
                        timezones::help(&tz.value),
                    );
                    None
                }
            }
        };
        Some(Location_ {
            address: address?,
            latitude: latitude?,
            longitude: longitude?,
            timezone: timezone?,
        })
    }

    fn network(&mut self, n: Spanned<RawNetwork>) -> Option<Network> {
        let (raw, span) = (n.value, n.span);
        let wifi_given = raw.wifi.is_some();
        let wifi = match Self::opt(raw.wifi) {
            None => None,
            Some(None) => Some(Vec::new()),
            Some(Some(list)) => self.items(list.value, |this, i, w| this.wifi(i, w)),
        };
        let lan = match Self::opt(raw.lan) {
            None => None,
            Some(None) => Some(None),
            Some(Some(l)) => self.lan(l).map(Some),
        };
        let primary_span = raw
            .primary
            .as_ref()
            .and_then(Checked::valid)
            .map(|p| p.span.clone());
        let primary = match Self::opt(raw.primary) {
            None => None,
            Some(None) => Some(if wifi_given { Primary::Wifi } else { Primary::Lan }),
            Some(Some(p)) => match p.value.as_str() {
                "wifi" => Some(Primary::Wifi),
                "lan" => Some(Primary::Lan),
                other => {
                    self.bad(
                        &p.span,
                        format!("unknown primary network `{other}`"),
                        "expected `wifi` or `lan`",
                        suggest::help_for(other, &["wifi", "lan"], "values"),
                    );
                    None
                }
            },
        };
        let (primary, wifi, lan) = (primary?, wifi?, lan?);
        if primary == Primary::Wifi && wifi.is_empty() {
            self.bad(
                primary_span.as_ref().unwrap_or(&span),
                "the primary network is Wi-Fi, but no Wi-Fi network is given",
                "no `wifi` entries",
                "add `wifi: [{ssid: …, password: …, priority: 1}]`, or make `primary: lan`",
            );
            return None;
        }
        Some(Network { primary, wifi, lan })
    }

    fn wifi(&mut self, index: usize, w: Spanned<RawWifi>) -> Option<Wifi> {
        let (raw, span) = (w.value, w.span);
        let ssid = self
            .req(raw.ssid, &span, "ssid", "add `ssid:`, the network's name")
            .and_then(|s| {
                if s.value.is_empty() || s.value.len() > 32 {
                    self.bad(
                        &s.span,
                        "an SSID has 1 to 32 bytes",
                        "bad SSID",
                        "write the network's name as shown by your phone",
                    );
                    None
                } else {
                    Some(s.value)
                }
            });
        let key = format!("network.wifi[{index}].password");
        let written = raw.password.as_ref().map(|v| v.0.span.clone());
        let password = self
            .secret(
                raw.password,
                &span,
                "password",
                &key,
                "add `password:` (text, `${env:NAME}` or `{file: path}`)",
            )
            .and_then(|p| {
                if wpa_psk_is_valid(p.expose()) {
                    return Some(p);
                }
                // The build would refuse it: the same rule, reported here. Never the value;
                // the source shown around it has secrets blanked.
                let at = written.as_ref().unwrap_or(&span);
                let e = DefsErrorKind::SecretSource {
                    src: at.src(),
                    span: at.ss(),
                    key: key.clone(),
                    message: format!("is not a WPA password ({WPA_PSK_RULE})"),
                    label: "not a WPA password".into(),
                    help: "Wi-Fi networks with WPA2 take a passphrase of 8 to 63 characters; use the one the access point is configured with".into(),
                }
                .into();
                self.report(at, e);
                None
            });
        let priority = self.opt_int(raw.priority, &Range::within(1, u32::MAX.into()), 1);
        Some(Wifi {
            ssid: ssid?,
            password: password?,
            priority: u32::try_from(priority?).ok()?,
        })
    }

    fn lan(&mut self, l: Spanned<RawLan>) -> Option<Lan> {
        let (raw, span) = (l.value, l.span);
        let dhcp = Self::boolean(raw.dhcp, true);
        let static_ip = match (Self::opt(raw.static_ip), dhcp) {
            (None, _) => None,
            (Some(None), Some(false)) => {
                self.missing(
                    &span,
                    "static",
                    "with `dhcp: false`, give `static: {ip: 192.168.1.100/24, gateway: 192.168.1.1}`",
                );
                None
            }
            (Some(None), _) => Some(None),
            (Some(Some(s)), _) => self.static_ip(s).map(Some),
        };
        Some(Lan {
            dhcp: dhcp?,
            static_ip: static_ip?,
        })
    }

    fn static_ip(&mut self, s: Spanned<RawStaticIp>) -> Option<StaticIp> {
        let (raw, span) = (s.value, s.span);
        let ip = self
            .req(raw.ip, &span, "ip", "add `ip: 192.168.1.100/24`")
            .and_then(|v| {
                let t = &v.value;
                let (addr, prefix) = t.split_once('/').unwrap_or((t.as_str(), "24"));
                let ok = addr.parse::<Ipv4Addr>().is_ok()
                    && prefix.parse::<u8>().is_ok_and(|p| (1..=32).contains(&p));
                if !ok {
                    self.bad(
                        &v.span,
                        format!("`{t}` is not an IPv4 address"),
                        "not an address",
                        "write `192.168.1.100` or `192.168.1.100/24`",
                    );
                    return None;
                }
                Some(v.value)
            });
        let ipv4 = |this: &mut Self, v: Spanned<String>, what: &str| -> Option<String> {
            if v.value.parse::<Ipv4Addr>().is_err() {
                this.bad(
                    &v.span,
                    format!("`{}` is not an IPv4 address", v.value),
                    "not an address",
                    format!("write the {what} as `192.168.1.1`"),
                );
                return None;
            }
            Some(v.value)
        };
        let gateway = self
            .req(raw.gateway, &span, "gateway", "add `gateway: 192.168.1.1`")
            .and_then(|v| ipv4(self, v, "gateway"));
        let dns = match Self::opt(raw.dns) {
            None => None,
            Some(None) => Some(Vec::new()),
            Some(Some(list)) => self.items(list.value, |this, _, v| ipv4(this, v, "DNS server")),
        };
        Some(StaticIp {
            ip: ip?,
            gateway: gateway?,
            dns: dns?,
        })
    }

    fn administrators(
        &mut self,
        a: Spanned<Vec<Checked<Spanned<RawAdministrator>>>>,
    ) -> Option<Vec<Administrator>> {
        if a.value.is_empty() {
            self.bad(
                &a.span,
                "a hive needs at least one administrator",
                "empty",
                "add `- {name: …, email: …, username: …, role: hive_admin}`",
            );
            return None;
        }
        self.items(a.value, |this, _, m| this.administrator(m))
    }

    fn administrator(&mut self, m: Spanned<RawAdministrator>) -> Option<Administrator> {
        let (raw, span) = (m.value, m.span);
        let name = self
            .req(raw.name, &span, "name", "add `name:`, the person's name")
            .map(|n| n.value);
        let email = self.req(raw.email, &span, "email", "add `email:`").and_then(|e| {
            if !is_email(&e.value) {
                self.bad(
                    &e.span,
                    format!("`{}` is not an e-mail address", e.value),
                    "not an address",
                    "write an address such as `jo@example.com`",
                );
                return None;
            }
            Some(e.value)
        });
        let username = self
            .req(raw.username, &span, "username", "add `username:`")
            .and_then(|u| {
                if !is_username(&u.value) {
                    self.bad(
                        &u.span,
                        format!("`{}` is not a valid user name", u.value),
                        "bad user name",
                        "start with a lower-case letter or `_`, then up to 31 of `a-z 0-9 _ -`",
                    );
                    return None;
                }
                Some(u.value)
            });
        let phone = Self::text(raw.phone);
        let role = self
            .req(
                raw.role,
                &span,
                "role",
                "add `role: hive_admin` or `role: hive_viewer`",
            )
            .and_then(|r| match r.value.as_str() {
                "hive_admin" => Some(Role::HiveAdmin),
                "hive_viewer" => Some(Role::HiveViewer),
                other => {
                    self.bad(
                        &r.span,
                        format!("unknown role `{other}`"),
                        "expected `hive_admin` or `hive_viewer`",
                        suggest::help_for(other, &["hive_admin", "hive_viewer"], "values"),
                    );
                    None
                }
            });
        let ssh_keys = match Self::opt(raw.ssh_keys) {
            None => None,
            Some(None) => Some(Vec::new()),
            Some(Some(list)) => self.items(list.value, |this, _, k| {
                if is_public_key(&k.value) {
                    Some(k.value)
                } else {
                    this.bad(
                        &k.span,
                        "not an OpenSSH public key",
                        "bad key",
                        "paste one line of `~/.ssh/id_ed25519.pub`: `ssh-ed25519 AAAA… comment`",
                    );
                    None
                }
            }),
        };
        Some(Administrator {
            name: name?,
            email: email?,
            username: username?,
            phone: phone?,
            role: role?,
            ssh_keys: ssh_keys?,
        })
    }

    fn collector(&mut self, c: Spanned<RawCollector>) -> Option<Collector> {
        let (raw, span) = (c.value, c.span);
        let interval = self.req_int(
            raw.interval,
            &span,
            "interval",
            &Range::at_least(1),
            "add `interval:` in seconds (≥ 1)",
        );
        let batch_size = self.req_int(
            raw.batch_size,
            &span,
            "batch_size",
            &Range::at_least(1),
            "add `batch_size:` (≥ 1)",
        );
        let retry_attempts = self.req_int(
            raw.retry_attempts,
            &span,
            "retry_attempts",
            &Range::at_least(0),
            "add `retry_attempts:` (≥ 0)",
        );
        let retry_delay = self.req_int(
            raw.retry_delay,
            &span,
            "retry_delay",
            &Range::at_least(0),
            "add `retry_delay:` in seconds (≥ 0)",
        );
        let buffer_size = self.req_int(
            raw.buffer_size,
            &span,
            "buffer_size",
            &Range::at_least(1),
            "add `buffer_size:` (≥ 1)",
        );
        let logging = match Self::opt(raw.logging) {
            None => None,
            Some(None) => Some(CollectorLogging {
                level: "INFO".into(),
                max_size: "100M".into(),
                retention: 7,
            }),
            Some(Some(l)) => self.logging(l.value),
        };
        Some(Collector {
            interval: interval?,
            batch_size: batch_size?,
            retry_attempts: retry_attempts?,
            retry_delay: retry_delay?,
            buffer_size: buffer_size?,
            logging: logging?,
        })
    }

    fn logging(&mut self, raw: RawLogging) -> Option<CollectorLogging> {
        const LEVELS: &[&str] = &["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"];
        let level = match Self::opt(raw.level) {
            None => None,
            Some(None) => Some("INFO".to_owned()),
            Some(Some(l)) => {
                if LEVELS.contains(&l.value.as_str()) {
                    Some(l.value)
                } else {
                    self.bad(
                        &l.span,
                        format!("unknown log level `{}`", l.value),
                        "not a level",
                        suggest::help_for(&l.value, LEVELS, "levels"),
                    );
                    None
                }
            }
        };
        let max_size = match Self::opt(raw.max_size) {
            None => None,
            Some(None) => Some("100M".to_owned()),
            Some(Some(s)) => {
                let t = s.value.as_str();
                let digits = t.trim_end_matches(['K', 'M', 'G']);
                if !digits.is_empty()
                    && digits.bytes().all(|b| b.is_ascii_digit())
                    && t.len() - digits.len() <= 1
                {
                    Some(s.value)
                } else {
                    self.bad(
                        &s.span,
                        format!("`{t}` is not a size"),
                        "not a size",
                        "write a number with K, M or G, such as `100M`",
                    );
                    None
                }
            }
        };
        let retention = self.opt_int(raw.retention, &Range::at_least(1), 7);
        Some(CollectorLogging {
            level: level?,
            max_size: max_size?,
            retention: retention?,
        })
    }

    fn sensors(
        &mut self,
        s: Spanned<Vec<Checked<Spanned<RawSensor>>>>,
        default_interval: u64,
    ) -> Option<Vec<Sensor>> {
        let mut seen: BTreeMap<String, Span> = BTreeMap::new();
        self.items(s.value, |this, _, m| this.sensor(m, default_interval, &mut seen))
    }

    fn sensor(
        &mut self,
        m: Spanned<RawSensor>,
        default_interval: u64,
        seen: &mut BTreeMap<String, Span>,
    ) -> Option<Sensor> {
        let (raw, span) = (m.value, m.span);
        let id = self
            .req(raw.id, &span, "id", "add `id:`, unique among the hive's sensors")
            .and_then(|v| {
                let id = &v.value;
                if id.is_empty() || !id.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-') {
                    self.bad(
                        &v.span,
                        format!("`{id}` is not a sensor id"),
                        "bad id",
                        "use letters, digits, `_` and `-`, such as `temp_01`",
                    );
                    return None;
                }
                if let Some(first) = seen.get(id) {
                    let first = first.location();
                    self.bad(
                        &v.span,
                        format!("sensor id `{id}` is used twice"),
                        "duplicate id",
                        format!("it is first used at {first}; give each sensor its own id"),
                    );
                    return None;
                }
                seen.insert(id.clone(), v.span.clone());
                Some(v.value)
            });
        let kind = self
            .req(
                raw.kind,
                &span,
                "type",
                "add `type:`, such as `ds18b20`, `dht22`, `hx711` or `bme280`",
            )
            .and_then(|v| {
                let t = &v.value;
                if t.is_empty()
                    || !t
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
                {
                    self.bad(
                        &v.span,
                        format!("`{t}` is not a sensor type"),
                        "bad type",
                        "write the sensor's type in lower case, such as `ds18b20`",
                    );
                    return None;
                }
                Some(v.value)
            });
        let name = self
            .req(raw.name, &span, "name", "add `name:`, the sensor's display name")
            .map(|n| n.value);
        let enabled = Self::boolean(raw.enabled, true);
        let location = Self::text(raw.location);
        let interface = self
            .req(
                raw.interface,
                &span,
                "interface",
                "add `interface: {type: gpio, pin: 4}` (or i2c/spi)",
            )
            .and_then(|v| self.interface(v, kind.as_deref()));
        let collection = match Self::opt(raw.collection) {
            None => None,
            Some(None) => Some(Collection {
                interval: default_interval,
                retries: 3,
            }),
            Some(Some(c)) => self.collection(c.value, default_interval),
        };
        let calibration = match Self::opt(raw.calibration) {
            None => None,
            Some(None) => Some(Calibration {
                offset: 0.0,
                scale: 1.0,
            }),
            Some(Some(c)) => self.calibration(c.value),
        };
        let alerts = match Self::opt(raw.alerts) {
            None => None,
            Some(None) => Some(Vec::new()),
            Some(Some(a)) => self.items(a.value, |this, _, a| this.alert(a)),
        };
        Some(Sensor {
            id: id?,
            kind: kind?,
            name: name?,
            enabled: enabled?,
            location: location?,
            interface: interface?,
            collection: collection?,
            calibration: calibration?,
            alerts: alerts?,
        })
    }

    fn interface(&mut self, v: Spanned<RawInterface>, kind: Option<&str>) -> Option<Interface> {
        let (raw, span) = (v.value, v.span);
        // BCM GPIO numbers of the 40-pin header.
        let gpio = Range::within(0, 27);
        let pin = self.opt_u8(raw.pin, &gpio);
        let data_pin = self.opt_u8(raw.data_pin, &gpio);
        let clock_pin = self.opt_u8(raw.clock_pin, &gpio);
        let address = self.opt_u8(raw.address, &Range::within(0x03, 0x77));
        let bus_number = self.opt_u8(raw.bus_number, &Range::within(0, 22));
        let chip_select = self.opt_u8(raw.chip_select, &Range::within(0, 1));
        let bus_v = self.req(
            raw.bus,
            &span,
            "type",
            "add `type: gpio`, `type: i2c` or `type: spi`",
        )?;
        let bus = match bus_v.value.as_str() {
            "gpio" => Bus::Gpio,
            "i2c" => Bus::I2c,
            "spi" => Bus::Spi,
            other => {
                self.bad(
                    &bus_v.span,
                    format!("unknown interface `{other}`"),
                    "expected `gpio`, `i2c` or `spi`",
                    suggest::help_for(other, &["gpio", "i2c", "spi"], "values"),
                );
                return None;
            }
        };
        let (pin, data_pin, clock_pin) = (pin?, data_pin?, clock_pin?);
        let (address, bus_number, chip_select) = (address?, bus_number?, chip_select?);
        match bus {
            Bus::Gpio => {
                let two_wire = kind == Some("hx711") || data_pin.is_some() || clock_pin.is_some();
                let pair = "an hx711 needs `data_pin` and `clock_pin` (BCM numbers)";
                if two_wire {
                    if data_pin.is_none() {
                        self.missing(&span, "data_pin", pair);
                        return None;
                    }
                    if clock_pin.is_none() {
                        self.missing(&span, "clock_pin", pair);
                        return None;
                    }
                    if data_pin == clock_pin {
                        self.bad(
                            &span,
                            "`data_pin` and `clock_pin` are the same pin",
                            "one pin twice",
                            "wire data and clock to two different GPIOs",
                        );
                        return None;
                    }
                } else if pin.is_none() {
                    self.missing(
                        &span,
                        "pin",
                        "a GPIO sensor needs `pin:` (its BCM GPIO number, such as 4)",
                    );
                    return None;
                }
            }
            Bus::I2c => {
                if address.is_none() {
                    self.missing(
                        &span,
                        "address",
                        "an I²C sensor needs `address:` (such as `0x76`)",
                    );
                    return None;
                }
            }
            Bus::Spi => {}
        }
        Some(Interface {
            bus,
            pin,
            data_pin,
            clock_pin,
            address,
            bus_number: match bus {
                Bus::I2c => Some(bus_number.unwrap_or(1)),
                _ => bus_number,
            },
            chip_select: match bus {
                Bus::Spi => Some(chip_select.unwrap_or(0)),
                _ => chip_select,
            },
        })
    }

    fn alert(&mut self, a: Spanned<RawAlert>) -> Option<Alert> {
        let (raw, span) = (a.value, a.span);
        let metric = self
            .req(
                raw.metric,
                &span,
                "metric",
                "add `metric:`, such as `temperature`",
            )
            .map(|m| m.value);
        let min_span = raw.min.as_ref().and_then(Checked::valid).map(|m| m.span.clone());
        let min = match Self::opt(raw.min) {
            None => None,
            Some(None) => Some(None),
            Some(Some(x)) => self.float(&x).map(Some),
        };
        let max = match Self::opt(raw.max) {
            None => None,
            Some(None) => Some(None),
            Some(Some(x)) => self.float(&x).map(Some),
        };
        let threshold = self.opt_int(raw.threshold_duration, &Range::at_least(0), 0);
        if let (Some(Some(lo)), Some(Some(hi))) = (min, max) {
            if lo >= hi {
                self.bad(
                    min_span.as_ref().unwrap_or(&span),
                    format!("`min` ({lo}) is not below `max` ({hi})"),
                    "min ≥ max",
                    "an alert fires outside min..max: make `min` smaller than `max`",
                );
                return None;
            }
        }
        Some(Alert {
            metric: metric?,
            min: min?,
            max: max?,
            threshold_duration: threshold?,
        })
    }

    fn maintenance(&mut self, m: Spanned<RawMaintenance>) -> Option<Maintenance> {
        let raw = m.value;
        let backup = match Self::opt(raw.backup) {
            None => None,
            Some(None) => Some(Backup {
                enabled: true,
                interval: 86400,
                retention: 7,
            }),
            Some(Some(b)) => self.backup(b.value),
        };
        let updates = match Self::opt(raw.updates) {
            None => None,
            Some(None) => Some(Updates {
                auto_update: true,
                update_hour: 3,
                allowed_days: Vec::new(),
            }),
            Some(Some(u)) => self.updates(u.value),
        };
        let monitoring = match Self::opt(raw.monitoring) {
            None => None,
            Some(None) => Some(MaintenanceMonitoring {
                metrics_retention: 30,
                enable_detailed_logging: false,
            }),
            Some(Some(x)) => self.maintenance_monitoring(x.value),
        };
        Some(Maintenance {
            backup: backup?,
            updates: updates?,
            monitoring: monitoring?,
        })
    }

    fn collection(&mut self, raw: RawCollection, default_interval: u64) -> Option<Collection> {
        let interval = self.opt_int(raw.interval, &Range::at_least(1), default_interval);
        let retries = self.opt_int(raw.retries, &Range::at_least(0), 3);
        Some(Collection {
            interval: interval?,
            retries: retries?,
        })
    }

    fn calibration(&mut self, raw: RawCalibration) -> Option<Calibration> {
        let offset = self.opt_float(raw.offset, 0.0);
        let scale = self.opt_float(raw.scale, 1.0);
        Some(Calibration {
            offset: offset?,
            scale: scale?,
        })
    }

    fn backup(&mut self, raw: RawBackup) -> Option<Backup> {
        let enabled = Self::boolean(raw.enabled, true);
        let interval = self.opt_int(raw.interval, &Range::at_least(1), 86400);
        let retention = self.opt_int(raw.retention, &Range::at_least(1), 7);
        Some(Backup {
            enabled: enabled?,
            interval: interval?,
            retention: retention?,
        })
    }

    fn maintenance_monitoring(&mut self, raw: RawMaintenanceMonitoring) -> Option<MaintenanceMonitoring> {
        let retention = self.opt_int(raw.metrics_retention, &Range::at_least(1), 30);
        let detailed = Self::boolean(raw.enable_detailed_logging, false);
        Some(MaintenanceMonitoring {
            metrics_retention: retention?,
            enable_detailed_logging: detailed?,
        })
    }

    fn updates(&mut self, raw: RawUpdates) -> Option<Updates> {
        const DAYS: &[&str] = &[
            "Monday",
            "Tuesday",
            "Wednesday",
            "Thursday",
            "Friday",
            "Saturday",
            "Sunday",
        ];
        let auto_update = Self::boolean(raw.auto_update, true);
        let update_hour = self.opt_int(raw.update_hour, &Range::within(0, 23), 3);
        let allowed_days = match Self::opt(raw.allowed_days) {
            None => None,
            Some(None) => Some(Vec::new()),
            Some(Some(list)) => self.items(list.value, |this, _, d| {
                if DAYS.contains(&d.value.as_str()) {
                    Some(d.value)
                } else {
                    this.bad(
                        &d.span,
                        format!("`{}` is not a day", d.value),
                        "not a day",
                        suggest::help_for(&d.value, DAYS, "days"),
                    );
                    None
                }
            }),
        };
        Some(Updates {
            auto_update: auto_update?,
            update_hour: u8::try_from(update_hour?).ok()?,
            allowed_days: allowed_days?,
        })
    }

    fn security(&mut self, s: Spanned<RawSecurity>) -> Option<HiveSecurity> {
        let (raw, span) = (s.value, s.span);
        let missing: Vec<&str> = [
            ("ssh", raw.ssh.is_none()),
            ("wireguard", raw.wireguard.is_none()),
            ("database", raw.database.is_none()),
            ("local_access", raw.local_access.is_none()),
        ]
        .into_iter()
        .filter_map(|(k, absent)| absent.then_some(k))
        .collect();
        if !missing.is_empty() {
            self.bad(
                &span,
                format!("`security` is missing {}", suggest::backticked(&missing)),
                "incomplete",
                "`security` has all four parts (`ssh`, `wireguard`, `database`, `local_access`) or is left out",
            );
        }
        let ssh = Self::opt(raw.ssh).flatten().and_then(|x| self.ssh(x));
        let wireguard = Self::opt(raw.wireguard).flatten().and_then(|x| self.wireguard(x));
        let database = Self::opt(raw.database).flatten().and_then(|x| self.database(x));
        let local_access = Self::opt(raw.local_access)
            .flatten()
            .and_then(|x| self.local_access(x));
        Some(HiveSecurity {
            ssh: ssh?,
            wireguard: wireguard?,
            database: database?,
            local_access: local_access?,
        })
    }

    fn ssh(&mut self, s: Spanned<RawSsh>) -> Option<HiveSsh> {
        let (raw, span) = (s.value, s.span);
        let public_key = self
            .req(
                raw.public_key,
                &span,
                "public_key",
                "add the hive's `public_key: ssh-ed25519 AAAA… hive-<id>`",
            )
            .and_then(|k| {
                if is_public_key(&k.value) {
                    Some(k.value)
                } else {
                    self.bad(
                        &k.span,
                        "not an OpenSSH public key",
                        "bad key",
                        "write one line such as `ssh-ed25519 AAAA… hive-hive_AbCd1234`",
                    );
                    None
                }
            });
        // Optional: many hive files hold only the public half.
        let private_key = match raw.private_key {
            None => Some(None),
            Some(Verbatim(v)) => self.secret_value(&v, "security.ssh.private_key").map(Some),
        };
        let enable_password_auth = Self::boolean(raw.enable_password_auth, false);
        let allow_root = Self::boolean(raw.allow_root, false);
        let port = self.opt_int(raw.port, &Range::within(1, 65535), 22);
        Some(HiveSsh {
            public_key: public_key?,
            private_key: private_key?,
            enable_password_auth: enable_password_auth?,
            allow_root: allow_root?,
            port: u16::try_from(port?).ok()?,
        })
    }

    fn wireguard(&mut self, w: Spanned<RawWireGuard>) -> Option<WireGuard> {
        let (raw, span) = (w.value, w.span);
        let private_key = self.secret(
            raw.private_key,
            &span,
            "private_key",
            "security.wireguard.private_key",
            "add `private_key:` (`wg genkey`; text, `${env:NAME}` or `{file: path}`)",
        );
        let wg_key = |this: &mut Self, k: Spanned<String>| -> Option<String> {
            if is_wg_key(&k.value) {
                Some(k.value)
            } else {
                this.bad(
                    &k.span,
                    "not a WireGuard key",
                    "bad key",
                    "a WireGuard key is 44 characters of base64 ending in `=`, as `wg pubkey` prints it",
                );
                None
            }
        };
        let public_key = self
            .req(
                raw.public_key,
                &span,
                "public_key",
                "add the hive's `public_key:` (`wg pubkey`)",
            )
            .and_then(|k| wg_key(self, k));
        let peer_given = raw.peer_public_key.is_some();
        let peer_public_key = match Self::opt(raw.peer_public_key) {
            None => None,
            Some(None) => Some(None),
            Some(Some(k)) => wg_key(self, k).map(Some),
        };
        let vpn = self.vpn;
        let client_ip = self
            .req(
                raw.client_ip,
                &span,
                "client_ip",
                &format!("add `client_ip:`, one of {} (`w4b hive new` picks a free one)", vpn.client_range()),
            )
            .and_then(|c| {
                let addr = c.value.strip_suffix("/32").and_then(|a| a.parse::<Ipv4Addr>().ok());
                match addr {
                    Some(a) if vpn.is_client(a) => Some(c.value),
                    _ => {
                        self.bad(
                            &c.span,
                            format!("`{}` is not a client address of the VPN", c.value),
                            &format!("not a hive address of {}", vpn.cidr()),
                            format!(
                                "VPN clients are single addresses of {}: {} (`{}` is the hub; `hives.vpn` in `w4b.yaml` sets the subnet)",
                                vpn.cidr(),
                                vpn.client_range(),
                                vpn.hub
                            ),
                        );
                        None
                    }
                }
            });
        let endpoint = self
            .req(
                raw.endpoint,
                &span,
                "endpoint",
                "add `endpoint: hub.example.org:51820`",
            )
            .and_then(|e| {
                let ok = e
                    .value
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| is_host(host) && port.parse::<u16>().is_ok_and(|p| p > 0));
                if ok {
                    Some(e.value)
                } else {
                    self.bad(
                        &e.span,
                        format!("`{}` is not `host:port`", e.value),
                        "not an endpoint",
                        "write the hub's address and UDP port, such as `hub.example.org:51820`",
                    );
                    None
                }
            });
        let config_given = raw.config.is_some();
        let config = match raw.config {
            None => Some(None),
            Some(Verbatim(c)) => self.secret_value(&c, "security.wireguard.config").map(Some),
        };
        if !peer_given && !config_given {
            self.missing(
                &span,
                "peer_public_key",
                "give the hub's public key (`peer_public_key:`) here or once for every hive under `hives.defaults.security.wireguard` in `w4b.yaml`, or a complete `wg0.conf` as `config:`",
            );
            return None;
        }
        Some(WireGuard {
            private_key: private_key?,
            public_key: public_key?,
            peer_public_key: peer_public_key?,
            client_ip: client_ip?,
            endpoint: endpoint?,
            config: config?,
            subnet: vpn.cidr(),
        })
    }

    fn database(&mut self, d: Spanned<RawDatabase>) -> Option<Database> {
        let (raw, span) = (d.value, d.span);
        let ident = |this: &mut Self, f: Field<String>, key: &str, default: Option<&str>| -> Option<String> {
            let v = match (Self::opt(f)?, default) {
                (None, Some(d)) => return Some(d.to_owned()),
                (None, None) => {
                    this.missing(&span, key, &format!("add `{key}:`"));
                    return None;
                }
                (Some(v), _) => v,
            };
            if is_sql_identifier(&v.value) {
                Some(v.value)
            } else {
                this.bad(
                    &v.span,
                    format!("`{}` is not a PostgreSQL name w4b accepts", v.value),
                    "bad name",
                    "use lower-case letters, digits and `_`, starting with a letter (at most 63)",
                );
                None
            }
        };
        let username = ident(self, raw.username, "username", None);
        let database = ident(self, raw.database, "database", Some("hivedb"));
        let password = self.secret(
            raw.password,
            &span,
            "password",
            "security.database.password",
            "add `password:` (text, `${env:NAME}` or `{file: path}`)",
        );
        let host = match Self::opt(raw.host) {
            None => None,
            Some(None) => Some("localhost".to_owned()),
            Some(Some(h)) => {
                if is_host(&h.value) {
                    Some(h.value)
                } else {
                    self.bad(
                        &h.span,
                        format!("`{}` is not a host", h.value),
                        "not a host",
                        "write `localhost`, a host name or an IPv4 address",
                    );
                    None
                }
            }
        };
        let port = self.opt_int(raw.port, &Range::within(1, 65535), 5432);
        Some(Database {
            username: username?,
            password: password?,
            host: host?,
            port: u16::try_from(port?).ok()?,
            database: database?,
        })
    }

    fn local_access(&mut self, l: Spanned<RawLocalAccess>) -> Option<LocalAccess> {
        let (raw, span) = (l.value, l.span);
        let username = self
            .req(
                raw.username,
                &span,
                "username",
                "add `username:`, the local admin account",
            )
            .and_then(|u| {
                if is_username(&u.value) && u.value != "root" {
                    Some(u.value)
                } else {
                    self.bad(
                        &u.span,
                        format!("`{}` cannot be the local admin", u.value),
                        "bad user name",
                        "start with a lower-case letter or `_`, then up to 31 of `a-z 0-9 _ -`; not `root`",
                    );
                    None
                }
            });
        let password = self.secret(
            raw.password,
            &span,
            "password",
            "security.local_access.password",
            "add `password:` (text, `${env:NAME}` or `{file: path}`)",
        );
        let sudo = Self::boolean(raw.sudo_without_password, false);
        Some(LocalAccess {
            username: username?,
            password: password?,
            sudo_without_password: sudo?,
        })
    }
}

/// `config::Location` under another name: `crate::defs::Location` (a source location) is
/// the usual meaning of the word in the definitions layer.
type Location_ = super::config::Location;

/// The id part of the host name, as [`HiveImage::hostname`] derives it.
fn host_label(id: &str) -> String {
    super::config::dns_label(id.strip_prefix("hive_").unwrap_or(id))
}

pub(crate) fn is_email(e: &str) -> bool {
    let Some((local, domain)) = e.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && !local
            .chars()
            .any(|c| c.is_whitespace() || c == '@' || c.is_control())
        && domain.contains('.')
        && domain.split('.').all(|l| {
            !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

pub(crate) fn is_username(u: &str) -> bool {
    let mut chars = u.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && u.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn is_sql_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && s.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn is_public_key(k: &str) -> bool {
    let mut parts = k.split_whitespace();
    let algo = parts.next().unwrap_or("");
    let body = parts.next().unwrap_or("");
    !k.contains('\n')
        && (algo.starts_with("ssh-") || algo.starts_with("ecdsa-sha2-") || algo.starts_with("sk-"))
        && body.len() >= 16
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
}

fn is_wg_key(k: &str) -> bool {
    k.len() == 44
        && k.ends_with('=')
        && k[..43]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}
