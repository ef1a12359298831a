use std::{net::IpAddr, path::PathBuf, sync::Arc};

use crate::{Error, Result};

/// Settings of the HTTP server (`aerogrid server`, and the server inside `aerogrid dev`).
#[derive(Clone, Debug, clap::Args)]
pub struct ServerArgs {
    /// Where the web frontend built by Trunk is (its `index.html` and assets). Defaults to the
    /// `web` folder next to the binary's folder (`target/web` for `target/debug/aerogrid`).
    #[arg(long, env = "AEROGRID_WEB_DIR")]
    pub web_dir: Option<PathBuf>,

    /// The URL users reach this server at, when it is not the listening address (behind a proxy
    /// or TLS terminator). An `https` URL makes cookies `Secure`.
    #[arg(long, env = "AEROGRID_PUBLIC_URL")]
    pub public_url: Option<url::Url>,

    /// Web origins (such as `https://dashboard.example.com`) whose pages may call the grid API
    /// over gRPC-web. Pages served by this server need none. Repeat, or separate with commas.
    #[arg(long = "cors-origin", env = "AEROGRID_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<url::Url>,

    /// Serve HTTPS (and gRPC over TLS) with this PEM certificate chain; needs --tls-key.
    #[arg(long, env = "AEROGRID_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, env = "AEROGRID_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Addresses (`10.0.0.7`) or ranges (`10.0.0.0/8`) of proxies in front of this server:
    /// from them, the client's address is the last one in `X-Forwarded-For` that is not a
    /// trusted proxy's (per-address limits apply to it). Repeat, or separate with commas.
    #[arg(long = "trusted-proxy", env = "AEROGRID_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<AddressRange>,

    #[command(flatten)]
    pub quotas: QuotaDefaults,

    #[command(flatten)]
    pub connections: crate::server::ConnectionLimits,

    #[command(flatten)]
    pub gateway: GatewayLimits,
}

/// What grid streams may hold of the server's memory.
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct GatewayLimits {
    /// MiB of recent changes each app's feed keeps for its subscribers (also at most 1,024
    /// changes); a subscriber further behind gets a new snapshot.
    #[arg(long, env = "AEROGRID_FEED_BUFFER_MIB", default_value_t = 64)]
    pub feed_buffer_mib: usize,
    /// MiB one caller's grid streams may hold that their clients have not read; beyond, the
    /// stream that would pass it ends with RESOURCE_EXHAUSTED (a first message always goes).
    #[arg(long, env = "AEROGRID_UNREAD_MIB_PER_CALLER", default_value_t = 32)]
    pub unread_mib_per_caller: usize,
    /// MiB all callers' grid streams may hold unread together.
    #[arg(long, env = "AEROGRID_UNREAD_MIB", default_value_t = 1024)]
    pub unread_mib: usize,
    /// KiB of one gRPC request (a view of 1,000 columns and 10,000 row keys fits in far less);
    /// larger ones are refused from their length prefix.
    #[arg(long, env = "AEROGRID_MAX_GRPC_REQUEST_KIB", default_value_t = 1024)]
    pub max_request_kib: usize,
}

/// An IP address range: an address and how many leading bits of it must match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressRange {
    address: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for AddressRange {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let (address, prefix) = text.trim().split_once('/').unwrap_or((text.trim(), ""));
        let address: IpAddr =
            address.parse().map_err(|_| format!("`{text}` is not an IP address or range"))?;
        let bits = if address.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            bits
        } else {
            prefix
                .parse::<u8>()
                .ok()
                .filter(|prefix| *prefix <= bits)
                .ok_or_else(|| format!("`{text}`: a prefix length is 0 to {bits}"))?
        };
        Ok(Self { address, prefix })
    }
}

impl AddressRange {
    pub fn contains(&self, address: IpAddr) -> bool {
        // Both as 128 bits, IPv4 in the high ones, so one mask serves both.
        let (range, address) = match (self.address, address.to_canonical()) {
            (IpAddr::V4(range), IpAddr::V4(address)) => {
                (u128::from(range.to_bits()) << 96, u128::from(address.to_bits()) << 96)
            }
            (IpAddr::V6(range), IpAddr::V6(address)) => (range.to_bits(), address.to_bits()),
            _ => return false,
        };
        let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(self.prefix)) };
        range & mask == address & mask
    }
}

/// The client's address as limits count it: the peer's, or, when the peer is a trusted proxy,
/// the last address in `X-Forwarded-For` (all its header lines, in order) that is not a trusted
/// proxy's (the ones before it could be forged). An IPv6 address counts as its /64: one host
/// gets a whole /64 and could otherwise take as many addresses as it likes.
pub fn client_address(
    peer: IpAddr,
    headers: &axum::http::HeaderMap,
    trusted: &[AddressRange],
) -> IpAddr {
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|value| value.to_str().unwrap_or("garbage"))
        .collect();
    limit_key(forwarded_client(peer.to_canonical(), &forwarded.join(","), trusted))
}

/// An address as per-address limits key it: IPv6 by its /64.
pub fn limit_key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => {
            IpAddr::V6(std::net::Ipv6Addr::from_bits(v6.to_bits() & !((1u128 << 64) - 1)))
        }
        v4 => v4,
    }
}

fn forwarded_client(peer: IpAddr, forwarded_for: &str, trusted: &[AddressRange]) -> IpAddr {
    let is_trusted = |address: IpAddr| trusted.iter().any(|range| range.contains(address));
    if !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    for hop in forwarded_for.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(address) => {
                client = address;
                if !is_trusted(address) {
                    break;
                }
            }
            // Garbage: nothing before it can be believed.
            Err(_) => break,
        }
    }
    client
}

