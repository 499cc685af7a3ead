//! The web console: one static page, embedded in the binary, fed by the same
//! `/status` JSON and `/events` stream a program would use.

use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("../assets/console.html");

pub(crate) async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
}
