//! `thin_delta`. Not implemented yet in this build: it reports so and fails.

use std::process::ExitCode;

/// Runs `thin_delta` with the arguments that follow the tool name.
pub fn main(_args: &[String]) -> ExitCode {
    eprintln!("thin_delta: not implemented yet in this build");
    ExitCode::from(1)
}
