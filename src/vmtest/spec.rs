//! What a boot test checks. The types live with the definitions they are written in
//! ([`crate::defs::test_spec`]: an image's or a hive's `test:` key); they are re-exported
//! here, where the test runs them.

pub use crate::defs::test_spec::{
    stdout_regex, CommandCheck, TestDef, TestSpec, DEFAULT_BOOT_TIMEOUT, DEFAULT_CHECK_TIMEOUT,
    DEFAULT_TOTAL_TIMEOUT,
};
