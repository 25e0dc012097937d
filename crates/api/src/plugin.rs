//! The Docker volume plugin protocol (`docker.volumedriver/1.0`), as dockerd sends it.
//!
//! Every request is a `POST` with a JSON body and no `Content-Type`; every answer is HTTP 200
//! with errors in `Err`. `Opts` may be `null`. Unknown fields are ignored, missing ones default.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `/VolumeDriver.Create`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CreateRequest {
    /// Volume name.
    #[serde(rename = "Name")]
    pub name: String,
    /// `-o key=value` options; `null` for an implicit create.
    #[serde(rename = "Opts")]
    pub opts: Option<BTreeMap<String, String>>,
}

/// `/VolumeDriver.Remove`, `/VolumeDriver.Path`, `/VolumeDriver.Get`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NameRequest {
    /// Volume name.
    #[serde(rename = "Name")]
    pub name: String,
}

/// `/VolumeDriver.Mount`, `/VolumeDriver.Unmount`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MountRequest {
    /// Volume name.
    #[serde(rename = "Name")]
    pub name: String,
    /// A random ID per mount (64 hex), the same on the matching Unmount.
    #[serde(rename = "ID")]
    pub id: String,
}

/// `/Plugin.Activate` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivateResponse {
    /// `["VolumeDriver"]`.
    #[serde(rename = "Implements")]
    pub implements: Vec<String>,
}

/// An answer carrying only `Err` (Create, Remove, Unmount).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrResponse {
    /// Empty on success, otherwise the message dockerd shows the user.
    #[serde(rename = "Err")]
    pub err: String,
}

/// `/VolumeDriver.Mount` and `/VolumeDriver.Path` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountpointResponse {
    /// Host path of the mounted volume.
    #[serde(rename = "Mountpoint", default)]
    pub mountpoint: String,
    /// Empty on success.
    #[serde(rename = "Err", default)]
    pub err: String,
}

/// A volume as Docker sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginVolume {
    /// Volume name.
    #[serde(rename = "Name")]
    pub name: String,
    /// Host path if mounted, else empty.
    #[serde(rename = "Mountpoint", default)]
    pub mountpoint: String,
    /// Extra details shown by `docker volume inspect` (Get only).
    #[serde(rename = "Status", default, skip_serializing_if = "Option::is_none")]
    pub status: Option<BTreeMap<String, serde_json::Value>>,
}

/// `/VolumeDriver.Get` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetResponse {
    /// The volume (absent on error).
    #[serde(rename = "Volume", default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<PluginVolume>,
    /// Empty on success.
    #[serde(rename = "Err", default)]
    pub err: String,
}

/// `/VolumeDriver.List` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListResponse {
    /// Every volume.
    #[serde(rename = "Volumes", default)]
    pub volumes: Vec<PluginVolume>,
    /// Empty on success.
    #[serde(rename = "Err", default)]
    pub err: String,
}

/// `/VolumeDriver.Capabilities` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilitiesResponse {
    /// `{"Scope": "local"}`.
    #[serde(rename = "Capabilities")]
    pub capabilities: Capabilities,
}

/// Driver capabilities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// `local`: volumes live on this host.
    #[serde(rename = "Scope")]
    pub scope: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_dockerd_sends() {
        let c: CreateRequest = serde_json::from_str("{\"Name\":\"v\",\"Opts\":null}\n").unwrap();
        assert_eq!(c.opts, None);
        let c: CreateRequest =
            serde_json::from_str("{\"Name\":\"v\",\"Opts\":{\"size\":\"1G\"}}\n").unwrap();
        assert_eq!(c.opts.unwrap()["size"], "1G");
        let m: MountRequest = serde_json::from_str("{\"Name\":\"v\",\"ID\":\"abc\"}\n").unwrap();
        assert_eq!(m.id, "abc");
        let g = GetResponse {
            volume: None,
            err: "no".into(),
        };
        assert_eq!(serde_json::to_string(&g).unwrap(), r#"{"Err":"no"}"#);
    }
}
