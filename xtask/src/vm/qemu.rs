//! Starting QEMU, feeding it the run script, and reading its serial console.

use super::initramfs::{EXIT_MARKER, FATAL_MARKER, START_MARKER};
use super::kernel::Kernel;
use super::{shell_quote, GuestRun};
use anyhow::{bail, Context, Result};
use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How the guest's console is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Run the script with no input; read its output line by line.
    Batch,
    /// Hand the terminal to an interactive shell.
    Shell,
}

/// What a finished guest reported.
#[derive(Debug)]
pub struct GuestOutcome {
    /// Exit status of the guest command (137, as for SIGKILL, when the guest was power-cut).
    pub exit_status: i32,
    /// The guest was killed by a [`PowerCut`] before its command finished.
    pub power_cut: bool,
}

/// A power cut of the whole guest: QEMU is killed (SIGKILL) `delay` after the guest command
/// printed a line containing `marker`. Writes the guest had completed are in the host's page
/// cache (the disks use `cache=unsafe`), so this models losing the guest's power, not the
/// host's: whatever the guest kernel had not yet submitted to its disks is lost.
#[derive(Debug, Clone)]
pub struct PowerCut {
    /// Text of the guest's line that arms the cut.
    pub marker: String,
    /// Time from that line to the kill.
    pub delay: Duration,
}

/// Exit status reported for a power-cut guest.
pub const POWER_CUT_STATUS: i32 = 137;

/// The guest command's `TMPDIR`: a tmpfs private to the guest (see the initramfs's `/init`).
pub const GUEST_TMPDIR: &str = "/run/tmp";

/// Environment variables forwarded from the host into the guest command.
const FORWARDED_ENV: &[&str] = &[
    "RUST_BACKTRACE",
    "RUST_LOG",
    "RUST_TEST_THREADS",
    "CARGO_TARGET_DIR",
    "PROPTEST_CASES",
];

fn script(repo: &Path, body: &str) -> String {
    let mut s = String::from("# written by cargo xtask vm\n");
    s.push_str("export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n");
    // The guest's own temporary directory lives under its private /run (a tmpfs): the host's
    // /tmp stays visible, since the checkout itself may live there.
    s.push_str(&format!(
        "export HOME=/root LANG=C.UTF-8 TMPDIR={GUEST_TMPDIR}\n"
    ));
    // No udev in the guest: libdevmapper (dmsetup) must make /dev/mapper nodes itself.
    s.push_str("export DM_DISABLE_UDEV=1 CONVOY_VM=1\n");
    for (key, value) in std::env::vars() {
        if FORWARDED_ENV.contains(&key.as_str()) || key.starts_with("CONVOY_") {
            s.push_str(&format!("export {key}={}\n", shell_quote(&value)));
        }
    }
    s.push_str(&format!(
        "cd {} || exit 125\n",
        shell_quote(&repo.to_string_lossy())
    ));
    s.push_str(body);
    s
}

