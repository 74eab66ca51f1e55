//! Owns routing: `[[listen.route]]` by host (exact and `*.suffix`) and by
//! path prefix to named pools (`[[listen.backend]]`), first match wins, the
//! listen's own servers otherwise; `hash_key` keeps one header value on one
//! server.

use super::start_http;
use crate::util::TempDir;
use crate::util::http_backend::HttpBackend;
use crate::util::http_client::HttpConn;

fn server_of(c: &mut HttpConn, host: &str, path: &str) -> String {
    let r = c
        .request("GET", path, &[("Host", host)], None)
        .expect("response");
    assert_eq!(r.status, 200, "{host}{path}");
    r.text().split(' ').next().unwrap_or("").to_string()
}

#[test]
fn routes_choose_pools_by_host_and_path_and_the_rest_goes_to_the_default() {
    let dir = TempDir::new();
    let web = HttpBackend::start("web");
    let api1 = HttpBackend::start("api1");
    let api2 = HttpBackend::start("api2");
    let stat = HttpBackend::start("static");
    let (_m, bind) = start_http(&dir, &[&web], |l| {
        l.line("[[listen.backend]]")
            .line(r#"name = "api""#)
            .line(&format!(
                r#"servers = [ {{ addr = "{}" }}, {{ addr = "{}" }} ]"#,
                api1.addr(),
                api2.addr()
            ))
            .line("[[listen.backend]]")
            .line(r#"name = "static""#)
            .line(&format!(r#"servers = [ {{ addr = "{}" }} ]"#, stat.addr()))
            .line("[[listen.route]]")
            .line(r#"host = "api.example.com""#)
            .line(r#"pool = "api""#)
            .line("[[listen.route]]")
            .line(r#"path_prefix = "/static/""#)
            .line(r#"pool = "static""#)
            .line("[[listen.route]]")
            .line(r#"host = "*.cdn.example.com""#)
            .line(r#"pool = "static""#)
    });
    let mut c = HttpConn::connect(bind).expect("connect");
    let a = server_of(&mut c, "API.example.com:80", "/v1/x");
    let b = server_of(&mut c, "api.example.com", "/v1/y");
    let mut api = [a, b];
    api.sort();
    assert_eq!(
        api,
        ["api1", "api2"],
        "the api pool balances over its two servers"
    );
    assert_eq!(
        server_of(&mut c, "www.example.com", "/static/app.js"),
        "static"
    );
    assert_eq!(
        server_of(&mut c, "img.cdn.example.com", "/logo.png"),
        "static"
    );
    // First match wins: the host route comes before the path route.
    assert!(server_of(&mut c, "api.example.com", "/static/x").starts_with("api"));
    assert_eq!(server_of(&mut c, "www.example.com", "/index.html"), "web");
    assert_eq!(server_of(&mut c, "cdn.example.com", "/logo.png"), "web");
}

#[test]
fn hash_key_header_keeps_a_user_on_one_server() {
    let dir = TempDir::new();
    let a = HttpBackend::start("A");
    let b = HttpBackend::start("B");
    let c3 = HttpBackend::start("C");
    let (_m, bind) = start_http(&dir, &[&a, &b, &c3], |l| {
        l.balance("source_hash")
            .line(r#"hash_key = "header:X-User""#)
    });
    let mut c = HttpConn::connect(bind).expect("connect");
    let mut seen = std::collections::HashSet::new();
    for user in 0..12 {
        let u = format!("user-{user}");
        let mut first = None;
        for _ in 0..4 {
            let r = c
                .request("GET", "/", &[("X-User", u.as_str())], None)
                .expect("response");
            let name = r.text().split(' ').next().unwrap_or("").to_string();
            assert_eq!(*first.get_or_insert(name.clone()), name, "{u} moved");
            seen.insert(name);
        }
    }
    assert!(seen.len() > 1, "all users hashed to one server: {seen:?}");
}
