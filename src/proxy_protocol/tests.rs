use super::*;

fn done(buf: &[u8]) -> (Header, usize) {
    match parse(buf) {
        Ok(Parsed::Done { header, len }) => (header, len),
        other => panic!("{:?}: {other:?}", buf.escape_ascii().to_string()),
    }
}

fn refused(buf: &[u8]) -> &'static str {
    match parse(buf) {
        Err(ProxyError(why)) => why,
        other => panic!(
            "{:?} was not refused: {other:?}",
            buf.escape_ascii().to_string()
        ),
    }
}

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

/// Every strict prefix of a valid header is incomplete, never refused.
fn prefixes_are_incomplete(buf: &[u8]) {
    let (_, len) = done(buf);
    for cut in 0..len {
        assert_eq!(parse(&buf[..cut]), Ok(Parsed::Incomplete), "prefix {cut}");
    }
}

#[test]
fn v1_tcp4_is_read_and_what_follows_is_left() {
    let buf = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n";
    let (h, len) = done(buf);
    assert_eq!(
        h,
        Header::Proxy {
            src: sa("192.0.2.7:56324"),
            dst: sa("198.51.100.1:443")
        }
    );
    assert_eq!(&buf[len..], b"GET / HTTP/1.1\r\n");
    prefixes_are_incomplete(buf);
}

