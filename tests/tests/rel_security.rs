//! Reliability suite, security: the daemon socket is root's only; names and symlinks cannot
//! reach outside the daemon's directories; credentials never show in logs or error messages; a
//! tampered backup block is detected on restore; and (in the guest, devicemapper) no byte of a
//! deleted volume is ever readable from a new one.

mod cli_support;
mod rel_support;

use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use cli_support::{convoy_bin, TestDaemon};
use convoy_e2e::DmDisks;
use rel_support::{by_scale, rng, Figure};

/// Runs `body`, emits the figure whatever happened, then lets a failure through.
fn guarded(fig: &mut Figure, body: impl FnOnce(&mut Figure)) {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(fig)));
    fig.emit();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Runs the convoy CLI as uid/gid 65534 (nobody) with no supplementary groups.
fn convoy_as_nobody(socket: &Path, args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
        ])
        .arg(convoy_bin())
        .arg("-s")
        .arg(socket)
        .args(args)
        .output()
        .expect("run setpriv")
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_host_security_socket_refuses_other_users() {
    let mut fig = Figure::new("security", "daemon socket and directories vs. another user");
    guarded(&mut fig, |fig| {
        let d = TestDaemon::start(&[]);
        d.ok(&["create", "mine"]);
        // Open the way to the socket so that only the socket's own permissions protect it
        // (the test's temp dir is 0700 by itself, which would hide a world-writable socket).
        for dir in [d.dir.path(), d.socket.parent().unwrap()] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let sock_meta = std::fs::metadata(&d.socket).unwrap();
        assert_eq!(
            sock_meta.uid(),
            0,
            "socket owned by uid {}",
            sock_meta.uid()
        );
        let sock_mode = mode(&d.socket);
        assert_eq!(
            sock_mode & 0o007,
            0,
            "socket is usable by others: {sock_mode:o}"
        );
        fig.checks += 1;
        for dir in [&d.root, &d.vols] {
            let m = mode(dir);
            assert_eq!(m & 0o002, 0, "{} is world-writable: {m:o}", dir.display());
            fig.checks += 1;
        }
        let root_mode = mode(&d.root);
        assert_eq!(
            root_mode & 0o077,
            0,
            "root dir {} is {root_mode:o}",
            d.root.display()
        );
        fig.checks += 1;

        let attempts: &[&[&str]] = &[
            &["info"],
            &["list"],
            &["create", "intruder"],
            &["delete", "mine"],
            &["inspect", "mine"],
            &["snapshot", "create", "mine"],
        ];
        for args in attempts {
            fig.trials += 1;
            let out = convoy_as_nobody(&d.socket, args);
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                !out.status.success(),
                "uid 65534 ran convoy {args:?}: {text}"
            );
            assert!(
                text.to_lowercase().contains("permission denied"),
                "uid 65534 convoy {args:?}: not a permission error: {text}"
            );
            fig.checks += 1;
        }
        // A raw connect as nobody (not through the CLI).
        fig.trials += 1;
        let py = format!(
            "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ntry:\n s.connect({:?})\n print('connected')\nexcept PermissionError:\n print('denied')\n",
            d.socket.display()
        );
        let out = Command::new("setpriv")
            .args([
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                "--",
            ])
            // The system interpreter: a user-installed one (pyenv) may not be readable by uid 65534.
            .args(["/usr/bin/python3", "-c", &py])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "denied",
            "raw connect as uid 65534: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        fig.checks += 1;
        // Nothing changed, the daemon is fine.
        let list = d.json(&["list"]);
        let names: Vec<&String> = list.as_object().unwrap().keys().collect();
        assert_eq!(names, ["mine"], "{list}");
        fig.checks += 1;
    });
}

/// A directory outside the daemon's with a file whose content must never change or vanish.
struct Sentinel {
    _dir: tempfile::TempDir,
    path: PathBuf,
    file: PathBuf,
    content: Vec<u8>,
}

impl Sentinel {
    fn new(seed: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outside");
        std::fs::create_dir(&path).unwrap();
        let file = path.join("precious");
        let content = format!("precious-{seed}").into_bytes();
        std::fs::write(&file, &content).unwrap();
        Sentinel {
            _dir: dir,
            path,
            file,
            content,
        }
    }

