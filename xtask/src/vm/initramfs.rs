//! The guest's initramfs: static busybox, the kernel modules the tests need, and an `/init` that
//! mounts the host's root over 9p, chroots into it and runs the script the harness wrote.
//!
//! The archive is written here in the `newc` cpio format (uncompressed: the kernel unpacks it
//! faster than it would inflate it, and it is only a few megabytes), so device nodes such as
//! `/dev/console` need no `mknod` on the host.

use super::kernel::Kernel;
use anyhow::{Context, Result};
use std::fs;
use std::path::Path;

/// Markers the guest prints on its console; the harness reads them from QEMU's serial output.
pub const START_MARKER: &str = "@@CONVOY-VM-START@@";
/// Followed by the command's exit status.
pub const EXIT_MARKER: &str = "@@CONVOY-VM-EXIT ";
/// Followed by what went wrong before the command could run (module, 9p mount).
pub const FATAL_MARKER: &str = "@@CONVOY-VM-FATAL@@ ";

/// `/init` of the guest (busybox sh). Kernel command-line parameters: `convoy.run=SCRIPT` (a path
/// on the host, run with the host's `/bin/sh` inside the chroot) and `convoy.mode=run|shell`.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fatal() {
    echo "@@CONVOY-VM-FATAL@@ $*"
    dmesg | tail -n 30
    poweroff -f
}
for m in $(cat /modules.order); do
    insmod "/lib/modules/$m" || fatal "cannot load kernel module $m"
done
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose hostroot /host \
    || fatal "cannot mount the host's root over 9p (mount_tag hostroot)"
mount -o bind /dev /host/dev || fatal "cannot bind /dev into the host root"
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts devpts /host/dev/pts
mount -t tmpfs tmpfs /host/dev/shm
mount -t proc proc /host/proc || fatal "cannot mount /proc in the host root"
mount -t sysfs sysfs /host/sys || fatal "cannot mount /sys in the host root"
mount -t tmpfs -o mode=755 tmpfs /host/run || fatal "cannot mount /run"
mkdir -p /host/run/lock /host/run/tmp
chmod 1777 /host/run/tmp
ip link set lo up 2>/dev/null
hostname convoy-vm
script=""; mode=run
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        convoy.run=*) script="${arg#convoy.run=}" ;;
        convoy.mode=*) mode="${arg#convoy.mode=}" ;;
    esac
done
[ -n "$script" ] || fatal "no convoy.run= on the kernel command line"
echo "@@CONVOY-VM-START@@"
if [ "$mode" = shell ]; then
    setsid cttyhack chroot /host /bin/sh "$script"
    rc=$?
else
    chroot /host /bin/sh "$script" </dev/null
    rc=$?
fi
sync
echo ""
echo "@@CONVOY-VM-EXIT $rc@@"
poweroff -f
"#;

/// Builds the initramfs for `kernel` at `path` (rewritten only when its content changes).
pub fn build(kernel: &Kernel, path: &Path) -> Result<()> {
    let busybox = Path::new("/bin/busybox");
    let busybox_bytes =
        fs::read(busybox).context("reading /bin/busybox (apt-get install busybox-static)")?;
    let mut cpio = Cpio::default();
    for dir in ["bin", "dev", "proc", "sys", "host", "lib", "lib/modules"] {
        cpio.dir(dir);
    }
    cpio.char_device("dev/console", 5, 1);
    cpio.char_device("dev/null", 1, 3);
    cpio.file("bin/busybox", 0o755, &busybox_bytes);
    cpio.file("init", 0o755, INIT.as_bytes());
    let order = kernel.module_load_order()?;
    let mut made_dirs = std::collections::HashSet::new();
    for module in &order {
        let target = format!("lib/modules/{module}");
        let mut parent = Path::new(&target).parent();
        let mut to_make = Vec::new();
        while let Some(p) = parent {
            if p.as_os_str().is_empty() || !made_dirs.insert(p.to_path_buf()) {
                break;
            }
            to_make.push(p.to_path_buf());
            parent = p.parent();
        }
        for dir in to_make.iter().rev() {
            cpio.dir(&dir.to_string_lossy());
        }
        let bytes = fs::read(kernel.modules_dir.join(module))
            .with_context(|| format!("reading module {module}"))?;
        cpio.file(&target, 0o644, &bytes);
    }
    cpio.file("modules.order", 0o644, (order.join("\n") + "\n").as_bytes());
    let image = cpio.finish();
    if fs::read(path).ok().as_deref() != Some(&image[..]) {
        fs::write(path, &image).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// A minimal writer of the `newc` ("070701") cpio format the kernel unpacks.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    inode: u32,
}

impl Cpio {
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, 0, &[]);
    }

    fn char_device(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020600, (major << 8) | minor, &[]);
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, 0, data);
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: u32, data: &[u8]) {
        self.inode += 1;
        let (rmajor, rminor) = (rdev >> 8, rdev & 0xff);
        let fields = [
            self.inode,
            mode,
            0, // uid
            0, // gid
            1, // nlink
            0, // mtime
            u32::try_from(data.len()).expect("initramfs member over 4 GiB"),
            0, // devmajor
            0, // devminor
            rmajor,
            rminor,
            u32::try_from(name.len() + 1).expect("name length"),
            0, // check
        ];
        self.out.extend_from_slice(b"070701");
        for field in fields {
            self.out
                .extend_from_slice(format!("{field:08X}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 0, &[]);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::Cpio;

    #[test]
    fn newc_entries_are_aligned_and_terminated() {
        let mut cpio = Cpio::default();
        cpio.file("init", 0o755, b"#!/bin/sh\n");
        let image = cpio.finish();
        assert!(image.starts_with(b"070701"));
        assert!(image.len().is_multiple_of(4));
        let trailer = image.windows(10).position(|w| w == b"TRAILER!!!");
        assert!(trailer.is_some(), "archive must end with the trailer entry");
    }
}
