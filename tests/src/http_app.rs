//! A small HTTP/1.1 application, plain or over TLS, for tests with real HTTP
//! clients (curl, Python requests, …) behind a sidecar.
//!
//! Every response body is `<name> <METHOD> <path>\n`, so a client can tell
//! which application answered and what request reached it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use zs_tls::rustls;
use zs_tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A running HTTP(S) application; stopped when dropped.
pub struct HttpApp {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl HttpApp {
    /// Plain HTTP on `bind`.
    pub async fn start(bind: SocketAddr, name: &str) -> HttpApp {
        let listener = TcpListener::bind(bind).await.expect("bind HTTP app");
        HttpApp::serve(listener, name, None)
    }

    /// HTTPS on `bind` with `cert`.
    pub async fn start_tls(bind: SocketAddr, name: &str, cert: &WebCert) -> HttpApp {
        let listener = TcpListener::bind(bind).await.expect("bind HTTPS app");
        HttpApp::serve(listener, name, Some(cert.server_config()))
    }

    /// Serves on a listener bound elsewhere (e.g. inside another network namespace).
    pub fn serve(
        listener: TcpListener,
        name: &str,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> HttpApp {
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let name: Arc<str> = name.into();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let name = name.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: http::Request<Incoming>| {
                            let body = format!("{name} {} {}\n", req.method(), req.uri());
                            async move {
                                Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(
                                    body,
                                ))))
                            }
                        });
                    let http = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        None => {
                            let _ = http.serve_connection(TokioIo::new(tcp), service).await;
                        }
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(tcp).await {
                                let _ = http.serve_connection(TokioIo::new(tls), service).await;
                            }
                        }
                    }
                });
            }
        });
        HttpApp {
            addr,
            accepted,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for HttpApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A throwaway web PKI: a CA and a server certificate for one DNS name, so
/// that HTTPS clients verify the application for real.
pub struct WebCert {
    pub ca_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl WebCert {
    pub fn for_host(host: &str) -> WebCert {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca.distinguished_name
            .push(DnType::CommonName, "ztunnel-sidecar e2e web CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec![host.to_string()]).unwrap();
        leaf.distinguished_name.push(DnType::CommonName, host);
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
        WebCert {
            ca_pem: ca_cert.pem(),
            chain: vec![leaf_cert.der().clone()],
            key: PrivatePkcs8KeyDer::from(leaf_key.serialize_der()),
        }
    }

    /// A TLS server configuration presenting the certificate (HTTP/1.1 ALPN).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            self.chain.clone(),
            PrivateKeyDer::Pkcs8(self.key.clone_key()),
        )
        .unwrap();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(cfg)
    }

    /// Writes the CA certificate (PEM) for clients' `--cacert` / `verify=`.
    pub fn write_ca(&self, dir: &Path) -> PathBuf {
        let path = dir.join("web-ca.pem");
        std::fs::write(&path, &self.ca_pem).expect("write web CA");
        path
    }
}
