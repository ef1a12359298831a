//! The services `aerogrid dev` starts for itself when `DATABASE_URL` or `KAFKA_BROKERS` is unset.
//!
//! Invariants:
//! - Everything lives under the data dir given by the caller; nothing touches another cluster,
//!   port or socket on the machine (ports are picked free on loopback, Postgres has no socket).
//! - One data dir, one owner: [`DataDirLock`] is held by `aerogrid dev` and inherited by every
//!   process it starts, so a second `aerogrid dev` is refused until all of them are gone.
//! - A child never outlives its parent: children get a parent-death signal.

mod broker;
mod error;
mod lock;
mod postgres;
mod process;

pub use broker::{BrokerStorage, LocalBroker, TANSU_VERSION};
pub use error::{Error, Result};
pub use lock::DataDirLock;
pub use postgres::PrivatePostgres;
pub use process::{ChildExit, ManagedChild};

/// A free TCP port on loopback, chosen by the kernel.
pub fn free_loopback_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(|source| Error::io("picking a free port", source))?;
    Ok(listener.local_addr().map_err(|source| Error::io("picking a free port", source))?.port())
}

/// `port` if nothing listens on it now, else a free one.
pub fn loopback_port_or_free(port: Option<u16>) -> Result<u16> {
    match port {
        Some(port) if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() => Ok(port),
        _ => free_loopback_port(),
    }
}

/// A random secret of `len` alphanumeric characters (safe in URLs and config files).
pub(crate) fn random_alphanumeric(len: usize) -> String {
    use rand::{Rng, distr::Alphanumeric};
    rand::rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}
