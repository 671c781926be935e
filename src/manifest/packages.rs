//! Installed Debian packages in a manifest: every package an image's `install` step put
//! in, as `w4b.lock` pinned it, recorded as an in-toto resource descriptor in
//! `resolvedDependencies` — where SLSA puts what a build consumed, and where supply-chain
//! tools look for it.
//!
//! A package's `uri` is its [package URL] (`pkg:deb/debian/openssh-server@1%3A9.2p1-2?arch=arm64`),
//! the identifier vulnerability databases and SBOM tools match on; `downloadLocation` is
//! the `.deb` in its repository (credentials redacted); `digest.sha256` is the `.deb`'s,
//! from the signed index chain. `annotations` repeats what the purl encodes (version,
//! architecture, so no reader has to decode it) and names the repository, its suite and
//! the key that signed its index — or says [`UNSIGNED`] for a `trusted: true` repository,
//! so an auditor sees at once which packages no signature vouches for.
//!
//! [package URL]: https://github.com/package-url/purl-spec

use std::collections::BTreeMap;

use super::statement::{DependencyDescriptor, PackageAnnotations, Statement};

/// The purl type and namespace of every package w4b installs. Debian's archive and its
/// derivatives (Raspberry Pi OS) share the `deb` type; the namespace is the vendor,
/// and w4b's package sets are Debian-format repositories resolved for Debian releases.
pub const DEB_PURL_PREFIX: &str = "pkg:deb/debian/";

/// `signedBy` of a package from a `trusted: true` repository: no signature was checked.
pub const UNSIGNED: &str = "unsigned (trusted: true)";

/// An installed package, as the build's lock entry pins it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// sha256 (lowercase hex) of the `.deb`.
    pub sha256: String,
    /// Bytes of the `.deb`.
    pub size: u64,
    /// The `.deb`'s path below the repository URL (`pool/main/…`).
    pub filename: String,
    pub repository: Repository,
}

/// The repository a package was resolved from, as `w4b.lock` records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    pub name: String,
    /// Redacted: never carries credentials.
    pub url: String,
    pub suite: String,
    /// The fingerprint of the key that signed the index; `None` for `trusted: true`.
    pub signed_by: Option<String>,
}

impl Package {
    /// The package's descriptor in `resolvedDependencies`.
    pub fn descriptor(&self) -> DependencyDescriptor {
        let base = self.repository.url.trim_end_matches('/');
        let path = self.filename.trim_start_matches('/');
        DependencyDescriptor {
            uri: deb_purl(&self.name, &self.version, &self.architecture),
            name: Some(self.name.clone()),
            digest: BTreeMap::from([("sha256".to_owned(), self.sha256.clone())]),
            download_location: Some(format!("{base}/{path}")),
            annotations: Some(PackageAnnotations {
                version: self.version.clone(),
                architecture: self.architecture.clone(),
                size: self.size,
                repository: self.repository.name.clone(),
                repository_url: self.repository.url.clone(),
                suite: self.repository.suite.clone(),
                signed_by: self
                    .repository
                    .signed_by
                    .clone()
                    .unwrap_or_else(|| UNSIGNED.to_owned()),
            }),
        }
    }
}

/// The package URL of a Debian package: `pkg:deb/debian/<name>@<version>?arch=<arch>`,
/// each part percent-encoded as the purl specification asks (a version's `+` is `%2B`,
/// its epoch's `:` stays).
pub fn deb_purl(name: &str, version: &str, architecture: &str) -> String {
    format!(
        "{DEB_PURL_PREFIX}{}@{}?arch={}",
        purl_encode(&name.to_ascii_lowercase()),
        purl_encode(version),
        purl_encode(architecture)
    )
}

