//! `https://` backends: reached over rustls with a configured CA file, and
//! refused with a 502 naming the cause when the certificate does not verify.

use std::net::SocketAddr;
use std::sync::Arc;

use baton::body;
use http::Response;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::support::{get, TestBaton};

/// A CA and a server certificate it signed for 127.0.0.1.
struct Pki {
    ca_pem: String,
    leaf: CertificateDer<'static>,
    leaf_key: PrivateKeyDer<'static>,
}

fn pki(common_name: &str) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let mut leaf_params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    leaf_params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();
    Pki {
        ca_pem: ca.pem(),
        leaf: leaf.der().clone(),
        leaf_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    }
}

/// An HTTPS server presenting `pki`'s certificate; answers "secure hello".
async fn tls_backend(pki: &Pki) -> SocketAddr {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![pki.leaf.clone()], pki.leaf_key.clone_key())
    .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service =
                    service_fn(|request: http::Request<hyper::body::Incoming>| async move {
                        let host = request.headers()["host"].to_str().unwrap().to_owned();
                        Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .header("x-seen-host", host)
                                .body(body::full("secure hello"))
                                .unwrap(),
                        )
                    });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

fn write_ca(pem: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("baton-test-ca-{:016x}.pem", fastrand::u64(..)));
    std::fs::write(&path, pem).unwrap();
    path
}

fn https_config(addr: SocketAddr, ca: &std::path::Path) -> String {
    format!(
        r#"
[backends.secure]
url = "https://{addr}"
ca_file = "{}"

[[routes]]
name = "all"
match = {{ path = "/*" }}
backend = "secure"
"#,
        ca.display()
    )
}

#[tokio::test]
async fn https_backend_with_configured_ca_is_reached() {
    let pki = pki("Baton test CA");
    let addr = tls_backend(&pki).await;
    let ca = write_ca(&pki.ca_pem);
    let baton = TestBaton::start(&https_config(addr, &ca)).await;
    let answer = get(&baton.url("/hello")).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.text(), "secure hello");
    assert_eq!(
        answer.header("x-seen-host"),
        Some(addr.to_string().as_str())
    );
    let _ = std::fs::remove_file(ca);
}

#[tokio::test]
async fn certificate_from_an_untrusted_ca_is_a_502_naming_the_cause() {
    let trusted = pki("Trusted CA");
    let other = pki("Some other CA");
    let addr = tls_backend(&other).await;
    let ca = write_ca(&trusted.ca_pem);
    let baton = TestBaton::start(&https_config(addr, &ca)).await;
    let problem = get(&baton.url("/")).await.problem(502);
    assert_eq!(problem["type"], "urn:baton:problem:backend-tls");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("TLS handshake failed") && detail.contains("UnknownIssuer"),
        "{detail}"
    );
    let _ = std::fs::remove_file(ca);
}
