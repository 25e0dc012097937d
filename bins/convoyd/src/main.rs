//! The `convoyd` binary: the convoy daemon alone, same flags and behaviour as `convoy daemon`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use convoy_daemon::{launch, DaemonArgs};

/// The convoy daemon: serves the convoy CLI and Docker's volume plugin protocol on a unix socket
/// (and, with `--csi-endpoint`, the CSI services on another).
#[derive(Debug, Parser)]
#[command(name = "convoyd", version)]
struct Cli {
    /// The socket to listen on.
    #[arg(short = 's', long, value_name = "PATH", default_value = convoy_api::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Debug logs.
    #[arg(long)]
    debug: bool,
    #[command(flatten)]
    daemon: DaemonArgs,
    #[command(flatten)]
    csi: convoy_csi::launch::CsiArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|runtime| {
            runtime.block_on(async {
                launch::init_logging(cli.daemon.log.as_deref(), cli.debug)
                    .map_err(|e| e.to_string())?;
                match cli.csi.options()? {
                    // The CSI services in this process, on the same pool (docs/csi.md).
                    Some(csi) => convoy_csi::launch::serve(
                        &cli.daemon,
                        &cli.socket,
                        &csi,
                        launch::shutdown_signal(),
                    )
                    .await
                    .map_err(|e| e.to_string()),
                    None => launch::serve(&cli.daemon, &cli.socket, launch::shutdown_signal())
                        .await
                        .map_err(|e| e.to_string()),
                }
            })
        });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // `{"Error": ...}` on standard output, as the convoy CLI prints errors.
            let error = convoy_api::wire::ErrorResponse { error: message };
            let text = serde_json::to_string_pretty(&error).unwrap_or_default();
            println!("{text}");
            ExitCode::FAILURE
        }
    }
}