#[test]
fn v1_tcp6_and_unknown_are_read() {
    let (h, _) = done(b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n");
    assert_eq!(
        h,
        Header::Proxy {
            src: sa("[2001:db8::1]:1"),
            dst: sa("[::1]:65535")
        }
    );
    assert_eq!(done(b"PROXY UNKNOWN\r\n"), (Header::Unknown, 15));
    // After UNKNOWN the rest of the line is ignored (the spec says so).
    let (h, _) = done(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n");
    assert_eq!(h, Header::Unknown);
}

#[test]
fn v1_longest_header_fits_and_one_byte_more_is_refused() {
    let full = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    assert_eq!(full.len(), V1_MAX);
    assert_eq!(done(full).1, V1_MAX);
    let mut long = b"PROXY UNKNOWN ".to_vec();
    long.resize(V1_MAX, b'x');
    assert_eq!(parse(&long[..V1_MAX - 1]), Ok(Parsed::Incomplete));
    assert!(refused(&long).contains("107"));
    long.truncate(V1_MAX - 1);
    long.extend_from_slice(b"\r\n");
    assert!(refused(&long).contains("107"));
}

#[test]
fn v1_malformed_lines_are_refused() {
    for bad in [
        &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"[..],
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
        b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
        b"PROXY TCP4 ::1 ::1 1 2\r\n",
        b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
        b"PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n",
        b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY \r\n",
        b"PROXY TCP4 1.2.3.4\x00 5.6.7.8 1 2\r\n",
        b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXYTCP4",
    ] {
        refused(bad);
    }
}

#[test]
fn garbage_is_refused_at_its_first_byte() {
    assert_eq!(refused(b"G"), "not a PROXY header");
    assert_eq!(refused(b"GET / HTTP/1.1\r\n"), "not a PROXY header");
    assert_eq!(refused(b"\x16\x03\x01"), "not a PROXY header");
    assert_eq!(refused(b"PRX"), "not a PROXY header");
    assert_eq!(refused(b"\r\n\r\n\0\r\nQUIX"), "not a PROXY header");
    assert_eq!(parse(b""), Ok(Parsed::Incomplete));
}

fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
    let mut b = V2_SIGNATURE.to_vec();
    b.push(cmd);
    b.push(fam);
    b.extend_from_slice(&(body.len() as u16).to_be_bytes());
    b.extend_from_slice(body);
    b
}

#[test]
fn v2_inet_with_tlvs_is_read_and_what_follows_is_left() {
    let mut body = vec![192, 0, 2, 7, 198, 51, 100, 1, 0xdc, 0x04, 0x01, 0xbb];
    // PP2_TYPE_AUTHORITY "x", PP2_TYPE_NOOP of 0 bytes.
    body.extend_from_slice(&[0x02, 0x00, 0x01, b'x', 0x04, 0x00, 0x00]);
    let mut buf = v2(0x21, 0x11, &body);
    let len = buf.len();
    buf.extend_from_slice(b"hello");
    assert_eq!(
        done(&buf),
        (
            Header::Proxy {
                src: sa("192.0.2.7:56324"),
                dst: sa("198.51.100.1:443")
            },
            len
        )
    );
    prefixes_are_incomplete(&buf);
}

#[test]
fn v2_inet6_local_unspec_and_unix_are_read() {
    let mut body = vec![0u8; 36];
    body[15] = 1; // src ::1
    body[16] = 0x20;
    body[17] = 0x01; // dst 2001::
    body[32..34].copy_from_slice(&1234u16.to_be_bytes());
    body[34..36].copy_from_slice(&80u16.to_be_bytes());
    let (h, _) = done(&v2(0x21, 0x21, &body));
    assert_eq!(
        h,
        Header::Proxy {
            src: sa("[::1]:1234"),
            dst: sa("[2001::]:80")
        }
    );
    // LOCAL: anything after the 16 bytes is skipped, whatever the family.
    assert_eq!(done(&v2(0x20, 0x00, &[])), (Header::Local, 16));
    assert_eq!(done(&v2(0x20, 0x11, &[1, 2, 3])), (Header::Local, 19));
    assert_eq!(done(&v2(0x21, 0x00, &[])).0, Header::Unknown);
    assert_eq!(done(&v2(0x21, 0x31, &[0u8; 216])).0, Header::Unknown);
}

#[test]
fn v2_malformed_headers_are_refused() {
    let addr4 = [1u8, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2];
    refused(&v2(0x11, 0x11, &addr4)); // version 1
    refused(&v2(0x22, 0x11, &addr4)); // command 2
    refused(&v2(0x21, 0x12, &addr4)); // UDP
    refused(&v2(0x21, 0x10, &addr4)); // transport UNSPEC
    refused(&v2(0x21, 0x41, &addr4)); // family 4
    refused(&v2(0x21, 0x11, &addr4[..11])); // short address block
    refused(&v2(0x21, 0x21, &[0u8; 35]));
    refused(&v2(0x21, 0x31, &[0u8; 215]));
    let mut tlv = addr4.to_vec();
    tlv.extend_from_slice(&[0x02, 0x00, 0x05, b'x']);
    refused(&v2(0x21, 0x11, &tlv)); // TLV longer than the header
    let mut tlv = addr4.to_vec();
    tlv.extend_from_slice(&[0x02, 0x00]);
    refused(&v2(0x21, 0x11, &tlv)); // TLV cut short
}

#[test]
fn v2_length_is_bounded_before_waiting_for_the_body() {
    let mut head = V2_SIGNATURE.to_vec();
    head.extend_from_slice(&[0x21, 0x11]);
    head.extend_from_slice(&((V2_MAX - 16) as u16).to_be_bytes());
    assert_eq!(parse(&head), Ok(Parsed::Incomplete));
    let mut head = V2_SIGNATURE.to_vec();
    head.extend_from_slice(&[0x21, 0x11]);
    head.extend_from_slice(&((V2_MAX - 15) as u16).to_be_bytes());
    assert!(refused(&head).contains("4096"));
}

#[test]
fn encoded_headers_parse_back_to_the_same_addresses() {
    let pairs = [
        (sa("192.0.2.7:56324"), sa("198.51.100.1:443")),
        (sa("[2001:db8::7]:1"), sa("[::1]:65535")),
        (sa("0.0.0.0:0"), sa("255.255.255.255:65535")),
    ];
    for version in [Version::V1, Version::V2] {
        for (src, dst) in pairs {
            let e = encode(version, src, dst);
            assert_eq!(
                done(e.as_bytes()),
                (Header::Proxy { src, dst }, e.as_bytes().len()),
                "{version:?} {e:?}"
            );
        }
    }
    assert_eq!(
        encode(Version::V1, sa("10.0.0.1:1"), sa("10.0.0.2:2")).as_bytes(),
        b"PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\n"
    );
    assert_eq!(
        encode(Version::V2, sa("10.0.0.1:1"), sa("10.0.0.2:2")).as_bytes(),
        &v2(0x21, 0x11, &[10, 0, 0, 1, 10, 0, 0, 2, 0, 1, 0, 2])[..]
    );
}

#[test]
fn mixed_families_are_written_as_mapped_ipv6() {
    let e = encode(Version::V1, sa("10.0.0.1:1"), sa("[::1]:2"));
    assert_eq!(e.as_bytes(), b"PROXY TCP6 ::ffff:10.0.0.1 ::1 1 2\r\n");
    let e = encode(Version::V2, sa("[::1]:2"), sa("10.0.0.1:1"));
    assert_eq!(e.as_bytes().len(), 16 + 36);
    assert!(done(e.as_bytes()).0.addresses().is_some());
}

#[test]
fn local_headers_are_what_haproxy_sends_on_its_checks() {
    assert_eq!(encode_local(Version::V1).as_bytes(), b"PROXY UNKNOWN\r\n");
    assert_eq!(
        done(encode_local(Version::V1).as_bytes()).0,
        Header::Unknown
    );
    assert_eq!(
        encode_local(Version::V2).as_bytes(),
        &v2(0x20, 0x00, &[])[..]
    );
    assert_eq!(done(encode_local(Version::V2).as_bytes()).0, Header::Local);
}

#[test]
fn version_names_round_trip() {
    for name in Version::NAMES {
        assert_eq!(Version::from_name(name).map(Version::name), Some(*name));
    }
    assert_eq!(Version::from_name("V1"), None);
}
