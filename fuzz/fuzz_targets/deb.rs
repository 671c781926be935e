//! The Debian package reader and the version and relationship grammars, on the same input:
//!
//! - `Deb::open` (the `ar` container, `debian-binary`, `control.tar.*` decompressed and
//!   read whole, member order and limits), then every control accessor (the paragraph,
//!   `conffiles`, `md5sums`, maintainer scripts) and the `data.tar.*` stream read to its
//!   end through the same bounded decoders a build uses;
//! - each line as a `Version`: printing must read back as the same version (the same
//!   epoch, upstream and revision), and comparison must be a total order on the lines
//!   (antisymmetric, consistent with equality);
//! - each line as a relationship field (`Depends:` syntax): printing must read back as
//!   the same relations.
#![no_main]

use std::cmp::Ordering;
use std::io::{self, Read};

use libfuzzer_sys::fuzz_target;
use w4b::formats::deb::{Deb, Relations, Version};

/// The most `data.tar` bytes read from one input: a hostile stream ends here, not at the
/// disk's end.
const DATA_LIMIT: u64 = 64 << 20;
/// Lines of one input tried as versions and relations.
const LINES: usize = 64;

fn package(data: &[u8]) {
    let deb = match Deb::open(data) {
        Ok(d) => d,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let control = deb.control();
    let paragraph = control.paragraph();
    for field in paragraph.fields() {
        let _ = (field.name(), field.folded(), field.line());
    }
    let _ = control.conffiles().map_err(|e| e.to_string());
    let _ = control.md5sums().map_err(|e| e.to_string());
    for script in ["preinst", "postinst", "prerm", "postrm", "config"] {
        let _ = control.maintainer_script(script);
    }
    let names: Vec<String> = control.names().map(str::to_owned).collect();
    for name in &names {
        let _ = control.file(name);
    }
    let mut data_reader = deb.into_data();
    let _ = io::copy(&mut (&mut data_reader).take(DATA_LIMIT), &mut io::sink());
}

fn version(line: &str) -> Option<Version> {
    let v = Version::parse(line).ok()?;
    let printed = v.to_string();
    let again = match Version::parse(&printed) {
        Ok(a) => a,
        Err(e) => panic!("{line:?} parses, but its printed form {printed:?} does not: {e}"),
    };
    assert_eq!(again.cmp(&v), Ordering::Equal, "{line:?} printed as {printed:?}");
    assert_eq!(
        (again.epoch(), again.upstream(), again.revision()),
        (v.epoch(), v.upstream(), v.revision()),
        "{line:?} printed as {printed:?} reads back with other parts"
    );
    Some(v)
}

fn relations(line: &str) {
    let Ok(r) = Relations::parse(line) else {
        return;
    };
    let printed = r.to_string();
    match Relations::parse(&printed) {
        Ok(again) => assert_eq!(again, r, "{line:?} printed as {printed:?}"),
        Err(e) => panic!("{line:?} parses, but its printed form {printed:?} does not: {}", e.why),
    }
}

fuzz_target!(|data: &[u8]| {
    package(data);

    let text = String::from_utf8_lossy(data);
    let versions: Vec<Version> = text.lines().take(LINES).filter_map(version).collect();
    for a in &versions {
        for b in &versions {
            let ab = a.cmp(b);
            assert_eq!(ab, b.cmp(a).reverse(), "{a} and {b} compare both ways");
            assert_eq!(ab == Ordering::Equal, a == b, "{a} and {b}: equality and order disagree");
        }
    }
    for line in text.lines().take(LINES) {
        relations(line);
    }
});
