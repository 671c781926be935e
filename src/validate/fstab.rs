//! `/etc/fstab` as libmount reads it (`fstab(5)`): one filesystem per line — device,
//! mount point, type, options, dump frequency, fsck pass — separated by blanks; blank
//! lines and lines whose first non-blank character is `#` are comments; spaces and tabs
//! inside a field are written as octal escapes (`\040`, `\011`), which are decoded here.
//! Missing options default to `defaults`, missing numbers to 0.

use super::device::{DeviceRef, PartInfo};

/// One entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FstabEntry {
    /// 1-based line number.
    pub line: usize,
    pub device: String,
    pub mount_point: String,
    pub fs_type: String,
    pub options: Vec<String>,
    pub freq: u32,
    pub passno: u32,
}

impl FstabEntry {
    /// Whether boot goes on when the device is absent (`nofail`) or it is never mounted
    /// automatically (`noauto`).
    pub fn optional(&self) -> bool {
        self.options.iter().any(|o| o == "nofail" || o == "noauto")
    }
}

/// A line mount would reject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FstabProblem {
    pub line: usize,
    pub reason: String,
}

/// Parses fstab text into its entries and the lines that are not valid entries.
pub fn parse(text: &str) -> (Vec<FstabEntry>, Vec<FstabProblem>) {
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let fields: Vec<String> = trimmed.split_whitespace().map(unescape).collect();
        let field = |n: usize| fields.get(n).map(String::as_str);
        let (Some(device), Some(mount_point), Some(fs_type)) = (field(0), field(1), field(2)) else {
            problems.push(FstabProblem {
                line,
                reason: format!(
                    "has {} field(s); an entry needs at least the device, the mount point and the type",
                    fields.len()
                ),
            });
            continue;
        };
        if fields.len() > 6 {
            problems.push(FstabProblem {
                line,
                reason: format!(
                    "has {} fields, at most 6 are allowed (a space in a path must be written `\\040`)",
                    fields.len()
                ),
            });
            continue;
        }
        let number = |n: usize, what: &str, problems: &mut Vec<FstabProblem>| match field(n) {
            None => Some(0),
            Some(s) => match s.parse::<u32>() {
                Ok(v) => Some(v),
                Err(_) => {
                    problems.push(FstabProblem {
                        line,
                        reason: format!("its {what} field `{s}` is not a number"),
                    });
                    None
                }
            },
        };
        let (Some(freq), Some(passno)) = (number(4, "dump", &mut problems), number(5, "pass", &mut problems))
        else {
            continue;
        };
        entries.push(FstabEntry {
            line,
            device: device.to_string(),
            mount_point: mount_point.to_string(),
            fs_type: fs_type.to_string(),
            options: field(3)
                .unwrap_or("defaults")
                .split(',')
                .filter(|o| !o.is_empty())
                .map(str::to_string)
                .collect(),
            freq,
            passno,
        });
    }
    (entries, problems)
}

/// The mount point of the first entry whose device is `part` (by
/// [`DeviceRef::names`]: `PARTUUID=`, `PARTLABEL=`, `LABEL=`, `UUID=`, their
/// `/dev/disk/by-*` spellings, or a kernel device name such as `/dev/mmcblk0p1`), with
/// escapes decoded. Comments and lines that are not valid entries are skipped; `None` when
/// no entry names the partition. `unpack` finds the boot partition's mount point with it.
pub fn mount_point(text: &str, part: &PartInfo) -> Option<String> {
    let (entries, _) = parse(text);
    entries
        .into_iter()
        .find(|e| e.mount_point.starts_with('/') && DeviceRef::parse(&e.device).names(part))
        .map(|e| e.mount_point)
}

