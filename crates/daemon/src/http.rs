//! Request decoding and response encoding shared by the `/v1` and plugin routes.
//!
//! Bodies are read as raw bytes and parsed here, whatever the `Content-Type` (dockerd sends
//! none). An empty body, or the JSON `null` the original Convoy client sends on `GET`s, falls
//! back to the query string (`?VolumeName=v1`), then to defaults.
//!
//! Answers to the original client (`User-Agent: Convoy-Client/1`, see [`Caller`]) take its
//! daemon's forms: errors as plain text, which its client wraps once into `{"Error": ...}`.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use convoy_api::wire::ErrorResponse;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

use crate::{DaemonError, Result};

/// What the JSON body `null` means to a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NullBody {
    /// No body: the original client sends `null` on its `GET`s.
    NoBody,
    /// Refused, because on this route an empty request acts (creates something under a
    /// generated name) rather than asks; `hint` says what to send instead.
    Refused {
        /// Appended to the error, in parentheses.
        hint: &'static str,
    },
}

/// Decodes a request of type `T` from `body`, or from `query` when the body is empty or `null`.
pub(crate) fn parse<T: DeserializeOwned + Default>(
    route: &str,
    query: Option<&str>,
    body: &[u8],
) -> Result<T> {
    parse_with(route, query, body, NullBody::NoBody)
}

/// [`parse`], with what `null` means on this route.
pub(crate) fn parse_with<T: DeserializeOwned + Default>(
    route: &str,
    query: Option<&str>,
    body: &[u8],
    null: NullBody,
) -> Result<T> {
    let bad = |message: String| DaemonError::BadRequest {
        route: route.to_string(),
        message,
    };
    let text = std::str::from_utf8(body)
        .map_err(|e| bad(format!("the request body is not UTF-8 text: {e}")))?;
    if let (NullBody::Refused { hint }, "null") = (null, text.trim()) {
        return Err(bad(format!(
            "invalid JSON request body: expected a JSON object, not null ({hint})"
        )));
    }
    if !text.trim().is_empty() && text.trim() != "null" {
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

/// Who is calling, as far as the answer's form goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Caller {
    /// Any client but the original's: errors as `{"Error": "..."}`.
    #[default]
    Json,
    /// The original Convoy client library (`User-Agent: Convoy-Client/<version>`): errors as
    /// plain text ending with a newline, as Go's `http.Error` wrote them.
    Original,
}

impl Caller {
    /// The caller of a request with `headers`.
    pub(crate) fn of(headers: &axum::http::HeaderMap) -> Caller {
        match client_version(headers) {
            Some(_) => Caller::Original,
            None => Caller::Json,
        }
    }
}

/// The version in a `User-Agent: Convoy-Client/<version>` header.
pub(crate) fn client_version(headers: &axum::http::HeaderMap) -> Option<String> {
    let agent = headers.get(header::USER_AGENT)?.to_str().ok()?;
    let at = agent.find("Convoy-Client/")?;
    Some(agent[at + "Convoy-Client/".len()..].trim().to_string())
}

/// The answer of a `/v1` call, already encoded.
pub(crate) enum Reply {
    /// A JSON body.
    Json(Vec<u8>),
    /// A bare value as `text/plain` (the original daemon's answer to `"Verbose": false`).
    Bare(String),
}

impl Reply {
    /// `value` as JSON.
    pub(crate) fn json<T: Serialize>(value: &T) -> Result<Reply> {
        serde_json::to_vec(value).map(Reply::Json).map_err(|e| {
            DaemonError::failed(
                crate::ErrorKind::Internal,
                format!("cannot encode the answer: {e}"),
            )
        })
    }

    /// `bare` when the request asked for the bare answer (`Verbose` false), else `value` as
    /// JSON.
    pub(crate) fn verbose_or<T: Serialize>(
        verbose: Option<bool>,
        value: &T,
        bare: impl FnOnce(&T) -> String,
    ) -> Result<Reply> {
        match verbose {
            Some(false) => Ok(Reply::Bare(bare(value))),
            _ => Reply::json(value),
        }
    }

    /// The HTTP response, status 200.
    pub(crate) fn into_response(self) -> Response {
        match self {
            Reply::Json(body) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response(),
            Reply::Bare(text) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                text,
            )
                .into_response(),
        }
    }
}

/// An error in the form `caller` reads: [`error`] for most, plain text for the original client.
pub(crate) fn error_for(caller: Caller, err: &DaemonError) -> Response {
    match caller {
        Caller::Json => error(err),
        Caller::Original => {
            let status = StatusCode::from_u16(crate::error::http_status(err.kind()))
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            plain(status, format!("{err}\n"))
        }
    }
}

/// A `text/plain` answer.
pub(crate) fn plain(status: StatusCode, text: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

/// A JSON answer with status 200.
pub(crate) fn json<T: Serialize>(value: &T) -> Response {
    json_with_status(StatusCode::OK, value)
}

/// A JSON answer with `status`.
pub(crate) fn json_with_status<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => error(&DaemonError::failed(
            crate::ErrorKind::Internal,
            format!("cannot encode the answer: {e}"),
        )),
    }
}

/// `{"Error": "..."}` with the status of the error's kind.
pub(crate) fn error(err: &DaemonError) -> Response {
    let status = StatusCode::from_u16(crate::error::http_status(err.kind()))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
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
        // The original client's GETs carry the body `null`: like an empty body.
        let r: VolumeDeleteRequest = parse("/r", None, b"null").unwrap();
        assert_eq!(r, VolumeDeleteRequest::default());
        let r: VolumeDeleteRequest = parse("/r", Some("VolumeName=q"), b" null\n").unwrap();
        assert_eq!(r.volume_name, "q");
        // Where an empty request would act, `null` is refused, naming what to send instead.
        let e = parse_with::<VolumeDeleteRequest>(
            "/r",
            None,
            b" null ",
            NullBody::Refused { hint: "send {}" },
        )
        .unwrap_err();
        assert!(e.to_string().contains("not null (send {})"), "{e}");
    }

    #[test]
    fn malformed_input_names_the_route() {
        for body in [
            &b"{"[..],
            b"[1,2]",
            b"[]",
            b"nul",
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
