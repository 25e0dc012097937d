//! `thin_metadata_size`: the dm-thin metadata-area estimate, with the arguments, units, output
//! and errors of thin-provisioning-tools 0.9.0. The logic lives in
//! [`convoy_setup::metadata_size`]; this prints its outcome.

use std::io::Write;
use std::process::ExitCode;

/// Runs `thin_metadata_size` with the arguments that follow the tool name.
pub fn main(args: &[String]) -> ExitCode {
    let outcome = convoy_setup::metadata_size::run(args);
    // A closed stdout (`| head -0`) is not worth a panic; the status still tells.
    let _ = std::io::stdout().write_all(outcome.stdout.as_bytes());
    let _ = std::io::stderr().write_all(outcome.stderr.as_bytes());
    ExitCode::from(outcome.status)
}
