//! The `convoy` binary: `convoy daemon ...` runs the daemon; every other command is a client of
//! it over the unix socket. Output and errors follow the original Convoy (see `docs/cli.md`).

mod cli;
mod output;
mod policy_cmd;
mod progress;
mod store_ops;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use convoy_api::client::Answer;
use convoy_api::wire::*;
use convoy_api::{size::parse_size, Client};

use cli::{BackupCommand, Cli, Command, SnapshotCommand};
use output::{print_error, print_json, print_line};
use progress::Watcher;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            print_error(&format!("cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            print_error(&format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

async fn execute(cli: Cli) -> anyhow::Result<()> {
    let client = Client::new(&cli.socket);
    if cli.debug && !matches!(cli.command, Command::Daemon(_)) {
        eprintln!("convoy: {:?} via {}", cli.command, cli.socket.display());
    }
    let verbose = cli.verbose;
    match cli.command {
        Command::Daemon(args) => {
            convoy_daemon::launch::init_logging(args.log.as_deref(), cli.debug)?;
            convoy_daemon::launch::serve(
                &args,
                &cli.socket,
                convoy_daemon::launch::shutdown_signal(),
            )
            .await
            .map_err(daemon_error)?;
        }
        Command::Info => print_json(&client.info().await?),
        Command::Create {
            name,
            driver,
            size,
            backup,
            grow,
            instant,
            snapshot,
            volume,
        } => {
            let size = size.as_deref().map(size_arg).transpose()?;
            if backup.as_deref().is_some_and(|b| b.trim().is_empty()) {
                // Left empty (an unset shell variable?) it would make an empty volume where a
                // restore was asked for.
                anyhow::bail!(
                    "--backup needs a backup URL; leave it out to create an empty volume"
                );
            }
            let request = VolumeCreateRequest {
                name: name.unwrap_or_default(),
                driver_name: driver.unwrap_or_default(),
                size,
                backup_url: backup.clone().unwrap_or_default(),
                s3_endpoint: String::new(),
                snapshot_name: snapshot.unwrap_or_default(),
                source_volume_name: volume.unwrap_or_default(),
                grow,
                instant,
                // JSON from either daemon; printed bare below unless --verbose.
                verbose: Some(true),
            };
            let volume: VolumeResponse = match &backup {
                Some(url) => {
                    let mut watcher = Watcher::start(format!("restoring {url}"));
                    let result = client
                        .call_with_progress(
                            convoy_api::routes::VOLUMES_CREATE,
                            &request,
                            &mut |u| watcher.update(u),
                        )
                        .await;
                    watcher.done(result.is_ok());
                    let answer: Answer<VolumeResponse> = result?;
                    answer.or_bare(|name| VolumeResponse {
                        name,
                        ..Default::default()
                    })
                }
                None => client.create_volume(&request).await?,
            };
            if verbose {
                print_json(&volume);
            } else {
                print_line(&volume.name);
            }
        }
        Command::Delete { names, reference } => {
            let mut failures = Vec::new();
            for name in names {
                let request = VolumeDeleteRequest {
                    volume_name: name,
                    reference_only: reference,
                };
                if let Err(e) = client.delete_volume(&request).await {
                    failures.push(e.to_string());
                }
            }
            if !failures.is_empty() {
                anyhow::bail!("{}", failures.join("; "));
            }
        }
        Command::Mount { name, mountpoint } => {
            let request = VolumeMountRequest {
                volume_name: name,
                mount_point: mountpoint.unwrap_or_default(),
                verbose: Some(true),
            };
            let volume = client.mount_volume(&request).await?;
            if verbose {
                print_json(&volume);
            } else {
                print_line(&volume.mount_point);
            }
        }
        Command::Umount { name } => client.umount_volume(&name).await?,
        Command::Expand { name, size } => {
            let request = convoy_api::wire::VolumeExpandRequest {
                volume_name: name,
                size: Some(size_arg(&size)?),
            };
            let volume = client.expand_volume(&request).await?;
            if verbose {
                print_json(&volume);
            } else {
                print_line(&volume.name);
            }
        }
        Command::List { driver } => {
            print_json(&client.list_volumes(driver.as_deref().unwrap_or("")).await?)
        }
        Command::Inspect { name } => print_json(&client.inspect_volume(&name).await?),
        Command::Snapshot(command) => snapshot(&client, command, verbose).await?,
        Command::Backup(args) => {
            let endpoint = args.s3_endpoint.unwrap_or_default();
            backup(&client, args.command, endpoint, &args.key, verbose).await?
        }
        Command::Policy(command) => policy_cmd::policy(&client, command, verbose).await?,
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "convoy", &mut std::io::stdout())
        }
    }
    Ok(())
}

