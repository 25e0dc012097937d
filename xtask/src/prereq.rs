//! `cargo xtask prerequisites`: the one list of what the project needs beyond Rust
//! (`xtask/prerequisites.list`, compiled in), checked and, as root, installed.
//!
//! `demo`, `test` and `.ci/run` call it first, before building anything but xtask itself (whose
//! dependencies need no system library), so a fresh machine learns what is missing in seconds,
//! not after minutes of compiling. Not root: it prints the one command that installs everything
//! missing and stops.

use anyhow::{bail, Context, Result};
use std::process::{Command, Stdio};

/// The list, as written in `xtask/prerequisites.list`.
pub const LIST: &str = include_str!("../prerequisites.list");

/// The venv that holds the pip prerequisites (linked into `/usr/local/bin`).
pub const VENV: &str = "/opt/convoy-tools";

/// Who needs a prerequisite; each level includes those before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Level {
    /// `cargo xtask demo`.
    Demo,
    /// `cargo xtask test` (and the demo's).
    Test,
    /// `.ci/run` (and the tests').
    Ci,
    /// `cargo xtask bench` (and CI's): the peers benchmarks run beside convoy.
    Bench,
    /// `cargo xtask fuzz` (and CI's): fuzzing is run by hand, not in CI.
    Fuzz,
}

/// How a prerequisite is installed and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A Debian package.
    Apt,
    /// A package apt's lists must know (they are downloaded with `apt-get update`).
    AptLists,
    /// A PyPI requirement installed into [`VENV`]; the command it must put on `PATH`.
    Pip(String),
    /// A crate installed with `cargo install --locked`; its cargo subcommand.
    Cargo(String),
}

/// One line of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prerequisite {
    /// Who needs it.
    pub level: Level,
    /// How it is installed.
    pub kind: Kind,
    /// Package, requirement or crate name.
    pub name: String,
}

/// Arguments of `cargo xtask prerequisites`.
#[derive(Debug, clap::Args)]
pub struct PrereqArgs {
    /// What to check for: the demo, the tests, or the whole CI script.
    #[arg(long = "for", value_enum, default_value = "test")]
    pub level: Level,
    /// Only check and list what is missing; install nothing.
    #[arg(long)]
    pub check: bool,
}

/// Parses the list; a malformed line is an error naming it.
pub fn parse(text: &str) -> Result<Vec<Prerequisite>> {
    let mut out = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let bad = || format!("prerequisites.list line {}: `{line}`", number + 1);
        let level = match fields.first() {
            Some(&"demo") => Level::Demo,
            Some(&"test") => Level::Test,
            Some(&"ci") => Level::Ci,
            Some(&"bench") => Level::Bench,
            Some(&"fuzz") => Level::Fuzz,
            _ => bail!(
                "{}: the first column is demo, test, ci, bench or fuzz",
                bad()
            ),
        };
        let kind = match (fields.get(1).copied(), fields.len()) {
            (Some("apt"), 3) => Kind::Apt,
            (Some("apt-lists"), 3) => Kind::AptLists,
            (Some("pip"), 4) => Kind::Pip(fields[3].to_string()),
            (Some("cargo"), 4) => Kind::Cargo(fields[3].to_string()),
            _ => bail!(
                "{}: expected `LEVEL apt NAME`, `LEVEL apt-lists NAME`, \
                 `LEVEL pip REQUIREMENT COMMAND` or `LEVEL cargo CRATE SUBCOMMAND`",
                bad()
            ),
        };
        out.push(Prerequisite {
            level,
            kind,
            name: fields[2].to_string(),
        });
    }
    Ok(out)
}

/// The prerequisites `level` needs.
pub fn needed(level: Level) -> Result<Vec<Prerequisite>> {
    Ok(parse(LIST)?
        .into_iter()
        .filter(|p| p.level <= level)
        .collect())
}

/// Whether `p` is present on this machine.
pub fn present(p: &Prerequisite) -> bool {
    match &p.kind {
        Kind::Apt => Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", &p.name])
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed")),
        Kind::AptLists => Command::new("apt-cache")
            .args(["depends", &p.name])
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("Depends:")),
        Kind::Pip(command) => on_path(command),
        Kind::Cargo(sub) => Command::new(cargo())
            .args([sub.as_str(), "--version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
    }
}

fn on_path(command: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            let file = dir.join(command);
            file.metadata().is_ok_and(|m| {
                m.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            })
        })
    })
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// The shell commands that install `missing`, in order (apt first: the pip ones need its venv).
pub fn install_commands(missing: &[Prerequisite]) -> Vec<String> {
    let apt: Vec<&str> = missing
        .iter()
        .filter(|p| p.kind == Kind::Apt)
        .map(|p| p.name.as_str())
        .collect();
    let mut commands = Vec::new();
    if !missing.is_empty()
        && missing
            .iter()
            .any(|p| matches!(p.kind, Kind::Apt | Kind::AptLists))
    {
        commands.push("apt-get update -q".to_string());
    }
    if !apt.is_empty() {
        commands.push(format!(
            "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends {}",
            apt.join(" ")
        ));
    }
    for p in missing {
        if let Kind::Pip(command) = &p.kind {
            commands.push(format!(
                "{{ [ -x {VENV}/bin/pip ] || /usr/bin/python3 -m venv {VENV}; }}"
            ));
            commands.push(format!(
                "{VENV}/bin/pip install --quiet --disable-pip-version-check '{}'",
                p.name
            ));
            commands.push(format!(
                "ln -sf {VENV}/bin/{command} /usr/local/bin/{command}"
            ));
        }
    }
    for p in missing {
        if let Kind::Cargo(_) = &p.kind {
            commands.push(format!("cargo install --locked --quiet {}", p.name));
        }
    }
    commands
}

