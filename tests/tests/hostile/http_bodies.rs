//! Malformed, huge and mistyped HTTP bodies sent to the daemon's socket.

use super::*;

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_host_hostile_http_bodies_refused() {
    let mut run = Run {
        fig: Figure::new("hostile-input", "malformed, huge and mistyped HTTP bodies"),
    };
    guarded(&mut run, http_bodies);
}

fn http_bodies(run: &mut Run) {
    let d = TestDaemon::start(&[]);
    d.ok(&["create", "good1"]);
    let before = tree(d.dir.path());
    let mut r = rng("hostile-http");

    let v1_posts = [
        "/v1/volumes/create",
        "/v1/volumes/mount",
        "/v1/volumes/umount",
        "/v1/snapshots/create",
        "/v1/backups/create",
    ];
    let plugin = [
        "/VolumeDriver.Create",
        "/VolumeDriver.Remove",
        "/VolumeDriver.Mount",
        "/VolumeDriver.Unmount",
        "/VolumeDriver.Path",
        "/VolumeDriver.Get",
    ];
    let mut bodies: Vec<Vec<u8>> = [
        "{",
        "}",
        "[]",
        "null",
        "\"good1\"",
        "42",
        "{\"Name\":}",
        "{\"Name\":\"a\",}",
        "{\"Name\":5}",
        "{\"Name\":null,\"VolumeName\":[1,2]}",
        "{\"Name\":{\"x\":1},\"VolumeName\":{}}",
        "{\"VolumeName\":true,\"Name\":false}",
        "{\"Name\":\"\\ud800\"}",
        "{\"Name\":\"a\"}{\"Name\":\"b\"}",
        "{\"Name\":\"good1\",\"Name\":\"../x\"}",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    bodies.push(vec![0xff, 0xfe, b'{', 0x80]);
    bodies.push(b"{\"Name\":\"\xc3\x28\"}".to_vec());
    // Deep nesting (a recursion bomb for naive parsers).
    let depth = by_scale(10_000, 100_000);
    bodies.push(format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes());
    bodies.push(format!("{{\"Name\":{}1{}}}", "[".repeat(depth), "]".repeat(depth)).into_bytes());
    // Random bytes, seeded.
    for _ in 0..by_scale(20, 200) {
        let len = r.usize(1..512);
        bodies.push((0..len).map(|_| r.u8(..)).collect());
    }
    for body in &bodies {
        for path in v1_posts {
            run.api_refused(&d, "POST", path, body);
        }
        for path in plugin {
            run.plugin_refused(&d, path, body);
        }
    }
    run.alive(&d, &["good1"]);

    // Huge bodies: a 64 MiB name, 64 MiB of spaces then JSON, 64 MiB of garbage. Refused (4xx)
    // or the connection closed; either way the daemon stays up and nothing is created.
    let mb = by_scale(64, 256);
    let big_name = format!("{{\"Name\":\"{}\"}}", "v".repeat(mb << 20));
    let spaces = format!("{}{{\"Name\":\"huge1\"}}", " ".repeat(mb << 20));
    let garbage: Vec<u8> = (0..(mb << 20)).map(|i| (i * 31 % 251) as u8).collect();
    for body in [big_name.as_bytes(), spaces.as_bytes(), &garbage[..]] {
        for (method, path) in [
            ("POST", "/v1/volumes/create"),
            ("POST", "/VolumeDriver.Create"),
        ] {
            run.input();
            if let Some((status, text)) = http(&d.socket, method, path, body) {
                let text = &text[..text.len().min(300)];
                if path.starts_with("/v1") {
                    assert!(
                        (400..500).contains(&status),
                        "{path} huge body: {status} {text}"
                    );
                } else {
                    assert!(
                        (400..500).contains(&status)
                            || (text.contains("\"Err\":\"") && !text.contains("\"Err\":\"\"")),
                        "{path} huge body accepted: {status} {text}"
                    );
                }
            }
            run.check();
            run.alive(&d, &["good1"]);
        }
    }

    // A body shorter than its Content-Length, left hanging: other clients are still served.
    run.input();
    let mut hung = UnixStream::connect(&d.socket).unwrap();
    hung.write_all(
        b"POST /v1/volumes/create HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n{\"Na",
    )
    .unwrap();
    run.alive(&d, &["good1"]);
    drop(hung);

    // Malformed HTTP itself.
    for raw in [
        &b"GARBAGE\r\n\r\n"[..],
        b"POST /v1/volumes/create HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"POST /v1/volumes/create HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"POST /v1/volumes/create HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
        b"POST /../../etc/passwd HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        b"GET /v1/volumes/../../../ HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    ] {
        run.input();
        let mut s = UnixStream::connect(&d.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(raw).unwrap();
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer);
        let status: u16 = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(400);
        assert!(
            (400..500).contains(&status),
            "{:?}: {text}",
            String::from_utf8_lossy(raw)
        );
        run.check();
    }
    run.alive(&d, &["good1"]);

    let after = tree(d.dir.path());
    let new: Vec<_> = after.difference(&before).collect();
    assert!(new.is_empty(), "hostile bodies created files: {new:?}");
    run.check();
}