async fn snapshot(client: &Client, command: SnapshotCommand, verbose: bool) -> anyhow::Result<()> {
    match command {
        SnapshotCommand::Create { volume, name } => {
            let request = SnapshotCreateRequest {
                name: name.unwrap_or_default(),
                volume_name: volume,
                verbose: Some(true),
            };
            let snapshot = client.create_snapshot(&request).await?;
            if verbose {
                print_json(&snapshot);
            } else {
                print_line(&snapshot.name);
            }
        }
        SnapshotCommand::Delete { snapshot } => client.delete_snapshot(&snapshot).await?,
        SnapshotCommand::Revert { snapshot } => {
            let volume = client.revert_snapshot(&snapshot).await?;
            if verbose {
                print_json(&volume);
            } else {
                print_line(&volume.name);
            }
        }
        SnapshotCommand::Inspect { snapshot } => {
            print_json(&client.inspect_snapshot(&snapshot).await?)
        }
    }
    Ok(())
}

async fn backup(
    client: &Client,
    command: BackupCommand,
    s3_endpoint: String,
    key: &cli::KeyArgs,
    verbose: bool,
) -> anyhow::Result<()> {
    match command {
        BackupCommand::Create {
            snapshot,
            dest,
            limit_upload,
        } => {
            let mut watcher = Watcher::start(format!("backing up snapshot {snapshot} to {dest}"));
            let request = BackupCreateRequest {
                url: dest,
                snapshot_name: snapshot,
                s3_endpoint,
                limit_upload,
                verbose: Some(true),
            };
            let result: Result<Answer<BackupUrlResponse>, _> = client
                .call_with_progress(convoy_api::routes::BACKUPS_CREATE, &request, &mut |u| {
                    watcher.update(u)
                })
                .await;
            watcher.done(result.is_ok());
            let answer = result?.or_bare(|url| BackupUrlResponse { url });
            if verbose {
                print_json(&answer);
            } else {
                print_line(&answer.url);
            }
        }
        BackupCommand::Delete { url } => {
            client
                .delete_backup(&BackupUrlRequest { url, s3_endpoint })
                .await?
        }
        BackupCommand::List { dest, volume_name } => {
            let request = BackupListRequest {
                url: dest,
                volume_name: volume_name.unwrap_or_default(),
                s3_endpoint,
            };
            print_json(&client.list_backups(&request).await?)
        }
        BackupCommand::Import { old_dest, new_dest } => {
            let store = convoy_core::StoreOptions {
                s3_endpoint: (!s3_endpoint.is_empty()).then_some(s3_endpoint),
                ..Default::default()
            };
            let report = convoy_core::import_legacy_backups(
                &old_dest,
                &new_dest,
                &store,
                std::sync::Arc::new(ImportProgress),
            )
            .await?;
            for url in &report.imported {
                print_line(url);
            }
            for url in &report.already_there {
                eprintln!("convoy: already imported: {url}");
            }
            for what in &report.refused {
                eprintln!("convoy: not imported: {what}");
            }
        }
        BackupCommand::Inspect { url } => print_json(
            &client
                .inspect_backup(&BackupUrlRequest { url, s3_endpoint })
                .await?,
        ),
        BackupCommand::Mount { url, dir } => {
            let request = BackupMountRequest {
                url,
                mount_point: absolute(&dir)?,
                s3_endpoint,
            };
            let mount = client.mount_backup(&request).await?;
            if verbose {
                print_json(&mount);
            } else {
                print_line(&mount.mount_point);
            }
        }
        BackupCommand::Umount { dir } => client.umount_backup(&absolute(&dir)?).await?,
        BackupCommand::Mounts => print_json(&client.list_backup_mounts().await?),
        BackupCommand::Verify { url } => store_ops::verify(&url, &s3_endpoint, key).await?,
        BackupCommand::Repair { dest } => store_ops::repair(&dest, &s3_endpoint, key).await?,
        BackupCommand::Compact {
            dest,
            threshold,
            max_bytes,
        } => {
            let max_bytes = parse_size(&max_bytes)?;
            store_ops::compact(&dest, &s3_endpoint, key, threshold, max_bytes).await?
        }
        BackupCommand::Init {
            dest,
            encrypt,
            cipher,
        } => store_ops::init(&dest, &s3_endpoint, key, encrypt, cipher).await?,
        BackupCommand::Key { command } => store_ops::key(command, &s3_endpoint, key).await?,
    }
    Ok(())
}

