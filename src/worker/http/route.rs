//! Owns request routing (`[[listen.route]]`): the first route whose `host`
//! (exact, or `*.suffix`) and `path_prefix` both match a request chooses its
//! server pool; a request no route matches goes to the listen's own servers
//! (`pools[0]`). Host matching ignores case and the port.

use crate::config::{HostMatch, RouteConfig};
use crate::http::RequestHead;

/// The pool index for `head`.
pub fn pool_for(routes: &[RouteConfig], head: &RequestHead) -> usize {
    if routes.is_empty() {
        return 0;
    }
    let host = head.host.map(host_only).unwrap_or_default();
    let path = path_of(head.uri);
    routes
        .iter()
        .find(|r| {
            r.host.as_ref().is_none_or(|h| host_matches(h, &host))
                && r.path_prefix
                    .as_ref()
                    .is_none_or(|p| path.starts_with(p.as_str()))
        })
        .map_or(0, |r| r.pool)
}

/// The host without its port, lower-cased.
fn host_only(host: &str) -> String {
    let h = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    h.to_ascii_lowercase()
}

/// The path of a request-target (origin-form, or absolute-form's path).
fn path_of(uri: &str) -> &str {
    match uri.find("://") {
        Some(i) => {
            let rest = &uri[i + 3..];
            rest.find('/').map_or("/", |j| &rest[j..])
        }
        None => uri,
    }
}

fn host_matches(m: &HostMatch, host: &str) -> bool {
    match m {
        HostMatch::Exact(h) => h == host,
        HostMatch::Suffix(s) => host.ends_with(s.as_str()) && host.len() > s.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_loses_its_port_and_case() {
        assert_eq!(host_only("API.Example.com:8080"), "api.example.com");
        assert_eq!(host_only("[::1]:80"), "::1");
        assert_eq!(host_only("plain"), "plain");
    }

    #[test]
    fn a_suffix_matches_subdomains_but_not_the_bare_domain() {
        let m = HostMatch::Suffix(".example.com".into());
        assert!(host_matches(&m, "a.example.com"));
        assert!(!host_matches(&m, "example.com"));
        assert!(!host_matches(&m, "a.example.org"));
    }

    #[test]
    fn absolute_form_targets_route_by_their_path() {
        assert_eq!(path_of("http://h:1/api/x?q"), "/api/x?q");
        assert_eq!(path_of("http://h"), "/");
        assert_eq!(path_of("/v1/a"), "/v1/a");
    }
}