/// Boots the guest and waits for it, streaming the command's output to `on_line`.
pub fn boot(
    kernel: &Kernel,
    initrd: &Path,
    work: &Path,
    repo: &Path,
    run: &GuestRun,
    cut: Option<&PowerCut>,
    on_line: &mut dyn FnMut(&str),
) -> Result<GuestOutcome> {
    let script_path = work.join("run.sh");
    fs::write(&script_path, script(repo, &run.script_body))?;
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-nodefaults",
        "-no-user-config",
        "-no-reboot",
        "-display",
        "none",
    ])
    .args([
        "-machine",
        "pc",
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        "max",
        "-smp",
        "2",
    ])
    .args(["-m", &run.memory_mib.to_string()])
    .arg("-kernel")
    .arg(&kernel.vmlinuz)
    .arg("-initrd")
    .arg(initrd)
    .arg("-append")
    .arg(format!(
        "console=ttyS0 quiet loglevel=3 panic=-1 convoy.run={} convoy.mode={}",
        script_path.display(),
        if run.mode == Mode::Shell {
            "shell"
        } else {
            "run"
        }
    ))
    .args([
        "-virtfs",
        "local,path=/,mount_tag=hostroot,security_model=passthrough,id=hostroot,multidevs=remap",
    ]);
    for (i, size) in run.disk_sizes.iter().enumerate() {
        let disk = work.join(format!("disk{i}.img"));
        File::create(&disk)?.set_len(*size)?;
        cmd.arg("-drive").arg(format!(
            "file={},format=raw,if=virtio,cache=unsafe",
            disk.display()
        ));
    }
    for disk in &run.disk_files {
        cmd.arg("-drive").arg(format!(
            "file={},format=raw,if=virtio,cache=unsafe",
            disk.display()
        ));
    }
    let started = Instant::now();
    if run.mode == Mode::Shell {
        let status = cmd
            .args(["-serial", "mon:stdio"])
            .status()
            .context("starting qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
        return Ok(GuestOutcome {
            exit_status: status.code().unwrap_or(1),
            power_cut: false,
        });
    }
    cmd.args(["-serial", "stdio", "-monitor", "none"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .context("starting qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let stderr_thread = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    // Serial output is read on its own thread so the timeout below is enforced however the
    // guest behaves.
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match lines.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']).replace('\r', "");
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });

    let mut console = Console::new(run.verbose);
    let deadline = started + run.timeout;
    let mut timed_out = false;
    let mut cut_at: Option<Instant> = None;
    let mut power_cut = false;
    loop {
        let wait = cut_at.map_or(Duration::from_millis(100), |at| {
            at.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100))
        });
        match rx.recv_timeout(wait) {
            Ok(line) => {
                if let Some(cut) = cut {
                    if cut_at.is_none() && console.started && line.contains(&cut.marker) {
                        cut_at = Some(Instant::now() + cut.delay);
                    }
                }
                console.feed(&line, on_line)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if cut_at.is_some_and(|at| Instant::now() >= at) && console.exit_status.is_none() {
            // SIGKILL: QEMU gets no chance to flush anything of the guest's.
            let _ = child.kill();
            power_cut = true;
            break;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            let _ = child.kill();
            break;
        }
    }
    let qemu_status = child.wait()?;
    // Drain what the reader still holds.
    let _ = reader.join();
    while let Ok(line) = rx.try_recv() {
        console.feed(&line, on_line);
    }
    let qemu_stderr = stderr_thread.join().unwrap_or_default();

    if timed_out {
        bail!(
            "guest timed out after {} s and was killed (raise it with --timeout).\n{}",
            run.timeout.as_secs(),
            console.log_tail()
        );
    }
    if let Some(fatal) = &console.fatal {
        bail!("guest setup failed: {fatal}\n{}", console.log_tail());
    }
    if console.panicked {
        bail!("the guest kernel panicked.\n{}", console.log_tail());
    }
    match console.exit_status {
        Some(exit_status) => Ok(GuestOutcome {
            exit_status,
            power_cut: false,
        }),
        None if power_cut => Ok(GuestOutcome {
            exit_status: POWER_CUT_STATUS,
            power_cut: true,
        }),
        None => bail!(
            "the guest stopped without reporting an exit status (qemu: {qemu_status}).\n{}{}",
            console.log_tail(),
            if qemu_stderr.trim().is_empty() {
                String::new()
            } else {
                format!("\nqemu said: {}", qemu_stderr.trim())
            }
        ),
    }
}

/// Tracks the serial console: boot log until the start marker, then command output.
struct Console {
    verbose: bool,
    started: bool,
    log: VecDeque<String>,
    fatal: Option<String>,
    panicked: bool,
    exit_status: Option<i32>,
    /// An empty line held back: the guest prints one before the exit marker, in case the command's
    /// output did not end with a newline; it is shown only if more output follows.
    held_empty_line: bool,
}

const LOG_LINES_KEPT: usize = 60;

impl Console {
    fn new(verbose: bool) -> Self {
        Self {
            verbose,
            started: false,
            log: VecDeque::new(),
            fatal: None,
            panicked: false,
            exit_status: None,
            held_empty_line: false,
        }
    }

    fn feed(&mut self, line: &str, on_line: &mut dyn FnMut(&str)) {
        if self.exit_status.is_some() {
            return;
        }
        if line.contains("Kernel panic - not syncing") {
            self.panicked = true;
        }
        if let Some(rest) = line.split_once(FATAL_MARKER).map(|(_, r)| r) {
            self.fatal = Some(rest.to_string());
        } else if line.contains(START_MARKER) {
            self.started = true;
            return;
        } else if let Some((before, rest)) = line.split_once(EXIT_MARKER) {
            if !before.is_empty() {
                on_line(before);
            }
            let code = rest.trim_end_matches('@').trim();
            self.exit_status = Some(code.parse().unwrap_or(255));
            return;
        }
        if self.started {
            if std::mem::take(&mut self.held_empty_line) {
                on_line("");
            }
            if line.is_empty() {
                self.held_empty_line = true;
                return;
            }
            on_line(line);
        } else if self.verbose {
            eprintln!("[guest] {line}");
        }
        self.log.push_back(line.to_string());
        if self.log.len() > LOG_LINES_KEPT {
            self.log.pop_front();
        }
    }

    fn log_tail(&self) -> String {
        if self.log.is_empty() {
            return "(the guest printed nothing on its console)".to_string();
        }
        let mut s = String::from("--- last lines of the guest's console ---\n");
        for line in &self.log {
            s.push_str(line);
            s.push('\n');
        }
        s.push_str("--- end of guest console ---");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::Console;

    fn feed_all(lines: &[&str]) -> (Console, Vec<String>) {
        let mut console = Console::new(false);
        let mut shown = Vec::new();
        for line in lines {
            console.feed(line, &mut |l| shown.push(l.to_string()));
        }
        (console, shown)
    }

    #[test]
    fn output_between_markers_is_streamed_and_status_parsed() {
        let (console, shown) = feed_all(&[
            "boot noise",
            "@@CONVOY-VM-START@@",
            "hello",
            "",
            "@@CONVOY-VM-EXIT 3@@",
            "reboot: Power down",
        ]);
        assert_eq!(shown, vec!["hello"]);
        assert_eq!(console.exit_status, Some(3));
        assert!(console.fatal.is_none() && !console.panicked);
    }

    #[test]
    fn output_without_final_newline_keeps_its_text() {
        let (console, shown) = feed_all(&["@@CONVOY-VM-START@@", "partial@@CONVOY-VM-EXIT 0@@"]);
        assert_eq!(shown, vec!["partial"]);
        assert_eq!(console.exit_status, Some(0));
    }

    #[test]
    fn fatal_setup_and_panics_are_recorded_with_the_log() {
        let (console, shown) = feed_all(&[
            "@@CONVOY-VM-FATAL@@ cannot load kernel module kernel/fs/9p/9p.ko",
            "[    1.0] Kernel panic - not syncing: Attempted to kill init!",
        ]);
        assert!(shown.is_empty());
        assert_eq!(
            console.fatal.as_deref(),
            Some("cannot load kernel module kernel/fs/9p/9p.ko")
        );
        assert!(console.panicked);
        assert!(console.log_tail().contains("Kernel panic"));
        assert_eq!(console.exit_status, None);
    }
}