/// The daemon's error as `convoy daemon` prints it: a volume manager's error by its message
/// alone, which already says what its causes say (printing its source chain too would repeat
/// them); any other error with its causes.
fn daemon_error(e: convoy_daemon::DaemonError) -> anyhow::Error {
    match e {
        convoy_daemon::DaemonError::Volume(core) => anyhow::anyhow!("{core}"),
        other => other.into(),
    }
}

/// `dir` as an absolute path for the daemon, whose working directory is not ours.
fn absolute(dir: &std::path::Path) -> anyhow::Result<String> {
    let path = std::path::absolute(dir)
        .map_err(|e| anyhow::anyhow!("cannot make {} absolute: {e}", dir.display()))?;
    Ok(path.to_string_lossy().into_owned())
}

/// `backup import` reports nothing while it runs; its lines come at the end.
struct ImportProgress;

impl convoy_core::Progress for ImportProgress {}

/// A `--size` value: the original's syntax (k/m/g/t, powers of 1024); 0 is refused (the API
/// reads a size of 0 as "the driver's default"; asked for explicitly it is a mistake).
fn size_arg(text: &str) -> anyhow::Result<u64> {
    match parse_size(text)? {
        0 => Err(convoy_api::ApiError::InvalidSize {
            input: text.to_string(),
            why: "a volume cannot be 0 bytes; leave --size out for the driver's default",
        }
        .into()),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_may_follow_positionals() {
        let cli =
            Cli::try_parse_from(["convoy", "create", "vol1", "--size", "1G", "-s", "/x.sock"])
                .unwrap();
        assert_eq!(cli.socket, std::path::Path::new("/x.sock"));
        match cli.command {
            Command::Create { name, size, .. } => {
                assert_eq!(name.as_deref(), Some("vol1"));
                assert_eq!(size.as_deref(), Some("1G"));
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from([
            "convoy",
            "backup",
            "create",
            "snap1",
            "--dest",
            "vfs:///b",
            "--s3-endpoint",
            "http://e",
        ])
        .unwrap();
        match cli.command {
            Command::Backup(args) => assert_eq!(args.s3_endpoint.as_deref(), Some("http://e")),
            other => panic!("{other:?}"),
        }
        // The secret of an encrypted store: after the subcommand too, at most one source.
        let cli = Cli::try_parse_from([
            "convoy",
            "backup",
            "verify",
            "vfs:///b?backup=x1&volume=v1",
            "--passphrase-file",
            "/etc/p",
        ])
        .unwrap();
        match cli.command {
            Command::Backup(args) => {
                assert_eq!(
                    args.key.passphrase_file.as_deref(),
                    Some(std::path::Path::new("/etc/p"))
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from([
            "convoy",
            "backup",
            "init",
            "vfs:///b",
            "--encrypt",
            "--passphrase-file",
            "/etc/p",
            "--backup-passcmd",
            "pass show x",
        ])
        .is_err());
        let cli = Cli::try_parse_from(["convoy", "delete", "a", "b", "-r"]).unwrap();
        assert!(
            matches!(cli.command, Command::Delete { reference: true, ref names } if names.len() == 2)
        );
    }
}
