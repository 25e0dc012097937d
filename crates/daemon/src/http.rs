//! Request decoding and response encoding shared by the `/v1` and plugin routes.
//!
//! Bodies are read as raw bytes and parsed here, whatever the `Content-Type` (dockerd sends
//! none). An empty body falls back to the query string (`?VolumeName=v1`), then to defaults.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use convoy_api::wire::ErrorResponse;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

use crate::{DaemonError, Result};

/// Decodes a request of type `T` from `body`, or from `query` when the body is empty.
pub(crate) fn parse<T: DeserializeOwned + Default>(
    route: &str,
    query: Option<&str>,
    body: &[u8],
) -> Result<T> {
    let bad = |message: String| DaemonError::BadRequest {
        route: route.to_string(),
        message,
    };
    let text = std::str::from_utf8(body)
        .map_err(|e| bad(format!("the request body is not UTF-8 text: {e}")))?;
    if !text.trim().is_empty() {
        // Requests are JSON objects. serde would also read a struct from an array (`[]` gives
        // every field its default), so anything else is refused first.
        let value: Value = serde_json::from_str(text)
            .map_err(|e| bad(format!("invalid JSON request body: {e}")))?;
        if !value.is_object() {
            return Err(bad(format!(
                "invalid JSON request body: expected a JSON object, not {}",
                match value {
                    Value::Null => "null",
                    Value::Bool(_) => "a boolean",
                    Value::Number(_) => "a number",
                    Value::String(_) => "a string",
                    Value::Array(_) => "an array",
                    Value::Object(_) => "an object",
                }
            )));
        }
        return serde_json::from_value(value)
            .map_err(|e| bad(format!("invalid JSON request body: {e}")));
    }
    match query.filter(|q| !q.is_empty()) {
        None => Ok(T::default()),
        Some(query) => {
            let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
                .map_err(|e| bad(format!("invalid query string: {e}")))?;
            let object = pairs
                .into_iter()
                .map(|(key, value)| {
                    let value = match value.as_str() {
                        "true" => Value::Bool(true),
                        "false" => Value::Bool(false),
                        _ => Value::String(value),
                    };
                    (key, value)
                })
                .collect();
            serde_json::from_value(Value::Object(object))
                .map_err(|e| bad(format!("invalid query parameters: {e}")))
        }
    }
}

/// A JSON answer with status 200.
pub(crate) fn json<T: Serialize>(value: &T) -> Response {
    json_with_status(StatusCode::OK, value)
}

/// A JSON answer with `status`.
pub(crate) fn json_with_status<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => error(&DaemonError::volume(
            crate::ErrorKind::Internal,
            format!("cannot encode the answer: {e}"),
        )),
    }
}

/// `{"Error": "..."}` with the status of the error's kind.
pub(crate) fn error(err: &DaemonError) -> Response {
    let status =
        StatusCode::from_u16(err.kind().http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = ErrorResponse {
        error: err.to_string(),
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

/// A required string field; a clear error naming it when empty.
pub(crate) fn required<'a>(route: &str, field: &str, value: &'a str) -> Result<&'a str> {
    if value.trim().is_empty() {
        return Err(DaemonError::BadRequest {
            route: route.to_string(),
            message: format!("{field} is required"),
        });
    }
    Ok(value)
}

/// `Some(s)` for a non-empty string.
pub(crate) fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use convoy_api::wire::VolumeDeleteRequest;

    #[test]
    fn body_then_query_then_defaults() {
        let r: VolumeDeleteRequest =
            parse("/r", Some("VolumeName=q"), b"{\"VolumeName\":\"b\"}\n").unwrap();
        assert_eq!(r.volume_name, "b");
        let r: VolumeDeleteRequest =
            parse("/r", Some("VolumeName=q&ReferenceOnly=true"), b"").unwrap();
        assert_eq!(r.volume_name, "q");
        assert!(r.reference_only);
        let r: VolumeDeleteRequest = parse("/r", None, b"  \n").unwrap();
        assert_eq!(r, VolumeDeleteRequest::default());
    }

    #[test]
    fn malformed_input_names_the_route() {
        for body in [
            &b"{"[..],
            b"[1,2]",
            b"[]",
            b"null",
            b"\"x\"",
            b"\xff\xfe",
            b"{\"ReferenceOnly\": 3}",
        ] {
            let err = parse::<VolumeDeleteRequest>("/v1/volumes/", None, body).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("/v1/volumes/"), "{text}");
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
        }
    }
}
