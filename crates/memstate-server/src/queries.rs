//! Named queries: `GET /queries/{name}` and the list at `GET /queries`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use memstate_core::Consistency;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{ApiError, AppState, Hosted, LAST_WRITE_HEADER, parse_consistency};

/// A query, ready to run over the model: its parameters are already parsed.
pub(crate) type Prepared<M> =
    Box<dyn FnOnce(&M) -> Result<serde_json::Value, serde_json::Error> + Send>;
/// A registered query: parses the URL's parameters, or says what is wrong with them.
pub(crate) type QueryFn<M> = Arc<dyn Fn(&str) -> Result<Prepared<M>, String> + Send + Sync>;

pub(crate) fn erase<M, P, R, F>(f: F) -> QueryFn<M>
where
    M: Hosted,
    P: DeserializeOwned + Send + 'static,
    R: Serialize + 'static,
    F: Fn(&M, P) -> R + Send + Sync + 'static,
{
    let f = Arc::new(f);
    Arc::new(move |params: &str| {
        let p: P = serde_urlencoded::from_str(params).map_err(|e| e.to_string())?;
        let f = Arc::clone(&f);
        let prepared: Prepared<M> = Box::new(move |model: &M| serde_json::to_value(f(model, p)));
        Ok(prepared)
    })
}

/// Splits `consistency` from the query's own parameters.
fn split_params(raw: Option<&str>) -> Result<(Option<String>, String), ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| ApiError::bad_request("bad_parameters", e.to_string()))?;
    let mut consistency = None;
    let mut rest = Vec::new();
    for (k, v) in pairs {
        if k == "consistency" {
            consistency = Some(v);
        } else {
            rest.push((k, v));
        }
    }
    let rest = serde_urlencoded::to_string(rest)
        .map_err(|e| ApiError::bad_request("bad_parameters", e.to_string()))?;
    Ok((consistency, rest))
}

fn last_write(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    headers
        .get(LAST_WRITE_HEADER)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "bad_last_write",
                        "Memstate-Last-Write must be an applied index (a whole number)",
                    )
                })
        })
        .transpose()
}

pub(crate) async fn run<M: Hosted>(
    State(state): State<Arc<AppState<M>>>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let query = state.queries.get(&name).ok_or_else(|| {
        ApiError::not_found(
            "unknown_query",
            format!(
                "no query {name:?}; this node has: {}",
                state.queries.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        )
    })?;
    let (consistency, params) = split_params(raw.as_deref())?;
    let level = match consistency {
        Some(text) => parse_consistency(&text, last_write(&headers)?)
            .map_err(|e| ApiError::bad_request("bad_consistency", e))?,
        None => Consistency::Local,
    };
    let prepared = query(&params).map_err(|e| {
        ApiError::bad_request(
            "bad_parameters",
            format!("the parameters do not fit query {name:?}: {e}"),
        )
    })?;
    let value = state
        .engine
        .query(level, prepared)
        .await
        .map_err(|e| ApiError::from_engine(&e))?
        .map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "unencodable_result",
                format!("query {name:?} returned a value that cannot be encoded: {e}"),
            )
        })?;
    Ok(Json(value).into_response())
}

pub(crate) async fn list<M: Hosted>(State(state): State<Arc<AppState<M>>>) -> Json<Vec<String>> {
    Json(state.queries.keys().cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_without_parameters_takes_unit() {
        let q: QueryFn<crate::kv::KvStore> = erase(|kv: &crate::kv::KvStore, (): ()| kv.count(""));
        let prepared = q("").map_err(|e| e.to_string()).unwrap();
        assert_eq!(
            prepared(&crate::kv::KvStore::default()).unwrap(),
            serde_json::json!(0)
        );
    }

    #[test]
    fn consistency_is_taken_out_of_the_parameters() {
        let (c, rest) =
            split_params(Some("key=a%20b&consistency=at_least%3A3&n=2")).unwrap_or_default();
        assert_eq!(c.as_deref(), Some("at_least:3"));
        assert_eq!(rest, "key=a+b&n=2");
    }
}
