//! Reliability suite, concurrency (issue 8): Docker mount/unmount storms against a real
//! `dockerd` using convoy (vfs driver) as its volume plugin. Many `docker run --rm -v vol:/data`
//! containers at once on a few volumes, while raw plugin Mount/Unmount calls with random IDs hit
//! the same volumes; afterwards every volume is unmounted, no Docker reference is left (also
//! across a convoy restart) and every container's write is there.

mod cli_support;
mod docker_support;
mod rel_concurrency_rig;
mod rel_support;

use cli_support::TestDaemon;
use docker_support::{find_program, import_busybox, Dockerd, PluginSpec};
use rel_concurrency_rig::{assert_released, mount_storm};
use rel_support::{by_scale, rng, Figure};

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_docker_storm_mounts() {
    let dockerd =
        find_program("dockerd").expect("dockerd is not installed (apt-get install docker.io)");
    let (runs, parallel) = by_scale((12usize, 4usize), (100, 8));
    let mut rng = rng("docker-storm");
    let mut convoy = TestDaemon::start(&[]);
    let plugin = format!("convoystorm{}", std::process::id());
    let _spec = PluginSpec::register(&plugin, &convoy.socket);
    let dir = tempfile::tempdir().unwrap();
    let docker = Dockerd::start(dir.path(), &dockerd);
    let image = "convoy-storm-busybox";
    import_busybox(&docker, &convoy, dir.path(), image);
    let volumes: Vec<String> = (0..3).map(|i| format!("dstorm{i}")).collect();
    for v in &volumes {
        docker.ok(&["volume", "create", "-d", &plugin, v], &convoy);
    }
    let mut figure = Figure::new(
        "concurrency",
        format!("{runs} docker run -v with {parallel} at once, raw Mount/Unmount storm alongside"),
    );
    let plan: Vec<(usize, String)> = (0..runs)
        .map(|i| (i, volumes[rng.usize(..volumes.len())].clone()))
        .collect();
    let docker = std::sync::Arc::new(docker);
    let failures = std::sync::Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let (calls, mut checks) = std::thread::scope(|s| {
        for _ in 0..parallel {
            s.spawn(|| loop {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some((i, v)) = plan.get(k) else { break };
                let script = format!("echo run-{i} > /data/run-{i} && cat /data/run-{i}");
                let out = docker.run(&[
                    "run",
                    "--rm",
                    "--network",
                    "none",
                    "-v",
                    &format!("{v}:/data"),
                    image,
                    "sh",
                    "-c",
                    &script,
                ]);
                let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if !out.status.success() || stdout != format!("run-{i}") {
                    failures.lock().unwrap().push(format!(
                        "run {i} on {v}: {}: {stdout} {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
            });
        }
        // Raw plugin calls with random IDs on the same volumes, at the same time.
        let (threads, ops) = by_scale((2, 30), (4, 150));
        mount_storm(&convoy, &volumes, threads, ops)
    });
    let failures = failures.into_inner().unwrap();
    let mut written = 0u64;
    for (i, v) in &plan {
        let file = convoy.vols.join(v).join(format!("run-{i}"));
        if std::fs::read_to_string(&file).ok().as_deref() == Some(&format!("run-{i}\n")) {
            written += 1;
        }
    }
    let left = docker.ok(&["ps", "-aq"], &convoy);
    let released = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert_released(&mut convoy, &volumes)
    }));
    if let Ok(n) = &released {
        checks += n;
    }
    figure.trials = runs as u64;
    figure.checks = checks + written + u64::from(left.is_empty());
    figure.lost = runs as u64 - written;
    figure
        .set("parallel_containers", parallel as u64)
        .set("raw_plugin_calls", calls)
        .set("failed_runs", failures.len() as u64);
    figure.emit();
    if let Err(panic) = released {
        std::panic::resume_unwind(panic);
    }
    let seed = rel_support::seed();
    assert!(
        failures.is_empty(),
        "docker runs failed (seed {seed}): {failures:#?}"
    );
    assert_eq!(
        written, runs as u64,
        "container writes missing (seed {seed})"
    );
    assert!(left.is_empty(), "containers left: {left}");
    for v in &volumes {
        docker.ok(&["volume", "rm", v], &convoy);
    }
}
