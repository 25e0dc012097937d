//! Growing an active thin device: a new table with the longer length is loaded into the
//! device's inactive slot, then the device is suspended (flushing, with lockfs) and resumed,
//! which swaps the tables atomically. The thin id's mappings are untouched: the new sectors
//! read zeros until written.

use devicemapper::{DevId, DmOptions, TargetTable, ThinDevTargetTable, ThinTargetParams};

use crate::devnode::ensure_node;
use crate::error::{dm_error, Error, Result};
use crate::names::dm_name;
use crate::pool::ThinPool;
use crate::thin::ThinDevice;
use crate::units::Sectors;

impl ThinPool {
    /// Sets the virtual size of the active thin device `name` of this pool to `size` (its
    /// table is reloaded with the new length and the device suspended and resumed). Growing
    /// only: a smaller size is refused. Idempotent: a device already of that size is returned
    /// as it is.
    ///
    /// # Errors
    /// [`Error::NotFound`] when `name` is not an active thin device of this pool;
    /// [`Error::InvalidSize`] for a size smaller than the device's; device-mapper failures
    /// (a failed resume leaves the device suspended: [`ThinPool::resume_suspended`]).
    pub fn resize(&self, name: &str, size: Sectors) -> Result<ThinDevice> {
        let _guard = self.lock();
        let thin = self.thin_table(name)?.ok_or_else(|| Error::NotFound {
            kind: "thin device",
            name: format!("{name} of pool {}", self.name()),
        })?;
        if thin.size == size && !thin.suspended {
            let path = ensure_node(name, thin.device)?;
            return Ok(ThinDevice { path, ..thin });
        }
        if size < thin.size {
            return Err(Error::invalid_size(
                name,
                size,
                "a thin device is only ever grown (shrinking would cut its filesystem)",
            ));
        }
        let table = ThinDevTargetTable::new(
            Sectors(0),
            size,
            ThinTargetParams::new(self.device, thin.id.to_dm(), None),
        );
        let dm_id = DevId::Name(dm_name(name)?);
        self.dm
            .table_load(&dm_id, &table.to_raw_table(), DmOptions::default())
            .map_err(|e| dm_error("load the grown thin table", name, e))?;
        // A device a crash left suspended (inside an earlier resize) needs only the resume.
        if !thin.suspended {
            crate::thin::suspend(&self.dm, name)?;
        }
        crate::thin::resume(&self.dm, name)?;
        let path = ensure_node(name, thin.device)?;
        Ok(ThinDevice {
            size,
            path,
            suspended: false,
            ..thin
        })
    }
}