/// Percent-encodes everything but the unreserved characters of RFC 3986 and `:`, which
/// the purl specification leaves as is.
fn purl_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~' | b':') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A package descriptor read back from a statement.
#[derive(Debug, Clone, Copy)]
pub struct PackageEntry<'a> {
    pub descriptor: &'a DependencyDescriptor,
    pub annotations: &'a PackageAnnotations,
}

impl<'a> PackageEntry<'a> {
    /// The package name: `name`, which every package descriptor w4b writes has.
    pub fn name(&self) -> &'a str {
        self.descriptor.name.as_deref().unwrap_or_default()
    }

    pub fn purl(&self) -> &'a str {
        &self.descriptor.uri
    }

    pub fn sha256(&self) -> Option<&'a str> {
        self.descriptor.digest.get("sha256").map(String::as_str)
    }

    /// Whether the repository was `trusted: true` rather than signed.
    pub fn unsigned(&self) -> bool {
        self.annotations.signed_by == UNSIGNED
    }
}

/// The installed packages a statement records (descriptors with a `pkg:deb/` URI and
/// package annotations), in the statement's order (sorted by purl).
pub fn packages_of(statement: &Statement) -> Vec<PackageEntry<'_>> {
    statement
        .predicate
        .build_definition
        .resolved_dependencies
        .iter()
        .filter(|d| d.uri.starts_with("pkg:deb/"))
        .filter_map(|d| {
            d.annotations.as_ref().map(|annotations| PackageEntry {
                descriptor: d,
                annotations,
            })
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn package(name: &str, version: &str, arch: &str, signed_by: Option<&str>) -> Package {
        Package {
            name: name.into(),
            version: version.into(),
            architecture: arch.into(),
            sha256: blake3::hash(name.as_bytes()).to_hex().to_string(),
            size: 1234,
            filename: format!("pool/main/{name}_{version}_{arch}.deb"),
            repository: Repository {
                name: if signed_by.is_some() { "debian" } else { "local" }.into(),
                url: "https://deb.example.org/debian/".into(),
                suite: "bookworm".into(),
                signed_by: signed_by.map(Into::into),
            },
        }
    }

    #[test]
    fn purls_encode_what_the_purl_spec_asks() {
        assert_eq!(
            deb_purl("curl", "7.88.1-10+deb12u5", "arm64"),
            "pkg:deb/debian/curl@7.88.1-10%2Bdeb12u5?arch=arm64"
        );
        assert_eq!(
            deb_purl("openssh-server", "1:9.2p1-2+deb12u3", "arm64"),
            "pkg:deb/debian/openssh-server@1:9.2p1-2%2Bdeb12u3?arch=arm64"
        );
        assert_eq!(
            deb_purl("libstdc++6", "12.2.0-14", "armhf"),
            "pkg:deb/debian/libstdc%2B%2B6@12.2.0-14?arch=armhf"
        );
        assert_eq!(
            deb_purl("w4b-lib", "1.1~rc1", "all"),
            "pkg:deb/debian/w4b-lib@1.1~rc1?arch=all"
        );
    }

    #[test]
    fn a_package_descriptor_names_its_repository_and_signer() {
        let d = package("nftables", "1.0.6-2+deb12u2", "arm64", Some("ABCD")).descriptor();
        assert_eq!(d.uri, "pkg:deb/debian/nftables@1.0.6-2%2Bdeb12u2?arch=arm64");
        assert_eq!(d.name.as_deref(), Some("nftables"));
        assert_eq!(
            d.download_location.as_deref(),
            Some("https://deb.example.org/debian/pool/main/nftables_1.0.6-2+deb12u2_arm64.deb")
        );
        let a = d.annotations.unwrap();
        assert_eq!(
            (a.version.as_str(), a.architecture.as_str()),
            ("1.0.6-2+deb12u2", "arm64")
        );
        assert_eq!(a.signed_by, "ABCD");
        let u = package("timescaledb", "2.14.2", "arm64", None).descriptor();
        assert_eq!(u.annotations.unwrap().signed_by, UNSIGNED);
    }
}
