//! Waiting for and signalling a jail's first process through its pidfd.

use std::io::{self, Read};
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::process::{Signal, WaitId, WaitIdOptions};
use serde::Serialize;

/// How a jail's first process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

impl ExitStatus {
    /// The shell convention: the exit code, or 128 + the signal number.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Exited(code) => code,
            ExitStatus::Signaled(signal) => 128 + signal,
        }
    }

    pub fn success(self) -> bool {
        self == ExitStatus::Exited(0)
    }
}

/// Kills the jail's first process, and with it (PID 1 of its namespace) every process
/// in the jail. Killing a process that has already exited is not an error.
pub fn kill(pidfd: BorrowedFd<'_>) -> io::Result<()> {
    match rustix::process::pidfd_send_signal(pidfd, Signal::KILL) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Reaps the process if it has exited; `None` while it runs.
pub fn try_wait(pidfd: BorrowedFd<'_>) -> io::Result<Option<ExitStatus>> {
    wait_with(pidfd, WaitIdOptions::EXITED | WaitIdOptions::NOHANG)
}

/// Whether the process has exited, without reaping it (its status stays for `wait`).
pub fn has_exited(pidfd: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(wait_with(pidfd, WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT)?.is_some())
}

/// Blocks until the process exits and reaps it.
pub fn wait(pidfd: BorrowedFd<'_>) -> io::Result<ExitStatus> {
    loop {
        if let Some(status) = wait_with(pidfd, WaitIdOptions::EXITED)? {
            return Ok(status);
        }
    }
}

fn wait_with(pidfd: BorrowedFd<'_>, options: WaitIdOptions) -> io::Result<Option<ExitStatus>> {
    let status = loop {
        match rustix::process::waitid(WaitId::PidFd(pidfd), options) {
            Err(rustix::io::Errno::INTR) => continue,
            other => break other?,
        }
    };
    Ok(status.and_then(|s| {
        if let Some(code) = s.exit_status() {
            Some(ExitStatus::Exited(code))
        } else {
            s.terminating_signal().map(ExitStatus::Signaled)
        }
    }))
}

/// Blocks until the jail has executed its program (`Ok`) or reported why it could not.
pub fn wait_setup(setup: OwnedFd) -> Result<(), String> {
    let mut reason = String::new();
    let mut file = std::fs::File::from(setup);
    match file.read_to_string(&mut reason) {
        Ok(_) if reason.is_empty() => Ok(()),
        Ok(_) => Err(reason),
        Err(e) => Err(format!("reading the jail's setup result: {e}")),
    }
}
