//! The console: one page and its script and style sheet, embedded in the binary (no CDN, works
//! offline). The page only reads the JSON endpoints (`/v1/plan`, `/v1/snapshot`, `/v1/history`)
//! and posts what-ifs to `/v1/plans`; it computes nothing the server does not say.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

const INDEX_HTML: &str = include_str!("console/index.html");
const APP_JS: &str = include_str!("console/app.js");
const APP_CSS: &str = include_str!("console/app.css");

/// Same-origin everything: the page loads nothing from elsewhere and runs no inline script.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// `GET /`.
pub(super) async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /console/{asset}`.
pub(super) async fn asset(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "app.js" => page("text/javascript; charset=utf-8", APP_JS),
        "app.css" => page("text/css; charset=utf-8", APP_CSS),
        _ => (StatusCode::NOT_FOUND, "no such console asset\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_assets() {
        // No CDN, no inline script: everything the page loads is served here.
        for url in ["src=\"", "href=\""] {
            for (i, _) in INDEX_HTML.match_indices(url) {
                let target = &INDEX_HTML[i + url.len()..];
                assert!(
                    target.starts_with("/console/") || target.starts_with('#'),
                    "{}",
                    &target[..40.min(target.len())]
                );
            }
        }
        assert!(!INDEX_HTML.contains("<script>") && !INDEX_HTML.contains("style="));
        // The only URL in the script is SVG's namespace name, which is never fetched.
        let without_namespace = APP_JS.replace("\"http://www.w3.org/2000/svg\"", "");
        assert!(!without_namespace.contains("http://") && !without_namespace.contains("https://"));
    }
}
