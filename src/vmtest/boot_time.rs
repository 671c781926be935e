//! The boot-time breakdown from `systemd-analyze`'s summary:
//!
//! ```text
//! Startup finished in 3.120s (kernel) + 9.870s (initrd) + 30.4s (userspace) = 43.4s
//! multi-user.target reached after 30.1s in userspace.
//! ```
//!
//! plus the harness's own line for `multi-user.target` (`w4b-target UNIT ENTERED_US
//! USERSPACE_US`, from `systemctl show`), since `systemd-analyze` names only the default
//! target. Spans are systemd's (`1min 2.345s`, `345ms`, `12us`). A phase systemd does not print
//! (no initrd, firmware and loader on `-M virt`) is absent, not zero.

use serde::Serialize;

/// Seconds of each phase of the boot.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BootTime {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initrd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub userspace: Option<f64>,
    /// The sum systemd prints after `=`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<f64>,
    /// The target systemd reports reaching (`multi-user.target`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Seconds from the kernel's start to that target: kernel + initrd + its time in
    /// userspace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_reached: Option<f64>,
}

/// Parses `systemd-analyze`'s output; `None` when it holds no `Startup finished` line.
pub fn parse(text: &str) -> Option<BootTime> {
    let mut t = BootTime::default();
    let startup = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Startup finished in "))?;
    let (phases, total) = match startup.split_once(" = ") {
        Some((p, total)) => (p, Some(total)),
        None => (startup, None),
    };
    t.total = total.and_then(span);
    for phase in phases.split(" + ") {
        let Some((value, name)) = phase.trim().rsplit_once(" (") else {
            continue;
        };
        let seconds = span(value);
        match name.trim_end_matches(')') {
            "kernel" => t.kernel = seconds,
            "initrd" => t.initrd = seconds,
            "userspace" => t.userspace = seconds,
            _ => {}
        }
    }
    // The harness's own line, `w4b-target UNIT ENTERED_US USERSPACE_US`, wins: it names
    // `multi-user.target` whatever the default target is.
    let harness = text.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        (f.next() == Some("w4b-target")).then_some(())?;
        let unit = f.next()?;
        let entered: u64 = f.next()?.parse().ok()?;
        let userspace: u64 = f.next()?.parse().ok()?;
        (entered > 0 && entered >= userspace).then(|| (unit.to_owned(), (entered - userspace) as f64 / 1e6))
    });
    if let Some((unit, user)) = harness {
        t.target = Some(unit);
        let sum = t.kernel.unwrap_or(0.0) + t.initrd.unwrap_or(0.0) + user;
        t.target_reached = Some((sum * 1000.0).round() / 1000.0);
    } else if let Some(line) = text.lines().find(|l| l.contains(" reached after ")) {
        let (target, rest) = line.trim().split_once(" reached after ")?;
        t.target = Some(target.to_owned());
        let after = rest.trim_end_matches('.').trim_end_matches(" in userspace");
        if let Some(user) = span(after) {
            let sum = t.kernel.unwrap_or(0.0) + t.initrd.unwrap_or(0.0) + user;
            t.target_reached = Some((sum * 1000.0).round() / 1000.0);
        }
    }
    Some(t)
}

/// Seconds in a systemd time span: `1h 2min 3.5s`, `850ms`, `12us`.
pub fn span(text: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut any = false;
    for token in text.split_whitespace() {
        let split = token.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (number, unit) = token.split_at(split);
        let n: f64 = number.parse().ok()?;
        let factor = match unit {
            "d" => 86400.0,
            "h" => 3600.0,
            "min" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            _ => return None,
        };
        total += n * factor;
        any = true;
    }
    any.then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_in_systemd_units() {
        assert_eq!(span("1min 2.5s"), Some(62.5));
        assert_eq!(span("850ms"), Some(0.85));
        assert_eq!(span("3.120s"), Some(3.12));
        assert_eq!(span("fast"), None);
        assert_eq!(span(""), None);
    }

    #[test]
    fn the_summary_and_the_target() {
        let t = parse(
            "Startup finished in 3.120s (kernel) + 9.870s (initrd) + 30.400s (userspace) = 43.390s \n\
             multi-user.target reached after 30.100s in userspace.\n",
        )
        .unwrap();
        assert_eq!(t.kernel, Some(3.12));
        assert_eq!(t.initrd, Some(9.87));
        assert_eq!(t.userspace, Some(30.4));
        assert_eq!(t.total, Some(43.39));
        assert_eq!(t.target.as_deref(), Some("multi-user.target"));
        assert_eq!(t.target_reached, Some(43.09));
        assert_eq!(parse("Bootup is not yet finished"), None);
        // The harness's line names multi-user.target whatever systemd-analyze says.
        let t = parse(
            "Startup finished in 15.000s (kernel) + 25.000s (userspace) = 40.000s\n\
             w4b-target multi-user.target 32500000 12000000\n",
        )
        .unwrap();
        assert_eq!(t.target.as_deref(), Some("multi-user.target"));
        assert_eq!(t.target_reached, Some(35.5));
    }
}
