//! One boot test from start to end: prepare, boot, wait for the guest's records, stop,
//! judge.
//!
//! Nothing here outlives the call. The temporary directory (kernel, initramfs, harness
//! disk, results, QEMU's snapshot overlay) is removed when the call returns, whatever
//! way it returns; QEMU is killed (its whole process group) before that, by [`Vm`]'s
//! `Drop` on an early return. The host polls every 100 ms for the guest's records, QEMU's
//! exit, the cancel flag and three deadlines: the boot (the guest must settle within
//! `boot_timeout`, plus a grace for the kernel's own start), silence during the checks
//! (the longest check's timeout plus a grace), and the whole test (`timeout`).

use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::boot_files::{self, KernelSource};
use super::console;
use super::error::VmTestError;
use super::harness;
use super::judge::{self, Ending};
use super::qemu::{self, Launch, Vm};
use super::report::{Machine, Report, SCHEMA};
use super::results::Results;
use super::spec::{TestSpec, DEFAULT_CHECK_TIMEOUT};
use crate::image::{self, Compression};

/// How often the host looks at the guest.
const POLL: Duration = Duration::from_millis(100);
/// Extra seconds the host waits beyond the guest's own deadlines before it gives up on
/// the guest: the guest's clock starts a moment after QEMU's, and the guest reports its
/// own timeouts better than the host can.
const GRACE: u64 = 30;

/// How to run the machine, beside what the spec says to check.
#[derive(Clone, Debug)]
pub struct Options {
    /// A kernel and initramfs on this machine to boot instead of the image's own.
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Where the boot log goes; beside the image when `None`.
    pub log_dir: Option<PathBuf>,
    /// The bound on a compressed image's decompressed size.
    pub max_image_size: u64,
    /// `PATH` to find QEMU on (the caller's environment); the usual directories if `None`.
    pub path: Option<String>,
    /// The pinned generic kernel, booted when the image has no kernel of its own that
    /// boots the virtual machine (a Raspberry Pi OS image); `None`: such an image is
    /// refused (`w4b::test::no_kernel`).
    pub pinned: Option<PinnedSource>,
    /// Run the hive checklist in the guest when the image is a hive's, though the spec
    /// does not ask (`w4b test IMAGE` with no `hive_checklist` given: an image file says
    /// nothing about where it came from but its contents).
    pub detect_hive: bool,
}

/// Where the pinned test kernel comes from: asked only when the image has no kernel of its
/// own that boots the virtual machine, with a directory for its files (removed with the
/// test's other temporary files).
#[derive(Clone)]
pub struct PinnedSource(pub Arc<PinnedFn>);

/// What [`PinnedSource`] calls.
pub type PinnedFn = dyn Fn(&Path) -> Result<PinnedKernel, VmTestError> + Send + Sync;

impl PinnedSource {
    /// A kernel already on this machine.
    pub fn ready(kernel: PinnedKernel) -> PinnedSource {
        PinnedSource(Arc::new(move |_| Ok(kernel.clone())))
    }
}

impl std::fmt::Debug for PinnedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PinnedSource")
    }
}

/// The pinned test kernel's files on this machine ([`super::test_kernel`]).
#[derive(Clone, Debug)]
pub struct PinnedKernel {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub meta: super::test_kernel::Meta,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            kernel: None,
            initrd: None,
            memory_mib: 1024,
            cpus: 2,
            log_dir: None,
            max_image_size: image::DEFAULT_MAX_IMAGE_SIZE,
            path: None,
            pinned: None,
            detect_hive: false,
        }
    }
}

/// The boot log's path for `image`: `<dir>/<name>.boot.log`, the name without `.img` and
/// a compression suffix.
pub fn boot_log_path(image: &Path, log_dir: Option<&Path>) -> PathBuf {
    let name = image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut stem = name.as_str();
    for suffix in [".zst", ".zstd", ".xz", ".gz"] {
        if let Some(s) = stem.strip_suffix(suffix) {
            stem = s;
            break;
        }
    }
    let stem = stem.strip_suffix(".img").unwrap_or(stem);
    let stem = if stem.is_empty() { "image" } else { stem };
    let dir = match log_dir {
        Some(d) => d.to_path_buf(),
        None => image.parent().map(Path::to_path_buf).unwrap_or_default(),
    };
    dir.join(format!("{stem}.boot.log"))
}

