//! Real Docker: a `dockerd` started by hand uses convoy as its volume plugin, as a user's Docker
//! host would. Needs root and `dockerd` (`apt-get install docker.io`); no registry is needed —
//! the image is imported from a busybox-static root filesystem.
//!
//! Ignored by default (it needs root and dockerd, which a developer machine may lack). CI runs
//! it explicitly, and there a missing dockerd is a failure, not a skip:
//!
//! ```text
//! apt-get install -y docker.io busybox-static
//! cargo test -p convoy-e2e --test docker_real -- --ignored
//! ```

mod cli_support;
mod docker_support;

use std::process::Command;

use cli_support::TestDaemon;
use docker_support::{find_program, import_busybox, Dockerd, PluginSpec};

#[test]
#[ignore = "needs root and dockerd (apt-get install docker.io): cargo test -p convoy-e2e --test docker_real -- --ignored"]
fn docker_real_dockerd_volume_lifecycle() {
    let Some(dockerd) = find_program("dockerd") else {
        panic!("dockerd is not installed: apt-get install -y docker.io (this test was asked for with --ignored)");
    };
    let uid = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap();
    assert_eq!(
        uid.trim(),
        "0",
        "the real Docker test needs root (dockerd, /etc/docker/plugins)"
    );

    let convoy = TestDaemon::start(&[]);
    let plugin = format!("convoytest{}", std::process::id());
    let _spec = PluginSpec::register(&plugin, &convoy.socket);
    let dir = tempfile::tempdir().unwrap();
    let docker = Dockerd::start(dir.path(), &dockerd);
    let image = "convoy-test-busybox";
    import_busybox(&docker, &convoy, dir.path(), image);

    // docker volume create -d convoy -o size=... v
    let name = "dockervol";
    assert_eq!(
        docker.ok(
            &["volume", "create", "-d", &plugin, "-o", "size=64M", name],
            &convoy
        ),
        name
    );
    assert_eq!(convoy.json(&["inspect", name])["Name"], name);
    let ls = docker.ok(
        &["volume", "ls", "--format", "{{.Driver}} {{.Name}}"],
        &convoy,
    );
    assert!(ls.lines().any(|l| l == format!("{plugin} {name}")), "{ls}");
    let inspect = docker.ok(
        &["volume", "inspect", name, "--format", "{{.Driver}}"],
        &convoy,
    );
    assert_eq!(inspect, plugin);

    // Write in one container, read back in another.
    let volume_arg = format!("{name}:/data");
    docker.ok(
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &volume_arg,
            image,
            "sh",
            "-c",
            "echo x > /data/f",
        ],
        &convoy,
    );
    let read = docker.ok(
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &volume_arg,
            image,
            "cat",
            "/data/f",
        ],
        &convoy,
    );
    assert_eq!(read, "x");
    // Every Docker mount was released: convoy unmounted the volume after the last container.
    assert_eq!(
        convoy.json(&["inspect", name])["MountPoint"],
        "",
        "{}",
        convoy.log()
    );
    assert_eq!(
        std::fs::read_to_string(convoy.vols.join(name).join("f"))
            .ok()
            .as_deref(),
        Some("x\n")
    );

    // docker volume rm v deletes the convoy volume.
    docker.ok(&["volume", "rm", name], &convoy);
    assert!(convoy.fail(&["inspect", name]).contains(name));
    let ls = docker.ok(&["volume", "ls", "-q"], &convoy);
    assert!(!ls.lines().any(|l| l == name), "{ls}");
}
