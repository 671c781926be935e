//! The SBOM oracles: the SPDX project's own `spdx-tools` (parse, then validate the whole
//! document against SPDX 2.3) and the CycloneDX project's `cyclonedx-python-lib` (strict
//! JSON-schema validation against CycloneDX 1.5). They live in a Python venv that
//! `.ci/install-deps` makes at `/opt/w4b-sbom-oracles` (`W4B_SBOM_ORACLE_PYTHON` names
//! another interpreter). A missing venv follows the oracle policy (`oracle.rs`): a
//! failure under CI, a visible skip elsewhere.
//!
//! Include it next to `oracle.rs` with `#[path = ".../tests/support/sbom_oracle.rs"] mod
//! sbom_oracle;`.

#![allow(dead_code)]
#![allow(clippy::disallowed_methods)] // reads `W4B_SBOM_ORACLE_PYTHON`, runs Python

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where `.ci/install-deps` puts the venv's interpreter.
pub const DEFAULT_PYTHON: &str = "/opt/w4b-sbom-oracles/bin/python3";

const SPDX_CHECK: &str = r#"
import sys
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document
doc = parse_file(sys.argv[1])
problems = validate_full_spdx_document(doc, "SPDX-2.3")
for p in problems:
    print(p.validation_message, p.context)
print(len(doc.packages), "packages")
sys.exit(1 if problems else 0)
"#;

const CYCLONEDX_CHECK: &str = r#"
import sys
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
error = JsonStrictValidator(SchemaVersion.V1_5).validate_str(open(sys.argv[1]).read())
if error is not None:
    print(error)
    sys.exit(1)
"#;

/// The venv's interpreter, when it has both libraries; otherwise reports the oracle as
/// unavailable (see `oracle::unavailable`) and returns `None`.
#[track_caller]
pub fn python() -> Option<PathBuf> {
    let python = std::env::var_os("W4B_SBOM_ORACLE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PYTHON));
    let ok = Command::new(&python)
        .args(["-c", "import spdx_tools.spdx, cyclonedx.validation.json"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Some(python)
    } else {
        super::oracle::unavailable(&format!(
            "`{}` cannot import `spdx_tools` and `cyclonedx` (run `.ci/install-deps`)",
            python.display()
        ));
        None
    }
}

fn run(python: &Path, script: &str, file: &Path) -> Result<String, String> {
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(file)
        .output()
        .map_err(|e| format!("cannot run `{}`: {e}", python.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// `spdx-tools`' verdict on the SPDX 2.3 JSON document at `file`: its output (which ends
/// with the number of packages it read), or every problem it found.
pub fn check_spdx(python: &Path, file: &Path) -> Result<String, String> {
    run(python, SPDX_CHECK, file)
}

/// `cyclonedx-python-lib`'s strict CycloneDX 1.5 schema validation of `file`.
pub fn check_cyclonedx(python: &Path, file: &Path) -> Result<String, String> {
    run(python, CYCLONEDX_CHECK, file)
}
