//! All SQL of the backend: one function per query, returning domain types or the API's
//! (`aerogrid_api`) answer types built from the rows; no row type here is `Serialize`.

pub mod accounts;
pub mod apps;
pub mod grids;
pub mod quotas;
pub mod teams;
pub mod topics;

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;

use crate::Result;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// A connection pool; the first connection is made now, so a bad URL fails here.
pub async fn connect(database_url: &str) -> Result<sqlx::PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(5))
        .connect(database_url)
        .await?;
    Ok(pool)
}

/// Applies `migrations/` (sqlx takes an advisory lock, so concurrent servers are safe).
pub async fn migrate(pool: &sqlx::PgPool) -> Result<()> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Round trip to the database (health checks).
pub async fn ping(pool: &sqlx::PgPool) -> Result<()> {
    sqlx::query!("SELECT 1 AS one").fetch_one(pool).await?;
    Ok(())
}

/// A word column (state, role, scope) as its enum. The database's CHECK constraints allow only
/// the enum's words, so another one is a broken invariant, not the caller's error.
pub(crate) fn word<T>(text: &str) -> Result<T>
where
    T: std::str::FromStr<Err = aerogrid_api::UnknownValue>,
{
    text.parse().map_err(|error: aerogrid_api::UnknownValue| {
        crate::Error::Internal(format!("the database holds {error}"))
    })
}
