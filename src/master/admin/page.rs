//! Owns `GET /status`: one self-contained HTML page (`status.html`: inline
//! CSS and JS, no external asset) showing the tables of `lbctl status`. The
//! current [`Status`] is embedded so the first paint needs no request; the
//! page then fetches `/status.json` every 2 s. With `actions` (an `[admin]
//! token` is set) each server row gets enable/disable/drain buttons that POST
//! with the token the user types in.

use super::http::Response;
use crate::stats::Status;

const PAGE: &str = include_str!("status.html");

/// Allows the page's own inline script and style and requests to its own
/// origin, nothing else; no framing.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// The page for `status`.
pub fn render(status: &Status, actions: bool) -> String {
    let json = serde_json::to_string(status).unwrap_or_else(|_| "null".to_string());
    PAGE.replace("__STATUS__", &script_safe(&json))
        .replace("__ACTIONS__", if actions { "true" } else { "false" })
}

/// The `GET /status` answer.
pub fn response(status: &Status, actions: bool) -> Response {
    Response::new(
        200,
        "text/html; charset=utf-8",
        render(status, actions).into_bytes(),
    )
    .header("Content-Security-Policy", CSP)
}

/// JSON that cannot end the `<script>` element it is embedded in: `<`, `>`
/// and `&` (only ever inside JSON strings) become `\u` escapes.
fn script_safe(json: &str) -> String {
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(config: &str) -> Status {
        Status {
            dns: Vec::new(),
            version: "1.2.3".into(),
            master_pid: 1,
            generation: 1,
            phase: "running".into(),
            uptime_secs: 0,
            config: config.into(),
            workers_configured: 1,
            workers: Vec::new(),
            listens: Vec::new(),
        }
    }

    #[test]
    fn the_page_embeds_the_status_and_the_actions_flag() {
        let page = render(&status("/etc/lbctl/lbctl.toml"), true);
        assert!(
            page.contains("\"config\":\"/etc/lbctl/lbctl.toml\""),
            "{page}"
        );
        assert!(page.contains("const ACTIONS = true;"));
        assert!(!page.contains("__STATUS__") && !page.contains("__ACTIONS__"));
        assert!(render(&status("x"), false).contains("const ACTIONS = false;"));
    }

    #[test]
    fn embedded_json_cannot_close_the_script_element() {
        let page = render(&status("</script><script>alert(1)</script>"), false);
        assert!(!page.contains("</script><script>alert"), "{page}");
        let start = page.find("type=\"application/json\">").expect("json") + 24;
        let end = start + page[start..].find("</script>").expect("end");
        let back: Status = serde_json::from_str(&page[start..end]).expect("valid JSON");
        assert_eq!(back.config, "</script><script>alert(1)</script>");
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        let page = render(&status("x"), true);
        for needle in ["http://", "https://", "src=\"", "href=\""] {
            assert!(!page.contains(needle), "{needle} in the page");
        }
    }
}
