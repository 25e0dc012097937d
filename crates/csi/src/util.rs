//! Helpers shared by the services: volume and snapshot ids, status codes, pagination tokens,
//! times, and running a request's work detached from its caller.

use std::future::Future;
use std::path::PathBuf;

use convoy_core::ErrorKind;
use tonic::Status;

/// The convoy name (and so the CSI id) for a CSI `name`: the name itself when it is a valid
/// convoy name, else `csi-` and 32 hex digits of a stable hash of it (two FNV-1a 64 passes with
/// different offsets), so the same CSI name always maps to the same volume or snapshot.
pub fn convoy_name(csi_name: &str) -> String {
    if convoy_core::validate_name(csi_name).is_ok() {
        return csi_name.to_string();
    }
    format!(
        "csi-{:016x}{:016x}",
        fnv1a(csi_name.as_bytes(), 0xcbf2_9ce4_8422_2325),
        fnv1a(csi_name.as_bytes(), 0x6c62_272e_07bb_0142)
    )
}

fn fnv1a(bytes: &[u8], offset: u64) -> u64 {
    bytes.iter().fold(offset, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A volume manager's error as the gRPC status the CSI spec names for it.
pub fn status(e: convoy_core::Error) -> Status {
    let message = e.to_string();
    match e.kind() {
        ErrorKind::NotFound => Status::not_found(message),
        ErrorKind::AlreadyExists => Status::already_exists(message),
        ErrorKind::InvalidArgument => Status::invalid_argument(message),
        ErrorKind::Busy => Status::failed_precondition(message),
        ErrorKind::Unavailable => Status::unavailable(message),
        ErrorKind::Internal => Status::internal(message),
    }
}

/// `Err(INVALID_ARGUMENT)` naming `field` when `value` is empty.
pub fn required<'a>(value: &'a str, field: &str) -> Result<&'a str, Status> {
    if value.is_empty() {
        Err(Status::invalid_argument(format!("{field} is required")))
    } else {
        Ok(value)
    }
}

/// A path argument: required and absolute.
pub fn required_path(value: &str, field: &str) -> Result<PathBuf, Status> {
    let path = PathBuf::from(required(value, field)?);
    if !path.is_absolute() {
        return Err(Status::invalid_argument(format!(
            "{field} must be an absolute path, not {value:?}"
        )));
    }
    Ok(path)
}

/// One page of `items` for a list call: starts at the index in `token` (empty: 0), holds at
/// most `max` items (0 or less: all); answers the page and the next token (empty at the end).
/// A token that is not an index into `items` is ABORTED, as the spec names it.
pub fn page<T>(items: Vec<T>, token: &str, max: i32) -> Result<(Vec<T>, String), Status> {
    if max < 0 {
        return Err(Status::invalid_argument("max_entries must not be negative"));
    }
    let start = if token.is_empty() {
        0
    } else {
        match token.parse::<usize>() {
            Ok(i) if i <= items.len() => i,
            _ => {
                return Err(Status::aborted(format!(
                    "starting_token {token:?} is not a token this plugin gave"
                )))
            }
        }
    };
    let len = items.len();
    let take = if max == 0 { len - start } else { max as usize };
    let end = start.saturating_add(take).min(len);
    let next = if end < len {
        end.to_string()
    } else {
        String::new()
    };
    Ok((
        items.into_iter().skip(start).take(end - start).collect(),
        next,
    ))
}

/// Runs `work` in a task of its own and waits for it: a client that hangs up drops only the
/// wait, never the work half-way (as the daemon's `/v1` handlers do).
pub async fn detached<R, F>(rpc: &'static str, work: F) -> Result<R, Status>
where
    R: Send + 'static,
    F: Future<Output = Result<R, Status>> + Send + 'static,
{
    tokio::spawn(work)
        .await
        .unwrap_or_else(|e| Err(Status::internal(format!("{rpc}: the task failed: {e}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_stably() {
        assert_eq!(convoy_name("pvc-1234"), "pvc-1234");
        let odd = convoy_name("sanity volume with spaces");
        assert!(odd.starts_with("csi-") && odd.len() == 36, "{odd}");
        assert!(convoy_core::validate_name(&odd).is_ok());
        assert_eq!(odd, convoy_name("sanity volume with spaces"));
        assert_ne!(odd, convoy_name("sanity volume with spaces!"));
        let long = "x".repeat(100);
        assert_ne!(convoy_name(&long), long);
    }

    #[test]
    fn pages_walk_and_bad_tokens_abort() {
        let items: Vec<u32> = (0..5).collect();
        let (p, next) = page(items.clone(), "", 2).unwrap();
        assert_eq!((p, next.as_str()), (vec![0, 1], "2"));
        let (p, next) = page(items.clone(), "4", 2).unwrap();
        assert_eq!((p, next.as_str()), (vec![4], ""));
        let (p, next) = page(items.clone(), "", 0).unwrap();
        assert_eq!((p.len(), next.as_str()), (5, ""));
        assert_eq!(
            page(items.clone(), "x", 1).unwrap_err().code(),
            tonic::Code::Aborted
        );
        assert_eq!(
            page(items, "9", 1).unwrap_err().code(),
            tonic::Code::Aborted
        );
    }
}
