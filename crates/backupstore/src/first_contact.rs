//! Fail fast on an S3 endpoint that has never answered.
//!
//! `object_store` retries connection errors for as long as the retry policy allows (about 26 s
//! with the defaults), which is right for an outage of a server that works, and wrong for a
//! mistyped endpoint: connection refused or an unknown host name then looks like a hang. This
//! connector wraps the usual HTTP client and remembers, for the whole process, every endpoint
//! (scheme, host and port) that has answered at least once with any HTTP status. A connection
//! error to an endpoint that never answered is turned into a non-retried error naming the
//! endpoint; once an endpoint has answered, its connection errors, timeouts and 5xx statuses are
//! retried as before.

use std::collections::HashSet;
use std::sync::Mutex;

use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse, HttpService,
    ReqwestConnector,
};
use object_store::ClientOptions;

/// Endpoints that have answered in this process.
static ANSWERED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fn endpoint_of(req: &HttpRequest) -> String {
    let uri = req.uri();
    format!(
        "{}://{}",
        uri.scheme_str().unwrap_or("http"),
        uri.authority().map(|a| a.as_str()).unwrap_or("")
    )
}

fn has_answered(endpoint: &str) -> bool {
    ANSWERED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .is_some_and(|s| s.contains(endpoint))
}

fn mark_answered(endpoint: String) {
    ANSWERED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashSet::new)
        .insert(endpoint);
}

/// A connection error to an endpoint that has never answered.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot reach {endpoint}, which has not answered since convoy started ({cause}); \
     check the endpoint (--s3-endpoint, AWS_ENDPOINT) or region in the URL, and that the \
     server is running and reachable from this host"
)]
pub(crate) struct Unreachable {
    endpoint: String,
    /// The innermost cause (connection refused, the resolver's message).
    cause: String,
    #[source]
    source: HttpError,
}

/// The HTTP connector for S3 clients: the default one, with first-contact failures not retried.
#[derive(Debug, Default)]
pub(crate) struct FailFastConnector;

impl HttpConnector for FailFastConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(FailFast { inner }))
    }
}

#[derive(Debug)]
struct FailFast {
    inner: HttpClient,
}

#[async_trait::async_trait]
impl HttpService for FailFast {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let endpoint = endpoint_of(&req);
        match self.inner.execute(req).await {
            Ok(response) => {
                if !has_answered(&endpoint) {
                    mark_answered(endpoint);
                }
                Ok(response)
            }
            Err(e) if e.kind() == HttpErrorKind::Connect && !has_answered(&endpoint) => Err(
                // `Unknown` is the kind object_store does not retry.
                HttpError::new(
                    HttpErrorKind::Unknown,
                    Unreachable {
                        endpoint,
                        cause: innermost(&e),
                        source: e,
                    },
                ),
            ),
            Err(e) => Err(e),
        }
    }
}

/// The message of the innermost error in `e`'s source chain.
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut current = e;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}
