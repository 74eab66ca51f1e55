//! Owns serializing heads for forwarding: [`write_request`] (client → server)
//! and [`write_response`] (server → client). Hop-by-hop fields are dropped
//! (RFC 9110 §7.6.1), the proxy's own connection fields and the
//! `X-Forwarded-*` / `Forwarded` (RFC 7239) fields are added. The framing
//! fields (`Content-Length`, `Transfer-Encoding`) are always kept as they are:
//! the body is forwarded verbatim, so they must keep describing it — even when
//! a peer names them in `Connection`, which would otherwise desynchronise us.

use std::io::Write;
use std::net::IpAddr;

use super::fields::{self, Fields};
use super::{BodyKind, RequestHead, ResponseHead, Version};

/// What to add to a forwarded request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forwarding<'a> {
    /// The client's address (an IPv4-mapped IPv6 address is written as IPv4).
    pub client_ip: IpAddr,
    /// The protocol the client used: `"http"` or `"https"`.
    pub proto: &'a str,
    /// Append the client to `X-Forwarded-For` (merging every such field).
    pub xff: bool,
    /// Set `X-Forwarded-Proto`, replacing the client's.
    pub xfp: bool,
    /// Append `for=…;proto=…` to `Forwarded` (RFC 7239).
    pub forwarded: bool,
    /// Pass a protocol upgrade (e.g. websocket) on to the server.
    pub upgrade: bool,
}

/// Fields that concern one connection only; never forwarded (the `Trailer`
/// announcement goes too: trailers are forwarded inside the verbatim body).
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// The `Connection` fields of a head, looked up once per head rather than
/// once per field: whether it lists a field name (most heads have at most
/// one `Connection` field).
struct Listed<'h, 'a> {
    all: &'h Fields<'a>,
    first: Option<&'a [u8]>,
    several: bool,
    /// Some element is not a fixed hop-by-hop name (those go anyway).
    names_others: bool,
}

impl<'h, 'a> Listed<'h, 'a> {
    fn of(all: &'h Fields<'a>) -> Self {
        let mut listed = Listed {
            all,
            first: None,
            several: false,
            names_others: false,
        };
        for &(name, value) in all {
            if !name.eq_ignore_ascii_case("connection") {
                continue;
            }
            match listed.first {
                None => listed.first = Some(value),
                Some(_) => listed.several = true,
            }
            listed.names_others |= fields::elements(value).any(|e| {
                !HOP_BY_HOP
                    .iter()
                    .any(|h| e.eq_ignore_ascii_case(h.as_bytes()))
            });
        }
        listed
    }

    /// Whether a `Connection` field lists `name` (ASCII case-insensitive).
    fn lists(&self, name: &str) -> bool {
        match self.first {
            None => false,
            Some(v) if !self.several => {
                fields::elements(v).any(|e| e.eq_ignore_ascii_case(name.as_bytes()))
            }
            Some(_) => fields::has_token(self.all, "connection", name.as_bytes()),
        }
    }
}

/// Whether a field must not be forwarded: a fixed hop-by-hop field or one
/// named in `Connection` — except framing fields and `Host`.
///
/// Called for every field of every head: a `Connection` field that names
/// only fixed hop-by-hop fields (the usual `keep-alive`) is not scanned again
/// for each of them.
fn is_hop_by_hop(name: &str, connection: &Listed<'_, '_>) -> bool {
    if HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h)) {
        return true;
    }
    if !connection.names_others
        || ["content-length", "transfer-encoding", "host"]
            .iter()
            .any(|f| name.eq_ignore_ascii_case(f))
    {
        return false;
    }
    connection.lists(name)
}

fn field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The non-empty values of every field called `name`, each followed by ", ".
fn prior_values(out: &mut Vec<u8>, all: &Fields<'_>, name: &str) {
    for v in fields::values(all, name) {
        let v = fields::trim_ows(v);
        if !v.is_empty() {
            out.extend_from_slice(v);
            out.extend_from_slice(b", ");
        }
    }
}

