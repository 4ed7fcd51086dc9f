//! A CA and a `localhost` certificate it signed, made with rcgen, as PEM files in a fresh folder
//! (removed on drop), and a rustls client configuration that trusts that CA only. Shared by the
//! TLS tests and the WebSocket fan-out bench.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

pub(crate) struct Pki {
    /// Holds `cert.pem`, `key.pem` and `ca.pem`.
    pub(crate) dir: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) ca: PathBuf,
    pub(crate) ca_der: rustls::pki_types::CertificateDer<'static>,
}

impl Pki {
    pub(crate) fn new(label: &str) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, format!("{label} CA"));
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key")).expect("CA");
        let key = KeyPair::generate().expect("leaf key");
        let leaf = CertificateParams::new(vec!["localhost".to_string()])
            .expect("leaf params")
            .signed_by(&key, &ca)
            .expect("leaf");
        let unique = {
            use std::hash::{BuildHasher, RandomState};
            RandomState::new().hash_one(std::time::Instant::now())
        };
        let dir = std::env::temp_dir().join(format!("{label}-{}-{unique}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let pki = Pki {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            ca: dir.join("ca.pem"),
            dir,
            ca_der: ca.der().clone(),
        };
        std::fs::write(&pki.cert, leaf.pem()).expect("write cert");
        std::fs::write(&pki.key, key.serialize_pem()).expect("write key");
        std::fs::write(&pki.ca, ca.pem()).expect("write CA");
        pki
    }

    /// A client configuration (ring) trusting this CA only.
    pub(crate) fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("the CA parses");
        let config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("protocol versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        Arc::new(config)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