/// Checks what `level` needs and installs what is missing (as root). Returns `Ok(())` when all is
/// present afterwards; not root with something missing, prints the one command to run and fails.
pub fn ensure(level: Level, install: bool) -> Result<()> {
    let needed = needed(level)?;
    let missing: Vec<Prerequisite> = needed.iter().filter(|p| !present(p)).cloned().collect();
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|p| p.name.as_str()).collect();
    println!("prerequisites: missing {}", names.join(" "));
    let commands = install_commands(&missing);
    if !install {
        bail!(
            "{} prerequisite(s) missing; install them with `cargo xtask prerequisites --for {}` \
             as root",
            missing.len(),
            level_name(level)
        );
    }
    if !crate::dev_pool::is_root() {
        let (system, user): (Vec<&String>, Vec<&String>) = commands
            .iter()
            .partition(|c| !c.starts_with("cargo install"));
        let mut line = String::new();
        if !system.is_empty() {
            let joined: Vec<&str> = system.iter().map(|c| c.as_str()).collect();
            line = format!(
                "sudo sh -c \"{}\"",
                joined.join(" && ").replace('"', "\\\"")
            );
        }
        for c in user {
            if !line.is_empty() {
                line.push_str(" && ");
            }
            line.push_str(c);
        }
        println!("prerequisites: not root, so nothing was installed. Run this, then try again:\n\n  {line}\n");
        bail!("missing prerequisites: {}", names.join(" "));
    }
    for command in &commands {
        println!("prerequisites: {command}");
        let status = Command::new("sh")
            .args(["-c", command])
            .status()
            .with_context(|| format!("running `{command}`"))?;
        if !status.success() {
            bail!("`{command}` failed ({status})");
        }
    }
    let still: Vec<&str> = needed
        .iter()
        .filter(|p| !present(p))
        .map(|p| p.name.as_str())
        .collect();
    if !still.is_empty() {
        bail!(
            "still missing after installing: {} (is /usr/local/bin on PATH?)",
            still.join(" ")
        );
    }
    println!("prerequisites: installed {}", names.join(" "));
    Ok(())
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Demo => "demo",
        Level::Test => "test",
        Level::Ci => "ci",
        Level::Bench => "bench",
        Level::Fuzz => "fuzz",
    }
}

/// Runs `cargo xtask prerequisites`.
pub fn run(args: &PrereqArgs) -> Result<()> {
    ensure(args.level, !args.check)?;
    println!(
        "prerequisites: everything for `{}` is present",
        level_name(args.level)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_parses_and_levels_nest() {
        let demo = needed(Level::Demo).unwrap();
        let test = needed(Level::Test).unwrap();
        let ci = needed(Level::Ci).unwrap();
        let fuzz = needed(Level::Fuzz).unwrap();
        assert!(demo.iter().any(|p| p.name == "libdevmapper-dev"));
        assert!(demo.iter().all(|p| p.name != "docker.io"));
        assert!(test.iter().any(|p| p.name == "docker.io"));
        assert!(test
            .iter()
            .any(|p| p.kind == Kind::Pip("moto_server".into())));
        assert!(ci
            .iter()
            .all(|p| p.name != "cargo-fuzz" && p.name != "restic"));
        assert!(needed(Level::Bench)
            .unwrap()
            .iter()
            .any(|p| p.name == "restic"));
        assert!(fuzz.iter().any(|p| p.name == "cargo-fuzz"));
        assert!(demo.len() < test.len() && test.len() <= ci.len() && ci.len() < fuzz.len());
    }

    #[test]
    fn malformed_lines_are_refused_with_their_number() {
        let err = parse("demo apt gcc\nnightly apt foo\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = parse("test pip moto\n").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn install_commands_update_apt_first_and_build_the_venv_before_pip() {
        let missing = parse("demo apt cpio\ntest apt python3-venv\ntest pip moto[server] moto_server\nci cargo cargo-fuzz fuzz\n").unwrap();
        let c = install_commands(&missing);
        assert_eq!(c[0], "apt-get update -q");
        assert!(c[1].ends_with("cpio python3-venv"), "{c:?}");
        assert!(c[2].contains("python3 -m venv"));
        assert!(c[3].contains("pip install") && c[3].contains("'moto[server]'"));
        assert!(c[4].contains("/usr/local/bin/moto_server"));
        assert_eq!(c[5], "cargo install --locked --quiet cargo-fuzz");
        assert!(install_commands(&[]).is_empty());
    }
}