/// Boots `image` and judges it by `spec`. Returns the report whether the checks pass or
/// fail; an error means the test could not run (or was cancelled through `cancel`).
pub fn run(
    image: &Path,
    spec: &TestSpec,
    opts: &Options,
    cancel: &AtomicBool,
) -> Result<Report, VmTestError> {
    let regexes = judge::regexes(spec).map_err(|(check, source)| VmTestError::BadRegex { check, source })?;
    let qemu = qemu::find_qemu(opts.path.as_deref())?;
    let image_err = |source| VmTestError::Image {
        path: image.to_path_buf(),
        source,
    };
    let opened = image::open_image(image, opts.max_image_size).map_err(image_err)?;
    // QEMU reads the image itself: the file when it is raw, else our decompressed copy,
    // an unnamed temporary file, through this process's descriptor for it.
    let qemu_image = match opened.compression {
        Compression::None => std::fs::canonicalize(image).unwrap_or_else(|_| image.to_path_buf()),
        _ => PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            opened.file.as_raw_fd()
        )),
    };
    let file = opened.file.try_clone().map_err(|e| image_err(e.into()))?;
    let disk = image::read_disk(file).map_err(image_err)?;
    let root = boot_files::find_root(&disk, image)?;
    let detected;
    let spec = if opts.detect_hive && root.is_hive && !spec.hive_checklist {
        detected = TestSpec {
            hive_checklist: true,
            ..spec.clone()
        };
        &detected
    } else {
        spec
    };

    let tmp = tempfile::Builder::new()
        .prefix("w4b-test-")
        .tempdir()
        .map_err(VmTestError::Temp)?;
    let (kernel_source, kernel, initrd) = match (&opts.kernel, &opts.initrd) {
        (Some(k), Some(i)) => {
            for p in [k, i] {
                std::fs::File::open(p).map_err(|source| VmTestError::OverrideFile {
                    path: p.clone(),
                    source,
                })?;
            }
            let k = std::fs::canonicalize(k).unwrap_or_else(|_| k.clone());
            let i = std::fs::canonicalize(i).unwrap_or_else(|_| i.clone());
            (
                KernelSource::Override {
                    kernel: k.clone(),
                    initrd: i.clone(),
                },
                k,
                i,
            )
        }
        (None, None) => match (
            boot_files::extract_kernel(&disk, &root, image, tmp.path()),
            &opts.pinned,
        ) {
            (Err(VmTestError::NoKernel { found, .. }), Some(source)) => {
                let p = (source.0)(tmp.path())?;
                (
                    KernelSource::Pinned {
                        package: p.meta.package.clone(),
                        version: p.meta.version.clone(),
                        release: p.meta.release.clone(),
                        instead_of: found,
                    },
                    p.kernel.clone(),
                    p.initrd.clone(),
                )
            }
            (found, _) => found?,
        },
        _ => return Err(VmTestError::OverridePair),
    };
    drop(disk);

    let payload = harness::payload(spec).map_err(VmTestError::Temp)?;
    let harness_disk = tmp.path().join("harness.tar");
    std::fs::write(&harness_disk, &payload.tar).map_err(VmTestError::Temp)?;
    let results_path = tmp.path().join("results");
    std::fs::write(&results_path, b"").map_err(VmTestError::Temp)?;
    let qemu_log = tmp.path().join("qemu.log");
    let boot_log = boot_log_path(image, opts.log_dir.as_deref());
    let log_err = |source| VmTestError::Log {
        path: boot_log.clone(),
        source,
    };
    if let Some(dir) = boot_log.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(log_err)?;
    }
    std::fs::File::create(&boot_log).map_err(log_err)?;
    let mut cmdline = harness::kernel_cmdline(&root.partuuid, &root.default_target);
    if matches!(kernel_source, KernelSource::Pinned { .. }) {
        // The pinned kernel's `/init` mounts the root by device: the image is QEMU's first
        // disk. `root=PARTUUID=` stays for the image's own tools.
        cmdline.push_str(&format!(" w4b.root=/dev/vda{}", root.partition));
    }
    let accel = qemu::pick_accel();
    let launch = Launch {
        qemu: &qemu,
        accel,
        cpus: opts.cpus.max(1),
        memory_mib: opts.memory_mib.max(256),
        image: &qemu_image,
        harness_disk: &harness_disk,
        kernel: &kernel,
        initrd: &initrd,
        cmdline: &cmdline,
        console_log: &boot_log,
        results: &results_path,
        qemu_log: &qemu_log,
        tmp: tmp.path(),
        path: opts.path.as_deref(),
    };

    let started = Instant::now();
    let mut vm = Vm::start(&launch)?;
    let total_deadline = started + Duration::from_secs(spec.timeout);
    let boot_deadline = started + Duration::from_secs(spec.boot_timeout.saturating_add(GRACE));
    let longest_check = spec
        .commands
        .iter()
        .map(|c| c.timeout)
        .chain([DEFAULT_CHECK_TIMEOUT])
        .max()
        .unwrap_or(DEFAULT_CHECK_TIMEOUT);
    let silence = Duration::from_secs(longest_check.saturating_add(GRACE));
    let mut results = Results::default();
    let mut last_progress = started;
    let ending = loop {
        if cancel.load(Ordering::Relaxed) {
            vm.stop();
            return Err(VmTestError::Cancelled);
        }
        if let Ok(bytes) = std::fs::read(&results_path) {
            if results.update(&bytes) {
                last_progress = Instant::now();
            }
        }
        if results.done {
            break Ending::Done;
        }
        if let Some(status) = vm.exited() {
            // The last records may have landed just before QEMU ended.
            if let Ok(bytes) = std::fs::read(&results_path) {
                results.update(&bytes);
            }
            if results.done {
                break Ending::Done;
            }
            let messages = std::fs::read_to_string(&qemu_log).unwrap_or_default();
            break Ending::QemuExited {
                status: status.to_string(),
                messages: console::last_lines(&messages, 10),
            };
        }
        let now = Instant::now();
        if now >= total_deadline {
            break Ending::TotalTimeout {
                seconds: spec.timeout,
            };
        }
        let booted = results.get("boot").is_some();
        if !booted && now >= boot_deadline {
            break Ending::BootTimeout {
                seconds: spec.boot_timeout,
                harness_started: results.hello.is_some(),
            };
        }
        if booted && now.duration_since(last_progress) >= silence {
            break Ending::CheckTimeout {
                seconds: silence.as_secs(),
            };
        }
        std::thread::sleep(POLL);
    };
    vm.stop();
    let seconds = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    drop(vm);
    // QEMU's own messages and the guest's serial console, for `-vv` and the log file.
    if crate::ui::log::enabled(crate::ui::log::Level::Command) {
        crate::ui::log::output_lines(&std::fs::read(&qemu_log).unwrap_or_default());
        crate::ui::log::output_lines(&std::fs::read(&boot_log).unwrap_or_default());
        crate::ui::log::line(
            crate::ui::log::Level::Command,
            None,
            &format!("qemu: stopped after {seconds} s ({ending:?})"),
        );
    }

    let console_tail = console::tail(&boot_log, console::TAIL_LINES);
    let judged = judge::judge(
        spec,
        &regexes,
        &payload.probes,
        &results,
        &ending,
        &console_tail,
        &root.default_target,
    );
    let passed = ending == Ending::Done && judged.checks.iter().all(|c| c.passed);
    drop(tmp);
    Ok(Report {
        schema: SCHEMA,
        disk: None,
        image: image.to_path_buf(),
        passed,
        kernel: kernel_source,
        machine: Machine {
            qemu,
            accel,
            cpus: launch_cpus(opts),
            memory_mib: opts.memory_mib.max(256),
            cmdline,
        },
        checks: judged.checks,
        boot_time: judged.boot_time,
        blame: judged.blame,
        boot_log,
        seconds,
    })
}

fn launch_cpus(opts: &Options) -> u32 {
    opts.cpus.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boot_log_sits_beside_the_image_without_its_suffixes() {
        assert_eq!(
            boot_log_path(Path::new("out/north.img.zst"), None),
            Path::new("out/north.boot.log")
        );
        assert_eq!(
            boot_log_path(Path::new("/x/base.img"), Some(Path::new("/logs"))),
            Path::new("/logs/base.boot.log")
        );
        assert_eq!(boot_log_path(Path::new("disk"), None), Path::new("disk.boot.log"));
    }
}
