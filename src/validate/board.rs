//! Which boot files a Raspberry Pi model needs on its boot partition: the kernel images
//! its firmware loads and the device trees it picks for the board, per architecture.
//!
//! The firmware picks the kernel by model and by `arm_64bit` (raspberrypi/documentation,
//! `documentation/asciidoc/computers/config_txt/boot.adoc`, sections `kernel` and
//! `arm_64bit`): `kernel.img` on the Pi 1 and Zero, `kernel7.img` on the Pi 2, 3, 3+,
//! Zero 2 W and CM3, `kernel7l.img` on the Pi 4, 400 and CM4 in 32-bit mode, `kernel8.img`
//! in 64-bit mode, and the Pi 5 firmware defaults to `kernel_2712.img` (a kernel built for
//! its 16 KiB pages). Raspberry Pi OS bookworm ships all of these on every image's boot
//! partition (arm64 images: `kernel8.img` and `kernel_2712.img`; armhf images: `kernel.img`,
//! `kernel7.img`, `kernel7l.img`, `kernel8.img` and `kernel_2712.img`). Device trees are
//! named `<SoC>-rpi-<model>.dtb` (BCM2710 for the Pi 3 family and Zero 2 W, BCM2711 for the
//! Pi 4 family, BCM2712 for the Pi 5).

use serde::Serialize;

/// The boot files a board needs, by name at the top of the boot partition. Every name
/// listed must be present (names compare case-insensitively, as the firmware's FAT driver
/// does).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BoardCheck {
    pub kernels: Vec<String>,
    pub device_trees: Vec<String>,
}

impl BoardCheck {
    fn new(kernels: &[&str], device_trees: &[&str]) -> BoardCheck {
        BoardCheck {
            kernels: kernels.iter().map(|s| (*s).to_string()).collect(),
            device_trees: device_trees.iter().map(|s| (*s).to_string()).collect(),
        }
    }
}

/// The boards [`board_check`] knows, for messages.
pub const BOARDS: &[&str] = &["pi3", "pi4", "pi5", "zero2w", "cm4"];

/// The boot files of `board` (`pi3`, `pi4`, `pi5`, `zero2w`, `cm4`; a `//boards:` label
/// prefix is accepted) running an `arch` userland (`arm64`/`aarch64` or `armhf`/`arm`);
/// `None` for a board or architecture this table does not know.
pub fn board_check(board: &str, arch: &str) -> Option<BoardCheck> {
    let board = board.strip_prefix("//boards:").unwrap_or(board);
    let arm64 = match arch {
        "arm64" | "aarch64" => true,
        "armhf" | "arm" | "armv7" | "armv7l" => false,
        _ => return None,
    };
    Some(match (board, arm64) {
        ("pi3", true) => BoardCheck::new(
            &["kernel8.img"],
            &["bcm2710-rpi-3-b.dtb", "bcm2710-rpi-3-b-plus.dtb"],
        ),
        ("pi3", false) => BoardCheck::new(
            &["kernel7.img"],
            &["bcm2710-rpi-3-b.dtb", "bcm2710-rpi-3-b-plus.dtb"],
        ),
        ("zero2w", true) => BoardCheck::new(&["kernel8.img"], &["bcm2710-rpi-zero-2-w.dtb"]),
        ("zero2w", false) => BoardCheck::new(&["kernel7.img"], &["bcm2710-rpi-zero-2-w.dtb"]),
        ("pi4", true) => BoardCheck::new(&["kernel8.img"], &["bcm2711-rpi-4-b.dtb"]),
        ("pi4", false) => BoardCheck::new(&["kernel7l.img"], &["bcm2711-rpi-4-b.dtb"]),
        ("cm4", true) => BoardCheck::new(&["kernel8.img"], &["bcm2711-rpi-cm4.dtb"]),
        ("cm4", false) => BoardCheck::new(&["kernel7l.img"], &["bcm2711-rpi-cm4.dtb"]),
        // The Pi 5 boots only 64-bit kernels; an armhf image runs its userland on
        // `kernel_2712.img` too.
        ("pi5", _) => BoardCheck::new(&["kernel_2712.img"], &["bcm2712-rpi-5-b.dtb"]),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_follows_the_firmware_defaults() {
        let pi4 = board_check("pi4", "arm64").unwrap();
        assert_eq!(pi4.kernels, ["kernel8.img"]);
        assert_eq!(pi4.device_trees, ["bcm2711-rpi-4-b.dtb"]);
        assert_eq!(board_check("pi4", "armhf").unwrap().kernels, ["kernel7l.img"]);
        assert_eq!(board_check("pi3", "armhf").unwrap().kernels, ["kernel7.img"]);
        assert_eq!(
            board_check("//boards:pi5", "aarch64").unwrap().kernels,
            ["kernel_2712.img"]
        );
        assert_eq!(
            board_check("zero2w", "arm64").unwrap().device_trees,
            ["bcm2710-rpi-zero-2-w.dtb"]
        );
        assert_eq!(
            board_check("cm4", "arm64").unwrap().device_trees,
            ["bcm2711-rpi-cm4.dtb"]
        );
        for b in BOARDS {
            assert!(board_check(b, "arm64").is_some(), "{b}");
            assert!(board_check(b, "armhf").is_some(), "{b}");
        }
        assert_eq!(board_check("pi9", "arm64"), None);
        assert_eq!(board_check("pi4", "riscv64"), None);
    }
}

/// What `config.txt` says about the files the firmware loads: the directives that apply to
/// every board (before any section, or under `[all]`; conditional sections such as `[pi4]`
/// are not followed). The last of each wins, as in the firmware.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FirmwareConfig {
    /// `kernel=NAME`: the kernel file instead of the model's default name.
    pub kernel: Option<String>,
    /// `initramfs NAME [followkernel|ADDRESS]`.
    pub initramfs: Option<String>,
    /// `upstream_kernel=1`: mainline device-tree names (Debian's kernels).
    pub upstream_kernel: bool,
}

impl FirmwareConfig {
    pub fn parse(text: &str) -> FirmwareConfig {
        let mut c = FirmwareConfig::default();
        let mut applies = true;
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                applies = section.trim().eq_ignore_ascii_case("all");
                continue;
            }
            if !applies {
                continue;
            }
            if let Some((key, value)) = line.split_once('=') {
                let value = value.trim();
                match key.trim() {
                    "kernel" if !value.is_empty() => c.kernel = Some(value.to_owned()),
                    "upstream_kernel" => c.upstream_kernel = value == "1",
                    _ => {}
                }
            } else if let Some(rest) = line.strip_prefix("initramfs") {
                if let Some(name) = rest.split_whitespace().next() {
                    c.initramfs = Some(name.to_owned());
                }
            }
        }
        c
    }
}

