//! `thin_dump`. Not implemented yet in this build: it reports so and fails.

use std::process::ExitCode;

/// Runs `thin_dump` with the arguments that follow the tool name.
pub fn main(_args: &[String]) -> ExitCode {
    eprintln!("thin_dump: not implemented yet in this build");
    ExitCode::from(1)
}
