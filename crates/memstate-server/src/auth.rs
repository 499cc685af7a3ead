//! The optional bearer token.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::{ApiError, AppState, Hosted};

/// A secret that never prints itself.
#[derive(Clone)]
pub(crate) struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    pub(crate) fn new(token: String) -> Self {
        Self(token)
    }

    /// Compares without stopping at the first differing byte, so the time
    /// taken does not tell how much of a guess was right.
    fn matches(&self, offered: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        let mut diff = u8::from(expected.len() != offered.len());
        for (i, e) in expected.iter().enumerate() {
            diff |= e ^ offered.get(i).copied().unwrap_or(0);
        }
        diff == 0
    }
}

pub(crate) async fn require_token<M: Hosted>(
    State(state): State<Arc<AppState<M>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = &state.token else {
        return next.run(request).await;
    };
    let offered = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    match offered {
        Some(offered) if token.matches(offered) => next.run(request).await,
        _ => {
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this node requires Authorization: Bearer <token>",
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_matches() {
        let t = Token::new("s3cret".into());
        assert!(t.matches(b"s3cret"));
        assert!(!t.matches(b"s3cre"));
        assert!(!t.matches(b"s3cret!"));
        assert!(!t.matches(b"S3cret"));
        assert!(!t.matches(b""));
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
    }
}
