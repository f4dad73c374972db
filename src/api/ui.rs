//! The web UI: three static files (`ui/index.html`, `ui/app.js`,
//! `ui/app.css` at the repository root) embedded in the binary and served at
//! `GET /`, `GET /ui/app.js` and `GET /ui/app.css` when `ui` is on.
//!
//! These routes need no token: the page itself asks for it and sends it on
//! every data route it calls, which stay protected. The page is same-origin
//! only: a strict Content-Security-Policy allows nothing from another host,
//! no inline script and no framing. They are pages, not JSON routes, so they
//! are not in `/openapi.json` (and are written without `warp::path!`, which
//! the OpenAPI coverage check looks for).

use std::sync::OnceLock;

use warp::filters::BoxedFilter;
use warp::http::{header, HeaderValue, StatusCode};
use warp::Filter;

type Resp = warp::reply::Response;

/// One embedded file.
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    tag: OnceLock<String>,
}

impl Asset {
    const fn new(body: &'static [u8], content_type: &'static str) -> Asset {
        Asset {
            body,
            content_type,
            tag: OnceLock::new(),
        }
    }

    /// A strong validator, computed once: the version and a checksum of the
    /// bytes, so a new build is never served from a stale cache.
    fn etag(&self) -> &str {
        self.tag.get_or_init(|| {
            format!(
                "\"{}-{:08x}\"",
                env!("CARGO_PKG_VERSION"),
                crc32fast::hash(self.body)
            )
        })
    }
}

static INDEX: Asset = Asset::new(
    include_bytes!("../../ui/index.html"),
    "text/html; charset=utf-8",
);
static APP_JS: Asset = Asset::new(
    include_bytes!("../../ui/app.js"),
    "text/javascript; charset=utf-8",
);
static APP_CSS: Asset = Asset::new(
    include_bytes!("../../ui/app.css"),
    "text/css; charset=utf-8",
);

/// Only this origin, no inline script, no framing; the favicon is a data: URL.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// The asset with its headers, or a 304 when the browser already has it.
fn serve(asset: &'static Asset, if_none_match: Option<String>) -> Resp {
    let tag = asset.etag();
    let fresh = if_none_match.is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut resp = if fresh {
        let mut r = Resp::new(Vec::new().into());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Resp::new(asset.body.into());
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        r
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(tag) {
        h.insert(header::ETAG, v);
    }
    // Revalidate every time: cheap with the ETag, and an upgrade shows at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

fn get(path: Option<(&'static str, &'static str)>, asset: &'static Asset) -> BoxedFilter<(Resp,)> {
    let route = match path {
        None => warp::path::end().boxed(),
        Some((dir, file)) => warp::path(dir)
            .and(warp::path(file))
            .and(warp::path::end())
            .boxed(),
    };
    route
        .and(warp::get().or(warp::head()).unify())
        .and(warp::header::optional::<String>("if-none-match"))
        .map(move |inm: Option<String>| serve(asset, inm))
        .boxed()
}

/// `GET /`, `GET /ui/app.js`, `GET /ui/app.css`: no token needed.
pub fn routes() -> BoxedFilter<(Resp,)> {
    get(None, &INDEX)
        .or(get(Some(("ui", "app.js")), &APP_JS))
        .unify()
        .or(get(Some(("ui", "app.css")), &APP_CSS))
        .unify()
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_each_asset_with_its_type_and_a_strict_policy() {
        for a in [&INDEX, &APP_JS, &APP_CSS] {
            let r = serve(a, None);
            assert_eq!(r.status(), StatusCode::OK);
            let h = r.headers();
            assert_eq!(h[header::CONTENT_TYPE], a.content_type);
            assert_eq!(h[header::ETAG], a.etag());
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
        }
        let page = String::from_utf8_lossy(INDEX.body);
        assert!(page.contains("/ui/app.js") && page.contains("/ui/app.css"));
    }

    #[test]
    fn a_known_etag_gets_a_304_and_another_the_file() {
        let tag = APP_JS.etag().to_string();
        assert_ne!(tag, INDEX.etag());
        let again = serve(&APP_JS, Some(format!("\"x\", {tag}")));
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        let other = serve(&APP_JS, Some("\"x\"".into()));
        assert_eq!(other.status(), StatusCode::OK);
    }

    #[test]
    fn the_assets_stay_small_and_name_no_other_host() {
        for a in [&INDEX, &APP_JS, &APP_CSS] {
            assert!(a.body.len() < 64 * 1024, "an asset is over 64 KiB");
            let text = String::from_utf8_lossy(a.body);
            for (at, _) in text.match_indices("//") {
                let before = &text[..at];
                // Only the SVG namespace of the inline icon is a URL.
                assert!(
                    !(before.ends_with("http:") || before.ends_with("https:"))
                        || text[at..].starts_with("//www.w3.org/2000/svg"),
                    "an asset names another host near {:?}",
                    &text[at.saturating_sub(20)..(at + 40).min(text.len())]
                );
            }
        }
    }
}