/// Appends `ip` as `Display` writes it: IPv4 digits by hand (once per
/// request, where the formatting machinery costs more than the rest of the
/// field), IPv6 through `Display`.
fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if octet >= 100 {
                    out.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.push(b'0' + octet / 10 % 10);
                }
                out.push(b'0' + octet % 10);
            }
        }
        // Writing into a Vec cannot fail.
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Appends a status code as `{:03}` writes it (three digits for every
/// status the parser accepts, 100..=599).
fn push_status(out: &mut Vec<u8>, status: u16) {
    if status < 1000 {
        // Each digit is below 10, so the casts cannot truncate.
        out.push(b'0' + (status / 100) as u8);
        out.push(b'0' + (status / 10 % 10) as u8);
        out.push(b'0' + (status % 10) as u8);
    } else {
        let _ = write!(out, "{status}");
    }
}

/// Appends the request head to send to the server: the request line as
/// HTTP/1.1 (whatever the client spoke: the proxy owns each connection's
/// persistence, and HTTP/1.1's default keep-alive needs no field), the
/// end-to-end fields in order, then `X-Forwarded-For`, `X-Forwarded-Proto`,
/// `Forwarded` as asked, then `Connection: upgrade` + `Upgrade` when
/// `fwd.upgrade` and the client asked for one. An HTTP/1.0 request without
/// `Host` gets an empty one first: HTTP/1.1 requires the field, and a server
/// must answer 400 to a request without it (RFC 9112 §3.2).
pub fn write_request(head: &RequestHead<'_>, out: &mut Vec<u8>, fwd: &Forwarding<'_>) {
    let all = head.headers.as_slice();
    let connection = Listed::of(all);
    let client = fwd.client_ip.to_canonical();
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.uri.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if head.host.is_none() {
        field(out, "Host", b"");
    }
    for &(name, value) in all {
        let replaced = (fwd.xff && name.eq_ignore_ascii_case("x-forwarded-for"))
            || (fwd.xfp && name.eq_ignore_ascii_case("x-forwarded-proto"))
            || (fwd.forwarded && name.eq_ignore_ascii_case("forwarded"));
        if !replaced && !is_hop_by_hop(name, &connection) {
            field(out, name, value);
        }
    }
    if fwd.xff {
        out.extend_from_slice(b"X-Forwarded-For: ");
        prior_values(out, all, "x-forwarded-for");
        push_ip(out, client);
        out.extend_from_slice(b"\r\n");
    }
    if fwd.xfp {
        field(out, "X-Forwarded-Proto", fwd.proto.as_bytes());
    }
    if fwd.forwarded {
        out.extend_from_slice(b"Forwarded: ");
        prior_values(out, all, "forwarded");
        out.extend_from_slice(b"for=");
        match client {
            IpAddr::V4(_) => push_ip(out, client),
            IpAddr::V6(_) => {
                out.extend_from_slice(b"\"[");
                push_ip(out, client);
                out.extend_from_slice(b"]\"");
            }
        }
        out.extend_from_slice(b";proto=");
        out.extend_from_slice(fwd.proto.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(protocol) = head.upgrade.as_deref().filter(|_| fwd.upgrade) {
        out.extend_from_slice(b"Connection: upgrade\r\n");
        field(out, "Upgrade", protocol.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends the response head to send to the client: the status line as
/// HTTP/1.1, the end-to-end fields in order (a 101 keeps its `Connection` and
/// `Upgrade`), then the client-side connection field: `Connection: close`
/// when the client connection will close, `Connection: keep-alive` when it
/// stays open for an HTTP/1.0 client. None is added to a 1xx.
///
/// An `UntilClose` body can only end with the connection, so the client
/// connection must close after it: this writes `Connection: close` for it
/// whatever `client_keep_alive` says, and the caller must close.
pub fn write_response(
    head: &ResponseHead<'_>,
    out: &mut Vec<u8>,
    client_keep_alive: bool,
    client_version: Version,
) {
    let all = head.headers.as_slice();
    let connection = Listed::of(all);
    out.extend_from_slice(b"HTTP/1.1 ");
    push_status(out, head.status);
    out.push(b' ');
    out.extend_from_slice(head.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    let switching = head.is_switching_protocols();
    for &(name, value) in all {
        let tunnel_field =
            name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("upgrade");
        if (switching && tunnel_field) || !is_hop_by_hop(name, &connection) {
            field(out, name, value);
        }
    }
    if !switching && !head.is_interim() {
        if !client_keep_alive || head.body == BodyKind::UntilClose {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if client_version == Version::Http10 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Limits, parse_request, parse_response};
    use std::net::{Ipv4Addr, Ipv6Addr};

    const V4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));

    fn fwd(ip: IpAddr) -> Forwarding<'static> {
        Forwarding {
            client_ip: ip,
            proto: "https",
            xff: false,
            xfp: false,
            forwarded: false,
            upgrade: false,
        }
    }

    fn request(raw: &str, f: &Forwarding<'_>) -> String {
        let head = parse_request(raw.as_bytes(), &Limits::default());
        let head = head.ok().flatten().expect("a valid request");
        let mut out = Vec::new();
        write_request(&head, &mut out, f);
        // What we write must parse back.
        let again = parse_request(&out, &Limits::default());
        assert!(
            matches!(again, Ok(Some(_))),
            "{:?}",
            String::from_utf8_lossy(&out)
        );
        String::from_utf8(out).expect("ASCII")
    }

    fn response(raw: &str, keep_alive: bool, version: Version) -> String {
        let head = parse_response(raw.as_bytes(), &Limits::default(), false);
        let head = head.ok().flatten().expect("a valid response");
        let mut out = Vec::new();
        write_response(&head, &mut out, keep_alive, version);
        String::from_utf8(out).expect("ASCII")
    }

    #[test]
    fn a_plain_request_is_forwarded_as_http_1_1_with_its_fields_in_order() {
        let out = request(
            "GET /x HTTP/1.0\r\nHost: h\r\nA: 1\r\nb: 2\r\n\r\n",
            &fwd(V4),
        );
        assert_eq!(out, "GET /x HTTP/1.1\r\nHost: h\r\nA: 1\r\nb: 2\r\n\r\n");
    }

    #[test]
    fn an_http_1_0_request_without_host_is_forwarded_with_an_empty_host() {
        // Found by fuzz/http_request: forwarded as HTTP/1.1 without Host, it
        // was a request every HTTP/1.1 server must refuse.
        let out = request("GET /x HTTP/1.0\r\nA: 1\r\n\r\n", &fwd(V4));
        assert_eq!(out, "GET /x HTTP/1.1\r\nHost: \r\nA: 1\r\n\r\n");
    }

    #[test]
    fn hop_by_hop_fields_are_removed_including_those_named_in_connection() {
        let raw = "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: 5\r\n\
                   TE: trailers\r\nTrailer: X-Sum\r\nUpgrade: h2c\r\nProxy-Connection: close\r\n\
                   x-secret: 1\r\nX-Kept: 2\r\n\r\n";
        assert_eq!(
            request(raw, &fwd(V4)),
            "GET / HTTP/1.1\r\nHost: h\r\nX-Kept: 2\r\n\r\n"
        );
    }

    #[test]
    fn fields_named_in_any_of_several_connection_fields_are_removed() {
        let raw = "GET / HTTP/1.1\r\nHost: h\r\nConnection: X-A\r\nX-A: 1\r\nX-B: 2\r\n\
                   connection: keep-alive, x-b\r\nX-C: 3\r\n\r\n";
        assert_eq!(
            request(raw, &fwd(V4)),
            "GET / HTTP/1.1\r\nHost: h\r\nX-C: 3\r\n\r\n"
        );
    }

    #[test]
    fn connection_cannot_strip_the_framing_fields_or_host() {
        let raw = "POST / HTTP/1.1\r\nHost: h\r\nConnection: Content-Length, host\r\nContent-Length: 2\r\n\r\n";
        let out = request(raw, &fwd(V4));
        assert_eq!(
            out,
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n"
        );
        let raw = "POST / HTTP/1.1\r\nHost: h\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(request(raw, &fwd(V4)).contains("\r\nTransfer-Encoding: chunked\r\n"));
    }

    #[test]
    fn xff_is_appended_to_existing_ones_merged_into_one_field() {
        let f = Forwarding {
            xff: true,
            ..fwd(V4)
        };
        let raw = "GET / HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1\r\nHost: h\r\nx-forwarded-for: 10.0.0.2, 10.0.0.3\r\n\r\n";
        assert_eq!(
            request(raw, &f),
            "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.1, 10.0.0.2, 10.0.0.3, 192.0.2.7\r\n\r\n"
        );
        let out = request("GET / HTTP/1.1\r\nHost: h\r\n\r\n", &f);
        assert_eq!(
            out,
            "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 192.0.2.7\r\n\r\n"
        );
    }

    #[test]
    fn without_xff_the_clients_xff_passes_unchanged() {
        let raw = "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n";
        assert_eq!(request(raw, &fwd(V4)), raw);
    }

    #[test]
    fn xfp_replaces_the_clients_value() {
        let f = Forwarding {
            xfp: true,
            ..fwd(V4)
        };
        let raw = "GET / HTTP/1.1\r\nX-Forwarded-Proto: http\r\nHost: h\r\n\r\n";
        assert_eq!(
            request(raw, &f),
            "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-Proto: https\r\n\r\n"
        );
    }

    #[test]
    fn forwarded_is_appended_with_ipv6_quoted_and_bracketed() {
        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        let f = Forwarding {
            forwarded: true,
            ..fwd(v6)
        };
        let raw = "GET / HTTP/1.1\r\nHost: h\r\nForwarded: for=198.51.100.1\r\n\r\n";
        assert_eq!(
            request(raw, &f),
            "GET / HTTP/1.1\r\nHost: h\r\nForwarded: for=198.51.100.1, for=\"[2001:db8::1]\";proto=https\r\n\r\n"
        );
        let f = Forwarding {
            forwarded: true,
            ..fwd(V4)
        };
        let out = request("GET / HTTP/1.1\r\nHost: h\r\n\r\n", &f);
        assert!(
            out.contains("\r\nForwarded: for=192.0.2.7;proto=https\r\n"),
            "{out}"
        );
    }

    #[test]
    fn an_ipv4_mapped_client_is_written_as_ipv4() {
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped());
        let f = Forwarding {
            xff: true,
            forwarded: true,
            ..fwd(mapped)
        };
        let out = request("GET / HTTP/1.1\r\nHost: h\r\n\r\n", &f);
        assert!(
            out.contains("X-Forwarded-For: 192.0.2.7\r\n") && out.contains("for=192.0.2.7;"),
            "{out}"
        );
    }

    #[test]
    fn websocket_upgrade_is_preserved_when_upgrade_is_allowed() {
        let raw = "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                   Sec-WebSocket-Key: k\r\n\r\n";
        let f = Forwarding {
            upgrade: true,
            ..fwd(V4)
        };
        assert_eq!(
            request(raw, &f),
            "GET /ws HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Key: k\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
        );
        assert_eq!(
            request(raw, &fwd(V4)),
            "GET /ws HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Key: k\r\n\r\n"
        );
    }

    #[test]
    fn a_response_loses_its_hop_by_hop_fields_and_keeps_its_framing() {
        let raw = "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\n\
                   Transfer-Encoding: chunked\r\nTrailer: X-Sum\r\nX-End: 2\r\n\r\n";
        assert_eq!(
            response(raw, true, Version::Http11),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-End: 2\r\n\r\n"
        );
    }

    #[test]
    fn the_client_connection_field_follows_the_proxys_decision() {
        let raw = "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            response(raw, false, Version::Http11),
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(
            response(raw, true, Version::Http10),
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"
        );
        assert_eq!(
            response(raw, true, Version::Http11),
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn a_body_until_close_always_closes_the_client_connection() {
        let out = response("HTTP/1.1 200 OK\r\n\r\n", true, Version::Http11);
        assert_eq!(out, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
    }

    #[test]
    fn switching_protocols_keeps_connection_and_upgrade() {
        let raw = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Keep-Alive: 1\r\nSec-WebSocket-Accept: a\r\n\r\n";
        assert_eq!(
            response(raw, true, Version::Http11),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: a\r\n\r\n"
        );
    }

    #[test]
    fn ip_addresses_and_statuses_are_written_as_display_writes_them() {
        let v4s = [
            Ipv4Addr::new(0, 0, 0, 0),
            Ipv4Addr::new(9, 10, 99, 100),
            Ipv4Addr::new(255, 254, 200, 101),
            Ipv4Addr::new(127, 0, 0, 1),
        ];
        for ip in v4s.map(IpAddr::V4).into_iter().chain([
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        ]) {
            let mut out = Vec::new();
            push_ip(&mut out, ip);
            assert_eq!(out, ip.to_string().as_bytes());
        }
        for status in [0, 7, 42, 100, 204, 599, 999, 1000, u16::MAX] {
            let mut out = Vec::new();
            push_status(&mut out, status);
            assert_eq!(out, format!("{status:03}").as_bytes());
        }
    }

    #[test]
    fn every_hop_by_hop_name_in_any_case_and_every_listed_name_is_dropped() {
        let none: Vec<fields::Field<'_>> = Vec::new();
        let listed = Listed::of(&none);
        for h in HOP_BY_HOP {
            assert!(is_hop_by_hop(h, &listed), "{h}");
            assert!(is_hop_by_hop(&h.to_ascii_uppercase(), &listed), "{h}");
        }
        for name in ["host", "content-length", "x-te", "trailers", "connections"] {
            assert!(!is_hop_by_hop(name, &listed), "{name}");
        }
        let conn: Vec<fields::Field<'_>> = vec![("Connection", &b"X-A, Host, Content-Length"[..])];
        let listed = Listed::of(&conn);
        assert!(is_hop_by_hop("x-a", &listed));
        let conn: Vec<fields::Field<'_>> = vec![
            ("Connection", &b"keep-alive"[..]),
            ("connection", &b"Upgrade, close"[..]),
        ];
        let listed = Listed::of(&conn);
        assert!(listed.names_others && is_hop_by_hop("Close", &listed));
        let conn: Vec<fields::Field<'_>> = vec![("Connection", &b"Keep-Alive, te"[..])];
        let listed = Listed::of(&conn);
        assert!(!listed.names_others && !is_hop_by_hop("x-a", &listed));
        assert!(!is_hop_by_hop("host", &listed) && !is_hop_by_hop("Content-Length", &listed));
    }

    #[test]
    fn interim_responses_get_no_connection_field() {
        let out = response("HTTP/1.1 100 Continue\r\n\r\n", false, Version::Http11);
        assert_eq!(out, "HTTP/1.1 100 Continue\r\n\r\n");
    }
}
