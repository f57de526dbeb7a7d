//! The cluster's PKI: one CA that signs the API server's serving certificate and
//! every client certificate (admin, controller-manager, scheduler, simulated nodes),
//! plus the service-account signing key. Everything is ECDSA P-256 and lives as PEM
//! files in the state directory, so other processes (a simulated node started by
//! `sg-cluster up`) can issue their own client certificates later.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::Result;
use crate::error::Context;

/// The first address of the service CIDR: the `kubernetes` Service's ClusterIP.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);

/// A PEM certificate and key pair on disk.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The PKI directory of one cluster.
#[derive(Clone, Debug)]
pub struct Pki {
    dir: PathBuf,
}

// === impl Pki ===

impl Pki {
    /// Creates the CA, the serving certificate and the service-account key in `dir`.
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
        let pki = Self {
            dir: dir.to_path_buf(),
        };
        let ca_key = KeyPair::generate()?;
        let ca = ca_params().self_signed(&ca_key)?;
        write(&pki.ca_cert(), &ca.pem())?;
        write_private(&pki.dir.join("ca.key"), &ca_key.serialize_pem())?;

        let sa_key = KeyPair::generate()?;
        write_private(&pki.service_account_key(), &sa_key.serialize_pem())?;
        write(&pki.service_account_pub(), &sa_key.public_key_pem())?;

        let mut serving = CertificateParams::default();
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving.subject_alt_names = vec![
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::IpAddress(IpAddr::V4(KUBERNETES_SERVICE_IP)),
            SanType::DnsName("localhost".try_into()?),
            SanType::DnsName("kubernetes".try_into()?),
            SanType::DnsName("kubernetes.default".try_into()?),
            SanType::DnsName("kubernetes.default.svc".try_into()?),
            SanType::DnsName("kubernetes.default.svc.cluster.local".try_into()?),
        ];
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        pki.sign("apiserver", serving)?;
        Ok(pki)
    }

    /// Opens an existing PKI directory (written by [`Pki::create`]).
    pub fn open(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    pub fn service_account_key(&self) -> PathBuf {
        self.dir.join("sa.key")
    }

    /// The API server verifies tokens with the public half (it won't derive it from PKCS#8).
    pub fn service_account_pub(&self) -> PathBuf {
        self.dir.join("sa.pub")
    }

    pub fn serving(&self) -> CertFiles {
        self.files("apiserver")
    }

    /// Issues (or reuses) a client certificate for user `cn` in groups `orgs`, stored
    /// as `<file>.crt`/`<file>.key`.
    pub fn client(&self, file: &str, cn: &str, orgs: &[&str]) -> Result<CertFiles> {
        let files = self.files(file);
        if files.cert.is_file() && files.key.is_file() {
            return Ok(files);
        }
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        for o in orgs {
            params.distinguished_name.push(DnType::OrganizationName, *o);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(file, params)
    }

    fn files(&self, name: &str) -> CertFiles {
        CertFiles {
            cert: self.dir.join(format!("{name}.crt")),
            key: self.dir.join(format!("{name}.key")),
        }
    }

    fn sign(&self, name: &str, mut params: CertificateParams) -> Result<CertFiles> {
        let ca_pem = std::fs::read_to_string(self.ca_key())
            .ctx(|| format!("reading {}", self.ca_key().display()))?;
        // The issuer is rebuilt from the same parameters and key that made the CA, so a
        // later process can sign without parsing the CA certificate.
        let issuer = Issuer::new(ca_params(), KeyPair::from_pem(&ca_pem)?);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        let files = self.files(name);
        write_private(&files.key, &key.serialize_pem())?;
        write(&files.cert, &cert.pem())?;
        Ok(files)
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "sessionguard-e2e-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).ctx(|| format!("writing {}", path.display()))
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .ctx(|| format!("writing {}", path.display()))
}
