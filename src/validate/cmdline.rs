//! The Raspberry Pi `cmdline.txt`: the kernel command line the firmware passes on, read
//! the way the kernel splits it (`lib/cmdline.c` `next_arg`): parameters separated by
//! whitespace, `name=value` or a bare `name`, double quotes keeping spaces inside a value
//! (`opt="a b"`, or the whole parameter quoted: `"opt=a b"`) and removed, and everything
//! after a lone `--` handed to init rather than the kernel.
//!
//! The firmware reads only the first line of the file, so a parameter on a later line is
//! silently lost — the usual way a hand edit breaks a Pi.

/// One kernel parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    /// `None` for a bare flag (`rootwait`); quotes removed.
    pub value: Option<String>,
}

/// A parsed `cmdline.txt`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cmdline {
    /// Kernel parameters of the first line, in order.
    pub params: Vec<Param>,
    /// Non-empty lines after the first, which the firmware ignores (1-based numbers).
    pub ignored_lines: Vec<usize>,
}

impl Cmdline {
    /// The value of the last `name=` parameter (the kernel lets a later one win).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|p| p.name == name)
            .and_then(|p| p.value.as_deref())
    }
}

/// Parses the text of a `cmdline.txt`.
pub fn parse(text: &str) -> Cmdline {
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or("").trim_end_matches('\r');
    let ignored_lines = lines
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, _)| i + 2)
        .collect();
    Cmdline {
        params: split(first),
        ignored_lines,
    }
}

/// Splits one command line into parameters, stopping at `--`.
fn split(line: &str) -> Vec<Param> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        // One token: whitespace ends it unless inside quotes; quotes are dropped.
        let mut token = String::new();
        let mut quoted = false;
        let mut had_eq = false;
        let mut name_end = None;
        for c in chars.by_ref() {
            if c == '"' {
                quoted = !quoted;
                continue;
            }
            if c.is_whitespace() && !quoted {
                break;
            }
            if c == '=' && !had_eq {
                had_eq = true;
                name_end = Some(token.len());
            }
            token.push(c);
        }
        if token == "--" {
            break;
        }
        let param = match name_end {
            Some(at) => {
                let (name, value) = token.split_at(at);
                Param {
                    name: name.to_string(),
                    value: Some(value.get(1..).unwrap_or("").to_string()),
                }
            }
            None => Param {
                name: token,
                value: None,
            },
        };
        out.push(param);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raspberry_pi_os_cmdline() {
        let c = parse("console=serial0,115200 console=tty1 root=PARTUUID=1a2b3c4d-02 rootfstype=ext4 fsck.repair=yes rootwait\n");
        assert_eq!(c.get("root"), Some("PARTUUID=1a2b3c4d-02"));
        assert_eq!(c.get("console"), Some("tty1"));
        assert_eq!(c.get("rootwait"), None);
        assert!(c.params.iter().any(|p| p.name == "rootwait" && p.value.is_none()));
        assert!(c.ignored_lines.is_empty());
    }

    #[test]
    fn quotes_keep_spaces_and_are_removed() {
        let c = parse("a=\"x y\" \"b=c d\" root=LABEL=\"my root\" e");
        assert_eq!(c.get("a"), Some("x y"));
        assert_eq!(c.get("b"), Some("c d"));
        assert_eq!(c.get("root"), Some("LABEL=my root"));
        assert_eq!(c.params.len(), 4);
    }

    #[test]
    fn device_paths_and_later_parameters() {
        let c = parse("root=/dev/mmcblk0p2 root=/dev/sda2  ro");
        assert_eq!(c.get("root"), Some("/dev/sda2"));
        let c = parse("root=/dev/mmcblk0p2 -- root=/dev/mmcblk0p3 single");
        assert_eq!(c.get("root"), Some("/dev/mmcblk0p2"));
        assert!(!c.params.iter().any(|p| p.name == "single"));
    }

    #[test]
    fn only_the_first_line_counts() {
        let c = parse("console=tty1\r\n\nroot=PARTUUID=1a2b3c4d-02\n");
        assert_eq!(c.get("console"), Some("tty1"));
        assert_eq!(c.get("root"), None);
        assert_eq!(c.ignored_lines, [3]);
        assert_eq!(parse("").params, []);
        assert_eq!(parse("   \n").params, []);
    }
}
