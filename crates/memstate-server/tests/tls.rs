//! HTTPS: a node served with rustls answers a client that trusts its certificate.

use std::sync::Arc;
use std::time::Duration;

use memstate_core::{EngineBuilder, MemoryStream};
use memstate_server::kv::{self, KvStore};
use memstate_server::{ServerBuilder, TlsConfig};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn a_node_serves_https_with_its_certificate() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let tls = TlsConfig::from_pem(
        cert.cert.pem().as_bytes(),
        cert.key_pair.serialize_pem().as_bytes(),
    )
    .unwrap();
    let engine = EngineBuilder::new(KvStore::default(), MemoryStream::new())
        .start()
        .await
        .unwrap();
    let server = kv::queries(ServerBuilder::new(engine)).build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve_tls(listener, tls, async move {
        let _ = stopped.await;
    }));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));

    // A plain-HTTP client gets no answer from the TLS port.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), plain.read_to_end(&mut answer)).await;
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"));

    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls_stream = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let body = r#"{"key":"a","value":"over tls"}"#;
    let request = format!(
        "POST /commands/put HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tls_stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        tls_stream.read_to_string(&mut answer),
    )
    .await
    .unwrap()
    .ok();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.contains("\"value\":\"over tls\""), "{answer}");

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), serving)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[test]
fn pem_without_a_certificate_is_refused_with_a_reason() {
    let e = TlsConfig::from_pem(b"", b"").unwrap_err();
    assert!(e.to_string().contains("no certificate"), "{e}");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let e = TlsConfig::from_pem(cert.cert.pem().as_bytes(), b"not a key").unwrap_err();
    assert!(e.to_string().contains("private key"), "{e}");
}
