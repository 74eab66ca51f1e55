//! Owns [`TlsBackend`]: a small HTTPS server (rustls, one thread per
//! connection) for the origination tests. It serves keep-alive GETs with
//! its name as the body and `X-Conn: <n>` (which TLS connection answered),
//! and records the SNI each handshake sent. Stopped on drop.

use super::pki::Leaf;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A running HTTPS backend.
pub struct TlsBackend {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// The SNI of each finished handshake, in order (`None`: none sent).
    pub snis: Arc<Mutex<Vec<Option<String>>>>,
    /// Handshakes finished.
    pub handshakes: Arc<AtomicUsize>,
}

impl TlsBackend {
    /// Serves `leaf` on a free port, answering with `name`.
    pub fn start(name: &str, leaf: &Leaf) -> TlsBackend {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&leaf.cert)
            .expect("cert file")
            .collect::<Result<_, _>>()
            .expect("cert pem");
        let key = PrivateKeyDer::from_pem_file(&leaf.key).expect("key pem");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let snis = Arc::new(Mutex::new(Vec::new()));
        let handshakes = Arc::new(AtomicUsize::new(0));
        let (s, n, h, name) = (
            stop.clone(),
            snis.clone(),
            handshakes.clone(),
            name.to_string(),
        );
        std::thread::spawn(move || {
            let conns = Arc::new(AtomicUsize::new(0));
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (config, n, h, name) = (config.clone(), n.clone(), h.clone(), name.clone());
                let id = conns.fetch_add(1, Ordering::SeqCst) + 1;
                std::thread::spawn(move || serve(stream, config, &n, &h, &name, id));
            }
        });
        TlsBackend {
            addr,
            stop,
            snis,
            handshakes,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The SNIs recorded so far.
    pub fn snis(&self) -> Vec<Option<String>> {
        self.snis.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    snis: &Mutex<Vec<Option<String>>>,
    handshakes: &AtomicUsize,
    name: &str,
    id: usize,
) {
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        if tls.conn.complete_io(&mut tls.sock).is_err() {
            return;
        }
    }
    if let Ok(mut v) = snis.lock() {
        v.push(tls.conn.server_name().map(str::to_string));
    }
    handshakes.fetch_add(1, Ordering::SeqCst);
    let mut reader = BufReader::new(tls);
    loop {
        // One request head (GETs: no body).
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
        }
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Conn: {id}\r\n\r\n{name}",
            name.len()
        );
        let w = reader.get_mut();
        if w.write_all(resp.as_bytes())
            .and_then(|_| w.flush())
            .is_err()
        {
            return;
        }
    }
}
