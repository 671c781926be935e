//! Reading what the guest sends on its results port (the protocol is written down in
//! `src/vmtest/guest.sh`): `hello`, one `result` per check, an `archive` of the hive's
//! files when the spec asks for the hive checklist, `done`.
//!
//! The host reads the port's file while the guest is still writing, so only complete
//! lines count; a line that does not parse is kept as garbage to show, never trusted.
//! Every field is bounded by what the guest's script writes (its outputs are cut to
//! 64 KiB before encoding; an archive to [`MAX_ARCHIVE`]), and the host checks the
//! archive's bound again before decoding it.

use base64::Engine as _;

use crate::validate::archive::MAX_ARCHIVE;

/// One check's raw outcome in the guest.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub id: String,
    pub status: i32,
    /// Seconds of guest uptime when the check started and ended.
    pub start: f64,
    pub end: f64,
    pub stdout: String,
    pub stderr: String,
}

/// An archive the guest sent: its `tar` exit status and error output, and the bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Archive {
    pub id: String,
    /// `tar`'s exit status, or 3 when the guest found the archive above its bound.
    pub status: i32,
    pub start: f64,
    pub end: f64,
    /// The archive, or why it could not be decoded (too large, not base64).
    pub bytes: Result<Vec<u8>, String>,
    pub stderr: String,
}

/// Everything received so far.
#[derive(Debug, Default)]
pub struct Results {
    /// The guest uptime at which the harness started, once it has.
    pub hello: Option<f64>,
    pub records: Vec<Record>,
    pub archives: Vec<Archive>,
    pub done: bool,
    /// Lines that were not part of the protocol.
    pub garbage: Vec<String>,
    /// Bytes of the file consumed (complete lines only).
    consumed: usize,
}

impl Results {
    /// Takes in the port's whole content so far; returns whether anything new arrived.
    pub fn update(&mut self, bytes: &[u8]) -> bool {
        let Some(rest) = bytes.get(self.consumed..) else {
            return false;
        };
        let Some(last_newline) = rest.iter().rposition(|&b| b == b'\n') else {
            return false;
        };
        let complete = rest.get(..last_newline).unwrap_or_default();
        self.consumed = self.consumed.saturating_add(last_newline).saturating_add(1);
        for line in complete.split(|&b| b == b'\n') {
            self.line(&String::from_utf8_lossy(line));
        }
        true
    }

    fn line(&mut self, line: &str) {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["hello", up] => self.hello = up.parse().ok().or(Some(0.0)),
            ["done"] => self.done = true,
            ["result", id, status, start, end, out, err] => {
                let (Ok(status), Ok(start), Ok(end)) = (status.parse(), start.parse(), end.parse()) else {
                    self.garbage.push(line.to_owned());
                    return;
                };
                self.records.push(Record {
                    id: (*id).to_owned(),
                    status,
                    start,
                    end,
                    stdout: decode(out),
                    stderr: decode(err),
                });
            }
            ["archive", id, status, start, end, data, err] => {
                let (Ok(status), Ok(start), Ok(end)) = (status.parse(), start.parse(), end.parse()) else {
                    self.garbage.push(line.chars().take(200).collect());
                    return;
                };
                self.archives.push(Archive {
                    id: (*id).to_owned(),
                    status,
                    start,
                    end,
                    bytes: decode_archive(data),
                    stderr: decode(err),
                });
            }
            [""] => {}
            _ => self.garbage.push(line.chars().take(200).collect()),
        }
    }

    pub fn get(&self, id: &str) -> Option<&Record> {
        self.records.iter().find(|r| r.id == id)
    }

    pub fn archive(&self, id: &str) -> Option<&Archive> {
        self.archives.iter().find(|a| a.id == id)
    }
}

/// An archive's bytes, refused above [`MAX_ARCHIVE`] before decoding.
fn decode_archive(b64: &str) -> Result<Vec<u8>, String> {
    let size = b64.len() / 4 * 3;
    if size > MAX_ARCHIVE {
        return Err(format!(
            "the archive is about {size} bytes, above the bound of {MAX_ARCHIVE}"
        ));
    }
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("the archive is not valid base64 ({e})"))
}

fn decode(b64: &str) -> String {
    match base64::engine::general_purpose::STANDARD.decode(b64) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => format!("<undecodable output: {} bytes of base64>", b64.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_complete_lines_count() {
        let mut r = Results::default();
        let mut port = b"hello\t12.50\nresult\tboot\t0\t12.51\t40.00\tcnVubmluZwo=\t\nresu".to_vec();
        assert!(r.update(&port));
        assert_eq!(r.hello, Some(12.5));
        assert_eq!(r.records.len(), 1);
        assert_eq!(r.get("boot").unwrap().stdout, "running\n");
        assert_eq!(r.get("boot").unwrap().end, 40.0);
        assert!(!r.update(&port));
        port.extend_from_slice(b"lt\tcmd-0\t1\t41\t42\tb29wcwo=\tZXJyCg==\ndone\n");
        assert!(r.update(&port));
        let c = r.get("cmd-0").unwrap();
        assert_eq!(
            (c.status, c.stdout.as_str(), c.stderr.as_str()),
            (1, "oops\n", "err\n")
        );
        assert!(r.done);
        assert!(r.garbage.is_empty());
    }

    #[test]
    fn an_archive_arrives_as_bytes_and_is_bounded() {
        let mut r = Results::default();
        r.update(b"archive\thive-checklist\t0\t50\t51.5\tAAEC/w==\tdGFyOiBvawo=\n");
        let a = r.archive("hive-checklist").unwrap();
        assert_eq!((a.status, a.end), (0, 51.5));
        assert_eq!(a.bytes, Ok(vec![0, 1, 2, 255]));
        assert_eq!(a.stderr, "tar: ok\n");
        assert!(r.get("hive-checklist").is_none(), "not a command's record");
        r.update(
            b"archive\thive-checklist\t0\t50\t51.5\tAAEC/w==\tdGFyOiBvawo=\narchive\tx\t0\t1\t2\t!!!!\t\n",
        );
        assert!(r
            .archive("x")
            .unwrap()
            .bytes
            .as_ref()
            .unwrap_err()
            .contains("base64"));
        let huge = "A".repeat(MAX_ARCHIVE / 3 * 4 + 8);
        let mut r = Results::default();
        r.update(format!("archive\th\t0\t1\t2\t{huge}\t\n").as_bytes());
        assert!(r
            .archive("h")
            .unwrap()
            .bytes
            .as_ref()
            .unwrap_err()
            .contains("above the bound"));
    }

    #[test]
    fn garbage_is_kept_not_trusted() {
        let mut r = Results::default();
        r.update(b"result\tx\tnot-a-number\t1\t2\t\t\nwhat\n");
        assert!(r.records.is_empty());
        assert_eq!(r.garbage.len(), 2);
    }
}