/// What each team may take of the platform unless an administrator sets its own quotas
/// (`PATCH /api/v1/teams/{team}`).
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct QuotaDefaults {
    /// Teams one user (not an administrator) may own.
    #[arg(
        long = "quota-teams-per-user",
        env = "AEROGRID_QUOTA_TEAMS_PER_USER",
        default_value_t = 10
    )]
    pub teams_per_user: i32,
    /// Apps a team may have.
    #[arg(long = "quota-apps", env = "AEROGRID_QUOTA_APPS", default_value_t = 100)]
    pub apps: i32,
    /// Apps a team may run at once.
    #[arg(long = "quota-running-apps", env = "AEROGRID_QUOTA_RUNNING_APPS", default_value_t = 20)]
    pub running_apps: i32,
    /// Memory one app of a team may ask for its connector, in MiB.
    #[arg(
        long = "quota-app-memory-mib",
        env = "AEROGRID_QUOTA_APP_MEMORY_MIB",
        default_value_t = 4096
    )]
    pub app_memory_mib: i32,
    /// Memory of a team's running apps together, in MiB.
    #[arg(
        long = "quota-total-memory-mib",
        env = "AEROGRID_QUOTA_TOTAL_MEMORY_MIB",
        default_value_t = 16384
    )]
    pub total_memory_mib: i32,
    /// The memory an app without a limit of its own is counted with, in MiB: the runtime nodes'
    /// `--connector-memory-mib` (`aerogrid dev` passes its node's).
    #[arg(
        long = "quota-default-app-memory-mib",
        env = "AEROGRID_QUOTA_DEFAULT_APP_MEMORY_MIB",
        default_value_t = 512
    )]
    pub default_app_memory_mib: i32,
    /// Versions kept per app (the newest; the one running is always kept).
    #[arg(
        long = "quota-versions-per-app",
        env = "AEROGRID_QUOTA_VERSIONS_PER_APP",
        default_value_t = 200
    )]
    pub versions_per_app: i32,
}

impl ServerArgs {
    pub fn web_dir(&self) -> PathBuf {
        self.web_dir.clone().unwrap_or_else(default_web_dir)
    }

    /// The TLS settings, when --tls-cert and --tls-key are given: HTTP/2 (gRPC) and HTTP/1.1
    /// (browsers, gRPC-web) offered by ALPN.
    pub fn tls(&self) -> Result<Option<Arc<rustls::ServerConfig>>> {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let (Some(cert_path), Some(key_path)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let bad = |path: &PathBuf, error: &dyn std::fmt::Display| {
            Error::Config(format!("cannot read `{}`: {error}", path.display()))
        };
        let chain = CertificateDer::pem_file_iter(cert_path)
            .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(|error| bad(cert_path, &error))?;
        if chain.is_empty() {
            return Err(bad(cert_path, &"it holds no PEM certificate"));
        }
        let key = PrivateKeyDer::from_pem_file(key_path).map_err(|error| bad(key_path, &error))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, key))
            .map_err(|error| {
                Error::Config(format!("the TLS certificate and key do not fit: {error}"))
            })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(Arc::new(config)))
    }
}

fn default_web_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(|dir| dir.join("web")))
        .unwrap_or_else(|| PathBuf::from("web"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ranges_match_their_prefix() {
        let range: AddressRange = "10.1.0.0/16".parse().unwrap();
        assert!(range.contains(ip("10.1.200.3")));
        assert!(!range.contains(ip("10.2.0.1")));
        assert!(range.contains(ip("::ffff:10.1.0.9")), "an IPv4-mapped address");
        let one: AddressRange = "fd00::1".parse().unwrap();
        assert!(one.contains(ip("fd00::1")) && !one.contains(ip("fd00::2")));
        assert!("10.0.0.0/33".parse::<AddressRange>().is_err());
        assert!("proxy".parse::<AddressRange>().is_err());
    }

    fn headers(lines: &[&str]) -> axum::http::HeaderMap {
        let mut headers = axum::http::HeaderMap::new();
        for line in lines {
            headers.append("x-forwarded-for", line.parse().unwrap());
        }
        headers
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        // From the proxy: the address it saw (forged entries before it are ignored).
        let forwarded = headers(&["6.6.6.6, 203.0.113.9, 10.0.0.2"]);
        assert_eq!(client_address(ip("10.0.0.1"), &forwarded, &trusted), ip("203.0.113.9"));
        // A proxy that adds a header line of its own: the lines count in order.
        let two_lines = headers(&["6.6.6.6", "203.0.113.9"]);
        assert_eq!(client_address(ip("10.0.0.1"), &two_lines, &trusted), ip("203.0.113.9"));
        // From anyone else, the header is ignored.
        assert_eq!(client_address(ip("198.51.100.4"), &forwarded, &trusted), ip("198.51.100.4"));
        // Garbage ends the walk; no header: the proxy itself.
        let garbage = headers(&["x, 10.0.0.3"]);
        assert_eq!(client_address(ip("10.0.0.1"), &garbage, &trusted), ip("10.0.0.3"));
        assert_eq!(client_address(ip("10.0.0.1"), &headers(&[]), &trusted), ip("10.0.0.1"));
        // IPv6 counts by its /64.
        let host = client_address(ip("2001:db8:1:2:aaaa::1"), &headers(&[]), &trusted);
        assert_eq!(host, ip("2001:db8:1:2::"));
        assert_eq!(host, client_address(ip("2001:db8:1:2:ffff::9"), &headers(&[]), &trusted));
    }
}
