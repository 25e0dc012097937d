//! convoy as a Docker managed plugin, against a real `dockerd`: `cargo xtask docker-plugin`
//! builds it from local files, `docker plugin create` installs it (no registry), then enable,
//! `docker volume create -d`, `docker run -v`, and the data survives a disable/enable.
//!
//! The plugin runs its default, the vfs driver under the propagated mount: the development
//! machine's kernel has no dm-thin (the devicemapper setting is documented in docs/docker.md).
//!
//! ```text
//! cargo test -p convoy-e2e --test docker_managed_plugin -- --ignored
//! ```

mod cli_support;
mod docker_support;

use std::path::Path;
use std::process::Command;

use docker_support::{find_program, Dockerd};

fn ok(docker: &Dockerd, args: &[&str]) -> String {
    let out = docker.run(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed ({}):\n{}{}\n--- dockerd log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        docker.log()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A one-binary busybox image.
fn import_image(docker: &Dockerd, dir: &Path, image: &str) {
    let rootfs = dir.join("image");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("apt-get install busybox-static");
    std::fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
    for tool in ["sh", "cat"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(tool)).unwrap();
    }
    let tar = dir.join("image.tar");
    convoy_e2e::run(
        "tar",
        &[
            "-C",
            rootfs.to_str().unwrap(),
            "-cf",
            tar.to_str().unwrap(),
            ".",
        ],
    );
    ok(docker, &["import", tar.to_str().unwrap(), image]);
}

/// Removes the plugin (and its volume) however the test ends.
struct Installed<'a> {
    docker: &'a Dockerd,
    name: String,
}

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        let _ = self.docker.run(&["volume", "rm", "-f", "managed1"]);
        let _ = self.docker.run(&["plugin", "disable", "-f", &self.name]);
        let _ = self.docker.run(&["plugin", "rm", "-f", &self.name]);
    }
}

#[test]
#[ignore = "needs root and dockerd (apt-get install docker.io): cargo test -p convoy-e2e --test docker_managed_plugin -- --ignored"]
fn docker_managed_plugin_install_enable_use_and_survive_disable() {
    let Some(dockerd) = find_program("dockerd") else {
        panic!("dockerd is not installed: apt-get install -y docker.io");
    };
    assert!(cli_support::is_root(), "dockerd needs root");
    let dir = tempfile::tempdir().unwrap();
    let docker = Dockerd::start(dir.path(), &dockerd);

    // The plugin directory, built by the xtask from this build's convoy binary.
    let plugin_dir = dir.path().join("plugin");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "run",
            "-q",
            "-p",
            "xtask",
            "--",
            "docker-plugin",
            "--no-create",
            "--binary",
        ])
        .arg(cli_support::convoy_bin())
        .arg("--out")
        .arg(&plugin_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(status.success(), "cargo xtask docker-plugin failed");
    assert!(plugin_dir.join("config.json").is_file());
    assert!(plugin_dir.join("rootfs/bin/convoy").is_file());

    let name = format!("convoytest-managed{}", std::process::id());
    ok(
        &docker,
        &["plugin", "create", &name, plugin_dir.to_str().unwrap()],
    );
    let _installed = Installed {
        docker: &docker,
        name: name.clone(),
    };
    ok(&docker, &["plugin", "enable", &name]);
    let image = "convoy-managed-busybox";
    import_image(&docker, dir.path(), image);

    ok(&docker, &["volume", "create", "-d", &name, "managed1"]);
    let listed = ok(
        &docker,
        &["volume", "ls", "--format", "{{.Driver}} {{.Name}}"],
    );
    assert!(listed.contains("managed1"), "{listed}");
    ok(
        &docker,
        &[
            "run",
            "--rm",
            "-v",
            "managed1:/data",
            image,
            "sh",
            "-c",
            "echo kept > /data/file",
        ],
    );
    let read = ok(
        &docker,
        &[
            "run",
            "--rm",
            "-v",
            "managed1:/data",
            image,
            "cat",
            "/data/file",
        ],
    );
    assert_eq!(read, "kept");

    // Disable (the daemon stops) and enable (a new daemon on the same saved root).
    ok(&docker, &["plugin", "disable", "-f", &name]);
    ok(&docker, &["plugin", "enable", &name]);
    let read = ok(
        &docker,
        &[
            "run",
            "--rm",
            "-v",
            "managed1:/data",
            image,
            "cat",
            "/data/file",
        ],
    );
    assert_eq!(read, "kept", "data lost across plugin disable/enable");
    let inspected = ok(&docker, &["volume", "inspect", "managed1"]);
    assert!(inspected.contains(&name), "{inspected}");
    ok(&docker, &["volume", "rm", "managed1"]);
}
