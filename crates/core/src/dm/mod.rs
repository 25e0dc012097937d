//! The devicemapper driver (being filled in).

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};

/// Name of the driver.
pub const DEVICEMAPPER: &str = "devicemapper";

/// The devicemapper driver.
pub(crate) struct DmDriver;

impl DmDriver {
    pub(crate) fn new(
        _root: &Path,
        _opts: &BTreeMap<String, String>,
    ) -> Result<crate::vfs::VfsDriver> {
        Err(Error::Unsupported {
            what: "the devicemapper driver".into(),
            why: "not wired in this build yet".into(),
        })
    }
}
