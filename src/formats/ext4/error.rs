//! Why an ext4 image could not be read. "Corrupt" (the bytes break the format, including a
//! failed checksum) and "unsupported" (valid ext4 this reader does not handle) are
//! different errors; both name the structure, its byte offset in the image and the field.

use std::io;

/// An error reading an ext4 filesystem. Offsets are bytes from the start of the image
/// (the partition offset included), so `dd skip=` or `xxd -s` finds the structure.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum Ext4Error {
    #[error("reading the ext4 image at byte {offset} failed")]
    #[diagnostic(code(w4b::ext4::io))]
    Io {
        offset: u64,
        #[source]
        source: io::Error,
    },

    #[error("corrupt ext4 {structure} at byte {offset}: `{field}` {reason}")]
    #[diagnostic(
        code(w4b::ext4::corrupt),
        help("check the image with `e2fsck -fn`; a downloaded image may be truncated or damaged, so compare its digest")
    )]
    Corrupt {
        structure: &'static str,
        offset: u64,
        field: &'static str,
        reason: String,
    },

    #[error("corrupt ext4 {structure} at byte {offset}: checksum `{field}` is {stored:#x}, the contents give {computed:#x}")]
    #[diagnostic(
        code(w4b::ext4::checksum),
        help("check the image with `e2fsck -fn`; a downloaded image may be truncated or damaged, so compare its digest")
    )]
    Checksum {
        structure: &'static str,
        offset: u64,
        field: &'static str,
        stored: u32,
        computed: u32,
    },

    #[error("unsupported ext4 {structure} at byte {offset}: `{field}` {reason}")]
    #[diagnostic(code(w4b::ext4::unsupported))]
    Unsupported {
        structure: &'static str,
        offset: u64,
        field: &'static str,
        reason: String,
    },

    #[error("`{path}` does not exist in the ext4 filesystem")]
    #[diagnostic(code(w4b::ext4::not_found))]
    NotFound { path: String },

    #[error("`{path}` in the ext4 filesystem is not a {expected}")]
    #[diagnostic(code(w4b::ext4::wrong_type))]
    WrongType { path: String, expected: &'static str },
}

impl Ext4Error {
    /// A corruption error.
    pub fn corrupt(
        structure: &'static str,
        offset: u64,
        field: &'static str,
        reason: impl Into<String>,
    ) -> Ext4Error {
        Ext4Error::Corrupt {
            structure,
            offset,
            field,
            reason: reason.into(),
        }
    }

    /// An unsupported-feature error.
    pub fn unsupported(
        structure: &'static str,
        offset: u64,
        field: &'static str,
        reason: impl Into<String>,
    ) -> Ext4Error {
        Ext4Error::Unsupported {
            structure,
            offset,
            field,
            reason: reason.into(),
        }
    }

    /// Whether the image is damaged (bad structure or checksum), as opposed to unsupported
    /// or unreadable.
    pub fn is_corrupt(&self) -> bool {
        matches!(self, Ext4Error::Corrupt { .. } | Ext4Error::Checksum { .. })
    }
}
