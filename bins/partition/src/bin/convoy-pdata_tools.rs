//! `convoy-pdata_tools`: persistent-data tools in one binary, dispatched on the first argument
//! (or on the name the binary was invoked by, as thin-provisioning-tools does):
//! `thin_metadata_size`, `thin_delta`, `thin_dump`.

use std::process::ExitCode;

#[path = "../pdata/thin_delta.rs"]
mod thin_delta;
#[path = "../pdata/thin_dump.rs"]
mod thin_dump;
#[path = "../pdata/thin_metadata_size.rs"]
mod thin_metadata_size;

const TOOLS: &str = "thin_metadata_size, thin_delta, thin_dump";

fn main() -> ExitCode {
    // Lossy rather than `std::env::args()`, which panics on an argument that is not UTF-8: the
    // tools then report the (replaced) argument as invalid instead of crashing.
    let mut args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let invoked = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("convoy-pdata_tools")
        .to_string();
    // Called through a symlink named after a tool: dispatch on that name.
    let tool = if invoked != "convoy-pdata_tools" {
        invoked
    } else if args.len() > 1 {
        args.remove(1)
    } else {
        eprintln!("usage: convoy-pdata_tools TOOL [ARGS...]   (tools: {TOOLS})");
        return ExitCode::from(1);
    };
    let rest = &args[1..];
    match tool.as_str() {
        "thin_metadata_size" => thin_metadata_size::main(rest),
        "thin_delta" => thin_delta::main(rest),
        "thin_dump" => thin_dump::main(rest),
        other => {
            eprintln!("convoy-pdata_tools: unknown tool '{other}' (tools: {TOOLS})");
            ExitCode::from(1)
        }
    }
}