/// The mainline Linux name of a Raspberry Pi device tree, which the firmware loads instead
/// of the downstream name under `upstream_kernel=1` (the Pi 3 family and the Zero 2 W are
/// `bcm2837` upstream, `bcm2710` downstream; the CM4's mainline tree is for its IO board).
/// Names without another spelling are returned as they are.
pub fn upstream_device_tree(name: &str) -> &str {
    match name {
        "bcm2710-rpi-3-b.dtb" => "bcm2837-rpi-3-b.dtb",
        "bcm2710-rpi-3-b-plus.dtb" => "bcm2837-rpi-3-b-plus.dtb",
        "bcm2710-rpi-3-a-plus.dtb" => "bcm2837-rpi-3-a-plus.dtb",
        "bcm2710-rpi-zero-2-w.dtb" => "bcm2837-rpi-zero-2-w.dtb",
        "bcm2710-rpi-cm3.dtb" => "bcm2837-rpi-cm3-io3.dtb",
        "bcm2711-rpi-cm4.dtb" => "bcm2711-rpi-cm4-io.dtb",
        other => other,
    }
}

#[cfg(test)]
mod firmware_config_tests {
    use super::*;

    #[test]
    fn debian_config_txt_names_its_kernel_and_initramfs() {
        let text = "# Do not modify this file!\narm_64bit=1\n\nenable_uart=1\nupstream_kernel=1\n\nkernel=vmlinuz-6.1.0-50-arm64\n# For details\ninitramfs initrd.img-6.1.0-50-arm64\n";
        let c = FirmwareConfig::parse(text);
        assert_eq!(c.kernel.as_deref(), Some("vmlinuz-6.1.0-50-arm64"));
        assert_eq!(c.initramfs.as_deref(), Some("initrd.img-6.1.0-50-arm64"));
        assert!(c.upstream_kernel);
    }

    #[test]
    fn conditional_sections_are_not_followed_and_all_resumes() {
        let text = "[pi4]\nkernel=k4.img\n[all]\nkernel=k.img\n[pi5]\ninitramfs i5 followkernel\n";
        let c = FirmwareConfig::parse(text);
        assert_eq!(c.kernel.as_deref(), Some("k.img"));
        assert_eq!(c.initramfs, None);
        assert!(!c.upstream_kernel);
        assert_eq!(FirmwareConfig::parse("arm_64bit=1\n"), FirmwareConfig::default());
    }

    #[test]
    fn downstream_tree_names_map_to_mainline_ones() {
        assert_eq!(upstream_device_tree("bcm2710-rpi-3-b.dtb"), "bcm2837-rpi-3-b.dtb");
        assert_eq!(
            upstream_device_tree("bcm2710-rpi-zero-2-w.dtb"),
            "bcm2837-rpi-zero-2-w.dtb"
        );
        assert_eq!(upstream_device_tree("bcm2711-rpi-4-b.dtb"), "bcm2711-rpi-4-b.dtb");
        assert_eq!(
            upstream_device_tree("bcm2711-rpi-cm4.dtb"),
            "bcm2711-rpi-cm4-io.dtb"
        );
    }
}
