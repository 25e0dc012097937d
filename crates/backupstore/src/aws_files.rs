//! The AWS shared credentials and config files (`~/.aws/credentials`, `~/.aws/config`).
//!
//! `object_store` reads credentials from the environment and instance metadata but not from
//! these files, so this module parses their INI format itself: `[section]` headers, `key = value`
//! lines, `#` and `;` comments. In `credentials` a profile's section is `[name]`; in `config` it
//! is `[profile name]` (and `[default]`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Static credentials found in a credentials file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticCredentials {
    /// `aws_access_key_id`.
    pub access_key_id: String,
    /// `aws_secret_access_key`.
    pub secret_access_key: String,
    /// `aws_session_token`, if present.
    pub session_token: Option<String>,
}

type Sections = HashMap<String, HashMap<String, String>>;

/// Parses INI text into sections of lower-cased keys.
pub(crate) fn parse_ini(text: &str) -> Sections {
    let mut sections = Sections::new();
    let mut current: Option<String> = None;
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
            sections.entry(name.clone()).or_default();
            current = Some(name);
            continue;
        }
        if let (Some(section), Some((key, value))) = (&current, line.split_once('=')) {
            sections
                .get_mut(section)
                .expect("section inserted")
                .insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    sections
}

/// The profile to use: `AWS_PROFILE`, else `default`.
pub fn profile_from_env() -> String {
    std::env::var("AWS_PROFILE")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "default".to_string())
}

fn home_file(env_override: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env_override).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".aws").join(name))
}

/// `AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`.
pub fn default_credentials_file() -> Option<PathBuf> {
    home_file("AWS_SHARED_CREDENTIALS_FILE", "credentials")
}

/// `AWS_CONFIG_FILE`, else `~/.aws/config`.
pub fn default_config_file() -> Option<PathBuf> {
    home_file("AWS_CONFIG_FILE", "config")
}

/// Reads `profile`'s static credentials from a credentials file; `None` if the file or the
/// profile does not exist or lacks a key pair.
pub fn read_credentials(path: &Path, profile: &str) -> Option<StaticCredentials> {
    let text = std::fs::read_to_string(path).ok()?;
    let sections = parse_ini(&text);
    let section = sections.get(profile)?;
    Some(StaticCredentials {
        access_key_id: section.get("aws_access_key_id")?.clone(),
        secret_access_key: section.get("aws_secret_access_key")?.clone(),
        session_token: section.get("aws_session_token").cloned(),
    })
}

/// Reads `profile`'s region from a config file (`[default]` or `[profile NAME]`).
pub fn read_region(path: &Path, profile: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let sections = parse_ini(&text);
    let section = if profile == "default" {
        sections.get("default")
    } else {
        sections
            .get(&format!("profile {profile}"))
            .or_else(|| sections.get(profile))
    }?;
    section.get("region").cloned().filter(|r| !r.is_empty())
}

/// Where credentials were looked for, when none was found before `object_store`'s own chain
/// would fall back to the EC2 instance metadata endpoint; `None` when credentials were found or
/// another source of that chain (web identity, ECS) is configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CredentialsSearch {
    /// The sources tried, in order, each with what was found there.
    pub tried: Vec<String>,
    /// The instance metadata endpoint that will be asked last.
    pub metadata_endpoint: String,
}

impl CredentialsSearch {
    /// Describes the search for `profile` in `file` (`None`: neither HOME nor
    /// `AWS_SHARED_CREDENTIALS_FILE` is set), unless some other source is configured.
    pub(crate) fn after_nothing_found(
        file: Option<&Path>,
        profile: &str,
        metadata_endpoint: Option<String>,
    ) -> Option<CredentialsSearch> {
        let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
        if set("AWS_WEB_IDENTITY_TOKEN_FILE")
            || set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            || set("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        {
            return None;
        }
        let file_state = match file {
            None => "no file: neither HOME nor AWS_SHARED_CREDENTIALS_FILE is set".to_string(),
            Some(path) => {
                let found = match std::fs::read_to_string(path) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        "does not exist".to_string()
                    }
                    Err(e) => format!("unreadable: {e}"),
                    Ok(text) => match parse_ini(&text).get(profile) {
                        None => format!("has no [{profile}] section"),
                        Some(_) => {
                            format!("[{profile}] lacks aws_access_key_id or aws_secret_access_key")
                        }
                    },
                };
                format!("{} profile {profile} ({found})", path.display())
            }
        };
        Some(CredentialsSearch {
            tried: vec![
                "the environment (AWS_ACCESS_KEY_ID is not set)".to_string(),
                file_state,
                "web identity and ECS (AWS_WEB_IDENTITY_TOKEN_FILE, \
                 AWS_CONTAINER_CREDENTIALS_*_URI are not set)"
                    .to_string(),
            ],
            metadata_endpoint: metadata_endpoint
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "http://169.254.169.254".to_string()),
        })
    }

    /// If `error` comes from asking the instance metadata endpoint for credentials, the message
    /// that replaces it: what was tried and how to provide credentials.
    pub(crate) fn explain(&self, error: &(dyn std::error::Error + 'static)) -> Option<String> {
        let endpoint = self.metadata_endpoint.trim_end_matches('/');
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
        let mut chain = String::new();
        while let Some(e) = cause {
            chain.push_str(&e.to_string());
            chain.push_str("; ");
            cause = e.source();
        }
        if !chain.contains(endpoint) {
            return None;
        }
        let last = {
            let mut e: &dyn std::error::Error = error;
            while let Some(s) = e.source() {
                e = s;
            }
            e.to_string()
        };
        Some(format!(
            "no AWS credentials found. Tried: {}; and last the EC2 instance metadata endpoint \
             {endpoint}, which gave none ({last}). Provide credentials with AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY in the daemon's environment, or a [default] section (or \
             [NAME] with AWS_PROFILE=NAME) holding aws_access_key_id and \
             aws_secret_access_key in ~/.aws/credentials of the user running the daemon \
             (AWS_SHARED_CREDENTIALS_FILE names another file), or run on an EC2 instance with \
             an instance role",
            self.tried.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_profiles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        std::fs::write(
            &path,
            "# comment\n[default]\naws_access_key_id = AKDEF\naws_secret_access_key=SKDEF\n\n\
             [work]\n; other comment\nAWS_ACCESS_KEY_ID = AKW\naws_secret_access_key = S=K\n\
             aws_session_token = TOK\n[broken]\naws_access_key_id = X\n",
        )
        .unwrap();
        let def = read_credentials(&path, "default").unwrap();
        assert_eq!(def.access_key_id, "AKDEF");
        assert_eq!(def.secret_access_key, "SKDEF");
        assert_eq!(def.session_token, None);
        let work = read_credentials(&path, "work").unwrap();
        assert_eq!(work.secret_access_key, "S=K");
        assert_eq!(work.session_token.as_deref(), Some("TOK"));
        assert_eq!(read_credentials(&path, "broken"), None);
        assert_eq!(read_credentials(&path, "absent"), None);
        assert_eq!(read_credentials(&dir.path().join("nope"), "default"), None);
    }

    #[test]
    fn config_regions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(
            &path,
            "[default]\nregion = eu-west-1\n[profile  work]\nregion=ap-south-1\n",
        )
        .unwrap();
        assert_eq!(read_region(&path, "default").as_deref(), Some("eu-west-1"));
        assert_eq!(read_region(&path, "work").as_deref(), Some("ap-south-1"));
        assert_eq!(read_region(&path, "none"), None);
    }
}
