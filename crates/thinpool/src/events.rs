//! Device-mapper events: the pool's low-water mark
//! ([`crate::PoolConfig::with_low_water_free_percent`]) crossed, a pool out of space or gone
//! read-only.
//!
//! The kernel reports events through the control device: an open `/dev/mapper/control` polls
//! readable once any device has raised an event since it was opened (or last armed). So
//! [`PoolEvents::arm`] opens it, the caller reads what it wants to watch (the pool's status),
//! then [`ArmedEvents::wait`] sleeps until an event or a timeout; no event raised after the
//! open is missed. An event of another device wakes the waiter too, which costs one status
//! read.

use std::fs::File;
use std::os::fd::AsFd;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::error::{Error, Result};
use crate::pool::ThinPool;

/// The control device events are polled on.
const CONTROL: &str = "/dev/mapper/control";

/// Where a pool's events come from.
#[derive(Debug, Clone)]
pub struct PoolEvents {
    pool: String,
}

/// A control device opened to wait for events raised since.
#[derive(Debug)]
pub struct ArmedEvents {
    control: File,
}

impl ThinPool {
    /// This pool's event source.
    pub fn events(&self) -> PoolEvents {
        PoolEvents {
            pool: self.name().to_owned(),
        }
    }
}

impl PoolEvents {
    /// The pool's device-mapper name.
    pub fn pool(&self) -> &str {
        &self.pool
    }

    /// Starts watching: events raised from now on wake [`ArmedEvents::wait`].
    ///
    /// # Errors
    /// [`Error::Io`] when the control device cannot be opened.
    pub fn arm(&self) -> Result<ArmedEvents> {
        let control = File::open(CONTROL).map_err(|source| Error::Io {
            operation: "open (to wait for events of a pool)",
            path: CONTROL.into(),
            source,
        })?;
        Ok(ArmedEvents { control })
    }
}

impl ArmedEvents {
    /// Waits up to `timeout` (at most about a minute) for an event raised since the arming:
    /// `true` when one was, `false` at the timeout. Blocks the calling thread.
    ///
    /// # Errors
    /// [`Error::Io`] when `poll` fails.
    pub fn wait(&self, timeout: Duration) -> Result<bool> {
        let mut fds = [PollFd::new(self.control.as_fd(), PollFlags::POLLIN)];
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) => Ok(n > 0),
            Err(nix::errno::Errno::EINTR) => Ok(false),
            Err(e) => Err(Error::Io {
                operation: "poll (waiting for pool events)",
                path: CONTROL.into(),
                source: e.into(),
            }),
        }
    }
}