    fn intact(&self) -> bool {
        std::fs::read(&self.file).is_ok_and(|c| c == self.content)
            && std::fs::read_dir(&self.path).unwrap().count() == 1
    }
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_host_security_names_and_symlinks_stay_inside() {
    let mut fig = Figure::new("security", "names, symlinks and mount points stay inside");
    guarded(&mut fig, |fig| {
        let mut r = rng("security-symlinks");
        let s = Sentinel::new(r.u64(..));
        let d = TestDaemon::start(&[]);
        let dest = format!("vfs://{}", d.dir.path().join("store").display());

        // A volume whose content points outside (as a container could make it): snapshot,
        // back up, restore and delete must copy or remove the links, never what they point to.
        let vol = d.ok(&["create", "linky"]);
        let dir = d.vols.join(&vol);
        symlink(&s.path, dir.join("to-dir")).unwrap();
        symlink(&s.file, dir.join("to-file")).unwrap();
        symlink("../../../../../../..", dir.join("to-root")).unwrap();
        std::fs::write(dir.join("own"), b"own data").unwrap();
        d.ok(&["snapshot", "create", &vol, "--name", "linky-s1"]);
        fig.trials += 1;
        let url = d.ok(&["backup", "create", "linky-s1", "--dest", &dest]);
        fig.trials += 1;
        let restored = d.ok(&["create", "linky-r", "--backup", &url]);
        fig.trials += 1;
        let rdir = d.vols.join(&restored);
        for link in ["to-dir", "to-file", "to-root"] {
            let m = std::fs::symlink_metadata(rdir.join(link)).unwrap();
            assert!(m.file_type().is_symlink(), "{link} restored as a non-link");
            fig.checks += 1;
        }
        assert_eq!(std::fs::read(rdir.join("own")).unwrap(), b"own data");
        assert!(s.intact(), "the outside dir changed after backup/restore");
        fig.checks += 2;
        for name in ["linky-r", "linky"] {
            d.ok(&["delete", name]);
            fig.trials += 1;
            assert!(
                s.intact(),
                "deleting {name} touched what its symlinks point to"
            );
            fig.checks += 1;
        }

        // A volume directory that is already a symlink to outside (planted in the vfs path):
        // creating that volume must not adopt the outside directory, deleting must not empty it.
        fig.trials += 1;
        symlink(&s.path, d.vols.join("planted")).unwrap();
        let out = d.convoy(&["create", "planted"]);
        if out.status.success() {
            let m = std::fs::symlink_metadata(d.vols.join("planted")).unwrap();
            assert!(
                !m.file_type().is_symlink(),
                "volume 'planted' was created through a symlink to {}",
                s.path.display()
            );
            d.ok(&["delete", "planted"]);
        }
        assert!(
            s.intact(),
            "a planted symlink let the daemon touch the outside dir"
        );
        fig.checks += 1;

        // Mount point overrides: the vfs driver mounts nowhere but the volume's own directory.
        d.ok(&["create", "mnt1"]);
        for at in [
            s.path.to_str().unwrap(),
            "/etc",
            "../../../tmp",
            "relative",
            "",
        ] {
            fig.inputs += 1;
            let out = d.convoy(&["mount", "mnt1", "--mountpoint", at]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            if out.status.success() {
                // An empty override means the default mount point.
                assert_eq!(
                    text.trim(),
                    d.vols.join("mnt1").to_str().unwrap(),
                    "mount at {at:?}"
                );
                d.ok(&["umount", "mnt1"]);
            }
            assert!(s.intact());
            fig.checks += 1;
        }
        let docker = d.docker(
            "/VolumeDriver.Mount",
            &format!(r#"{{"Name":"mnt1","ID":"{}"}}"#, cli_support::docker_id()),
        );
        let mp = docker["Mountpoint"].as_str().unwrap_or_default();
        assert!(
            Path::new(mp).starts_with(&d.vols),
            "Docker mount point {mp} outside"
        );
        fig.checks += 1;

        // `..` names never reach a path: the store and the vols dir hold only what we made.
        for name in ["..", "../x", "a/../../y", "."] {
            fig.inputs += 1;
            assert!(
                !d.convoy(&["create", name]).status.success(),
                "create {name:?}"
            );
            assert!(!d
                .convoy(&["snapshot", "create", "mnt1", "--name", name])
                .status
                .success());
            let bad = format!("{dest}?backup={name}&volume=mnt1");
            assert!(!d.convoy(&["backup", "inspect", &bad]).status.success());
            fig.checks += 3;
        }
        assert!(!d.dir.path().join("x").exists() && !d.dir.path().join("y").exists());
        assert!(s.intact());
        fig.checks += 2;
    });
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_host_security_credentials_never_printed() {
    let mut fig = Figure::new("security", "S3 credentials in logs and error messages");
    guarded(&mut fig, |fig| {
        let mut r = rng("security-creds");
        let secret = format!("SeCrEt{:016x}Key", r.u64(..));
        let token = format!("ToKeN{:016x}", r.u64(..));
        let key_id = "AKIAHOSTILETEST00001";
        // The daemon gets the credentials from its environment, as documented.
        let d = {
            let saved: Vec<_> = [
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN",
                "RUST_LOG",
            ]
            .iter()
            .map(|k| (k, std::env::var_os(k)))
            .collect();
            std::env::set_var("AWS_ACCESS_KEY_ID", key_id);
            std::env::set_var("AWS_SECRET_ACCESS_KEY", &secret);
            std::env::set_var("AWS_SESSION_TOKEN", &token);
            std::env::set_var("RUST_LOG", "trace");
            let d = TestDaemon::start(&[]);
            for (k, v) in saved {
                match v {
                    Some(v) => std::env::set_var(k, v),
                    None => std::env::remove_var(k),
                }
            }
            d
        };
        d.ok(&["create", "credvol"]);
        d.ok(&["snapshot", "create", "credvol", "--name", "creds1"]);
        // A listening port with nothing behind it, and a closed one.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let endpoint = format!("http://127.0.0.1:{closed}");
        let mut outputs = Vec::new();
        let attempts: Vec<Vec<String>> = vec![
            vec![
                "backup",
                "create",
                "creds1",
                "--dest",
                "s3://convoy-bkt@us-east-1/p",
            ],
            vec!["backup", "list", "s3://convoy-bkt@us-east-1/p"],
            vec![
                "backup",
                "inspect",
                "s3://convoy-bkt@us-east-1/p?backup=b&volume=credvol",
            ],
            vec![
                "backup",
                "delete",
                "s3://nosuch-bucket/p?backup=b&volume=credvol",
            ],
            vec![
                "create",
                "credr",
                "--backup",
                "s3://nosuch-bucket/p?backup=b&volume=credvol",
            ],
            vec!["backup", "create", "creds1", "--dest", "s3://BAD_BUCKET/p"],
        ]
        .into_iter()
        .map(|v| v.into_iter().map(String::from).collect())
        .collect();
        for mut args in attempts {
            if args[0] == "backup" {
                args.insert(1, format!("--s3-endpoint={endpoint}"));
            }
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = d.convoy(&argv);
            fig.trials += 1;
            assert!(
                !out.status.success(),
                "convoy {argv:?} succeeded against a closed port"
            );
            outputs.push(format!(
                "convoy {argv:?}:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        // Credentials typed into a URL by mistake are not echoed either.
        let in_url = format!("s3://{key_id}:{secret}@convoy-bkt/p");
        let out = d.convoy(&["backup", "list", &in_url]);
        fig.trials += 1;
        assert!(!out.status.success());
        outputs.push(format!(
            "convoy backup list <url with secret>:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
        outputs.push(format!("convoy info:\n{}", d.ok(&["info"])));
        outputs.push(format!("daemon log:\n{}", d.log()));
        for text in &outputs {
            for s in [&secret, &token] {
                assert!(!text.contains(s.as_str()), "a secret leaked in {text}");
                fig.checks += 1;
            }
        }
        // The errors still say what failed (an unreachable endpoint).
        assert!(
            outputs[0].contains("127.0.0.1") || outputs[0].to_lowercase().contains("connect"),
            "{}",
            outputs[0]
        );
        fig.checks += 1;
    });
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_host_security_tampered_block_detected() {
    let mut fig = Figure::new("security", "tampered backup block detected on restore");
    guarded(&mut fig, |fig| {
        let mut r = rng("security-tamper");
        let d = TestDaemon::start(&[]);
        let store = d.dir.path().join("store");
        let dest = format!("vfs://{}", store.display());
        for trial in 0..by_scale(3, 20) {
            fig.trials += 1;
            let vol = format!("tamper{trial}");
            d.ok(&["create", &vol]);
            let data: Vec<u8> = (0..r.usize(100_000..3_000_000)).map(|_| r.u8(..)).collect();
            std::fs::write(d.vols.join(&vol).join("data.bin"), &data).unwrap();
            let snap = format!("{vol}-s");
            d.ok(&["snapshot", "create", &vol, "--name", &snap]);
            let url = d.ok(&["backup", "create", &snap, "--dest", &dest]);
            // The packs this backup references (refs/<pack>/<volume>+<backup>).
            let backup = url
                .split("backup=")
                .nth(1)
                .unwrap()
                .split('&')
                .next()
                .unwrap();
            let mut ids: Vec<String> = std::fs::read_dir(store.join("refs"))
                .unwrap()
                .flatten()
                .filter(|e| e.path().join(format!("{vol}+{backup}")).exists())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect();
            ids.sort();
            assert!(!ids.is_empty(), "no pack references for {url}");
            let id = &ids[r.usize(..ids.len())];
            let block = store.join("packs").join(&id[..2]).join(id);
            let mut bytes = std::fs::read(&block).unwrap();
            // A byte of the blocks area (after the 16-byte header, before the pack's own
            // index and 48-byte trailer, which a restore does not read).
            let n = bytes.len();
            let count = u32::from_le_bytes(bytes[n - 48..n - 44].try_into().unwrap()) as usize;
            let at = r.usize(16..n - 48 - 44 * count);
            bytes[at] ^= 1 << r.u8(..8);
            std::fs::write(&block, &bytes).unwrap();
            fig.faults += 1;

            let restored = format!("{vol}-r");
            let out = d.convoy(&["create", &restored, "--backup", &url]);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                !out.status.success(),
                "restore from a tampered pack {id} (byte {at}) succeeded: {stdout}"
            );
            assert!(
                stdout.contains("is corrupt") && stdout.contains("offset"),
                "the restore error does not name the corrupt block and its offset: {stdout}"
            );
            fig.checks += 2;
            let list = d.json(&["list"]);
            assert!(
                list.get(&restored).is_none(),
                "{restored} listed after a failed restore"
            );
            assert!(
                !d.vols.join(&restored).exists(),
                "{restored} directory left behind"
            );
            fig.checks += 2;
            d.ok(&["delete", &vol]);
        }
    });
}

/// How many 512-byte sectors of `data` start with `marker`. The pattern was written sector by
/// sector and every thin block is a whole number of sectors, so old data that shows up in a new
/// volume shows up sector-aligned.
fn occurrences(data: &[u8], marker: &[u8]) -> usize {
    data.chunks(512).filter(|s| s.starts_with(marker)).count()
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_vm_security_deleted_data_not_visible() {
    let mut fig = Figure::new("security", "deleted volume data never in a new volume");
    guarded(&mut fig, |fig| {
        let mut r = rng("security-deleted");
        let disks = DmDisks::new("cvs", 1 << 30, 64 << 20);
        let tag = disks.tag.clone();
        let d = TestDaemon::start_with(&[], |_| disks.daemon_flags(&["dm.defaultvolumesize=64M"]));
        // A 512-byte pattern block with a seeded marker; the whole old volume is filled with it.
        let marker = format!("CONVOY-DELETED-{:016x}", r.u64(..)).into_bytes();
        let mut block = marker.clone();
        block.resize(512, 0xa5);
        let rounds = by_scale(2, 5);
        for round in 0..rounds {
            fig.trials += 1;
            let old = format!("{tag}-old{round}");
            d.ok(&["create", &old, "--size", "64M"]);
            let dev = d.json(&["inspect", &old])["DriverInfo"]["Device"]
                .as_str()
                .unwrap()
                .to_string();
            let fill: Vec<u8> = block.repeat((64 << 20) / 512);
            std::fs::write(&dev, &fill).unwrap_or_else(|e| panic!("write {dev}: {e}"));
            let back = std::fs::read(&dev).unwrap();
            assert_eq!(
                occurrences(&back, &marker),
                (64 << 20) / 512,
                "pattern not written"
            );
            d.ok(&["delete", &old]);
            // New volumes take the freed space: read every byte of each, raw and after a mount.
            for n in 0..3 {
                let new = format!("{tag}-new{round}-{n}");
                d.ok(&["create", &new, "--size", "64M"]);
                let mp = d.ok(&["mount", &new]);
                std::fs::write(Path::new(&mp).join("small"), b"x").unwrap();
                d.ok(&["umount", &new]);
                let dev = d.json(&["inspect", &new])["DriverInfo"]["Device"]
                    .as_str()
                    .unwrap()
                    .to_string();
                let bytes = std::fs::read(&dev).unwrap_or_else(|e| panic!("read {dev}: {e}"));
                assert_eq!(bytes.len(), 64 << 20, "{dev} size");
                let found = occurrences(&bytes, &marker);
                fig.checks += 1;
                if found > 0 {
                    panic!("round {round}: {found} blocks of deleted volume {old} readable in {new} (seed {})", rel_support::seed());
                }
            }
            for n in 0..3 {
                d.ok(&["delete", &format!("{tag}-new{round}-{n}")]);
            }
        }
    });
}
