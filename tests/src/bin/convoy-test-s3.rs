//! `convoy-test-s3 --dir DIR --port PORT`: the test rig's S3 server (`convoy_testkit::s3`,
//! s3s-fs) serving `DIR` (each subdirectory is a bucket) on `127.0.0.1:PORT` with the fixed test
//! credentials `convoy_testkit::S3_ACCESS_KEY` / `S3_SECRET_KEY`, as a separate process so that
//! the reliability suite can kill it with SIGKILL and start it again on the same port and
//! directory.
//!
//! Prints `listening on 127.0.0.1:PORT` once it accepts connections; runs until killed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

fn usage(problem: &str) -> ExitCode {
    eprintln!("convoy-test-s3: {problem}\nusage: convoy-test-s3 --dir DIR --port PORT");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut dir = None;
    let mut port = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--dir", Some(v)) => dir = Some(PathBuf::from(v)),
            ("--port", Some(v)) => match v.parse::<u16>() {
                Ok(p) => port = Some(p),
                Err(_) => return usage(&format!("--port {v:?} is not a port number")),
            },
            (other, _) => return usage(&format!("unexpected argument {other:?}")),
        }
    }
    let (Some(dir), Some(port)) = (dir, port) else {
        return usage("--dir and --port are required");
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("convoy-test-s3: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(dir, port)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("convoy-test-s3: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(dir: PathBuf, port: u16) -> Result<(), String> {
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let service = convoy_testkit::s3::service(&dir)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    // A restart right after a kill may find the port in TIME_WAIT: tokio's listener sets
    // SO_REUSEADDR, so binding succeeds.
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    println!("listening on {addr}");
    convoy_testkit::s3::serve(listener, service)
        .await
        .map_err(|e| format!("accept on {addr}: {e}"))
}
