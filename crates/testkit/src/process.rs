//! Daemons a test starts (`convoy daemon`, `dockerd`, ...): started, waited for until they
//! serve, stopped.

use std::fmt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// A server process started by a test; stopped with SIGTERM and reaped when dropped.
///
/// The wait for it to serve is not a timing assertion: its limit only turns a hung start-up
/// into a failure, so give it minutes where the guest is slow.
#[derive(Debug)]
pub struct ServerProcess {
    child: Option<Child>,
}

/// Why a [`ServerProcess`] did not come up.
#[derive(Debug)]
pub enum StartFailure {
    /// It exited before it served: its status and whatever it wrote to piped stdout/stderr
    /// (empty for streams that were not piped).
    Exited(Output),
    /// It was still not serving when the limit passed; it has been killed.
    TimedOut(Duration),
}

impl fmt::Display for StartFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartFailure::Exited(out) => write!(
                f,
                "exited ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            StartFailure::TimedOut(limit) => write!(f, "not serving after {limit:?}"),
        }
    }
}

impl ServerProcess {
    /// Spawns `command` and waits until a connection to the unix socket `socket` succeeds
    /// (polled every 20 ms), for at most `limit`.
    pub fn start(
        command: &mut Command,
        socket: &Path,
        limit: Duration,
    ) -> Result<ServerProcess, StartFailure> {
        Self::start_until(command, limit, Duration::from_millis(20), || {
            std::os::unix::net::UnixStream::connect(socket).is_ok()
        })
    }

    /// Spawns `command` and polls `serving` every `poll` until it answers true, for at most
    /// `limit` (for servers whose readiness is not a unix socket accepting connections).
    /// Panics if the command cannot be started at all.
    pub fn start_until(
        command: &mut Command,
        limit: Duration,
        poll: Duration,
        mut serving: impl FnMut() -> bool,
    ) -> Result<ServerProcess, StartFailure> {
        let program = command.get_program().to_string_lossy().into_owned();
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let deadline = Instant::now() + limit;
        loop {
            if child.try_wait().expect("wait on server").is_some() {
                let out = child.wait_with_output().expect("server output");
                return Err(StartFailure::Exited(out));
            }
            if serving() {
                return Ok(ServerProcess { child: Some(child) });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(StartFailure::TimedOut(limit));
            }
            std::thread::sleep(poll);
        }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Its exit status if it has exited (reaped), `None` while it runs.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        child.try_wait().expect("wait on server")
    }

    /// Sends SIGTERM and waits for the process to exit; answers how it exited (`None` if it
    /// was stopped already).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        Some(child.wait().expect("wait on server"))
    }

    /// SIGKILL (no shutdown of any kind, as a crash), and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_the_socket_and_stops_with_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("s.sock");
        // The socket comes up a little after the process starts, as a daemon's does.
        let binder = {
            let socket = socket.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                std::os::unix::net::UnixListener::bind(socket).unwrap()
            })
        };
        let mut server = ServerProcess::start(
            Command::new("sleep").arg("60"),
            &socket,
            Duration::from_secs(30),
        )
        .unwrap();
        let _listener = binder.join().unwrap();
        assert!(server.try_wait().is_none());
        let status = server.stop().expect("was running");
        assert!(!status.success(), "killed by SIGTERM: {status}");
        assert!(server.stop().is_none());
    }

    #[test]
    fn an_exit_before_serving_is_reported_with_its_output() {
        let dir = tempfile::tempdir().unwrap();
        let failure = ServerProcess::start(
            Command::new("sh")
                .args(["-c", "echo bad flag >&2; exit 2"])
                .stderr(Stdio::piped()),
            &dir.path().join("never.sock"),
            Duration::from_secs(30),
        )
        .unwrap_err();
        match &failure {
            StartFailure::Exited(out) => assert_eq!(out.status.code(), Some(2)),
            other => panic!("{other}"),
        }
        assert!(failure.to_string().contains("bad flag"), "{failure}");
    }

    #[test]
    fn a_server_that_never_serves_times_out_and_is_killed() {
        let failure = ServerProcess::start_until(
            Command::new("sleep").arg("60"),
            Duration::from_millis(200),
            Duration::from_millis(20),
            || false,
        )
        .unwrap_err();
        assert!(matches!(failure, StartFailure::TimedOut(_)), "{failure}");
    }
}
