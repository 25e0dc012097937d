//! `thin_metadata_size`. Not implemented yet in this build: it reports so and fails.

use std::process::ExitCode;

/// Runs `thin_metadata_size` with the arguments that follow the tool name.
pub fn main(_args: &[String]) -> ExitCode {
    eprintln!("thin_metadata_size: not implemented yet in this build");
    ExitCode::from(1)
}