/// Decodes `\NNN` octal escapes (three digits, as `getmntent` does); anything else is
/// kept as written.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'\\' {
            if let Some(d) = bytes.get(i + 1..i + 4) {
                if d.iter().all(|c| (b'0'..=b'7').contains(c)) {
                    let v = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                    if let Ok(v) = u8::try_from(v) {
                        out.push(v);
                        i += 4;
                        continue;
                    }
                }
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raspberry_pi_os_fstab() {
        let text = "proc            /proc           proc    defaults          0       0\n\
                    PARTUUID=1a2b3c4d-01  /boot/firmware  vfat    defaults          0       2\n\
                    PARTUUID=1a2b3c4d-02  /               ext4    defaults,noatime  0       1\n\
                    # a swapfile is not a swap partition, so nothing here\n";
        let (e, p) = parse(text);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(e.len(), 3);
        assert_eq!(e[1].device, "PARTUUID=1a2b3c4d-01");
        assert_eq!(e[1].mount_point, "/boot/firmware");
        assert_eq!(e[1].passno, 2);
        assert_eq!(e[2].options, ["defaults", "noatime"]);
        assert_eq!(e[2].line, 3);
        assert!(!e[2].optional());
    }

    #[test]
    fn comments_blank_lines_escapes_and_defaults() {
        let text = "\n   # indented comment\n\tLABEL=data\\040disk /mnt/my\\040data ext4\nUUID=\"1A2B-3C4D\" /boot vfat ro,nofail\n";
        let (e, p) = parse(text);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].line, 3);
        assert_eq!(e[0].device, "LABEL=data disk");
        assert_eq!(e[0].mount_point, "/mnt/my data");
        assert_eq!(e[0].options, ["defaults"]);
        assert_eq!((e[0].freq, e[0].passno), (0, 0));
        // The quotes stay in the field; `DeviceRef::parse` removes them.
        assert_eq!(e[1].device, "UUID=\"1A2B-3C4D\"");
        assert!(e[1].optional());
    }

    #[test]
    fn malformed_lines_are_reported_with_their_number() {
        let (e, p) =
            parse("/dev/sda1 /mnt\n/dev/sda2 /x ext4 defaults x 0\n/dev/sda3 /y ext4 a b c d e\n# ok\n");
        assert!(e.is_empty());
        let lines: Vec<_> = p.iter().map(|p| p.line).collect();
        assert_eq!(lines, [1, 2, 3]);
        assert!(p[1].reason.contains("dump"), "{}", p[1].reason);
    }

    #[test]
    fn unescape_keeps_what_is_not_an_escape() {
        assert_eq!(unescape("a\\040b"), "a b");
        assert_eq!(unescape("a\\011b\\134"), "a\tb\\");
        assert_eq!(unescape("a\\9"), "a\\9");
        assert_eq!(unescape("\\777"), "\\777");
    }

    #[test]
    fn the_mount_point_comes_from_the_entry_naming_the_partition() {
        let boot = PartInfo {
            index: 1,
            partuuid: Some("1a2b3c4d-01".into()),
            name: String::new(),
            fs: crate::image::FsKind::Fat,
            fs_label: Some("bootfs".into()),
            fs_uuid: Some("1A2B-3C4D".into()),
        };
        let at = |text: &str| mount_point(text, &boot);
        let bookworm = "proc /proc proc defaults 0 0\nPARTUUID=1a2b3c4d-01  /boot/firmware  vfat defaults 0 2\nPARTUUID=1a2b3c4d-02 / ext4 defaults 0 1\n";
        assert_eq!(at(bookworm).as_deref(), Some("/boot/firmware"));
        let bullseye =
            "# a comment naming PARTUUID=1a2b3c4d-01 /nope\nPARTUUID=1A2B3C4D-01 /boot vfat defaults 0 2\n";
        assert_eq!(at(bullseye).as_deref(), Some("/boot"));
        assert_eq!(
            at("LABEL=bootfs /boot/efi vfat defaults 0 2").as_deref(),
            Some("/boot/efi")
        );
        assert_eq!(
            at("/dev/disk/by-label/bootfs /boot/efi vfat defaults 0 2").as_deref(),
            Some("/boot/efi")
        );
        assert_eq!(
            at("UUID=1a2b-3c4d /mnt/my\\040boot vfat defaults 0 2").as_deref(),
            Some("/mnt/my boot")
        );
        assert_eq!(
            at("/dev/mmcblk0p1 /boot vfat defaults 0 2").as_deref(),
            Some("/boot")
        );
        // Labels compare exactly, as the kernel's mount would: this line names nothing.
        assert_eq!(at("LABEL=BOOTFS /boot/efi vfat defaults 0 2"), None);
        // Another partition's line, a line that is not an entry, and nothing at all.
        assert_eq!(at("PARTUUID=1a2b3c4d-02 / ext4 defaults 0 1\n"), None);
        assert_eq!(at("PARTUUID=1a2b3c4d-01 /boot\n"), None);
        assert_eq!(at(""), None);
    }
}
