//! The first admin of a dev stack and the credentials `aerogrid dev` hands out.

use chrono::{Duration, Utc};

use crate::{Result, db::accounts, secret};

pub const DEV_ADMIN_NAME: &str = "admin";
const DEV_ADMIN_TOKEN_NAME: &str = "aerogrid dev admin token";
const LOGIN_LINK_LIFETIME: Duration = Duration::hours(24);

/// Credentials for the dev admin.
pub struct DevAdmin {
    /// An API token; the one passed in when it still works, else a new one.
    pub token: String,
    /// A one-time sign-in link secret, valid for a day.
    pub login_link_secret: String,
}

/// Makes sure the dev admin exists and holds a working API token (`previous_token`, read from
/// the data dir, is kept when it is still valid), and mints a fresh sign-in link.
pub async fn ensure_dev_admin(db: &sqlx::PgPool, previous_token: Option<&str>) -> Result<DevAdmin> {
    let admin = accounts::upsert_admin(db, DEV_ADMIN_NAME).await?;
    let mut token = None;
    if let Some(previous) = previous_token {
        let holder = accounts::user_for_api_token(db, &secret::digest(previous)).await?;
        if holder.is_some_and(|user| user.id == admin.id) {
            token = Some(previous.to_owned());
        }
    }
    let token = match token {
        Some(token) => token,
        None => {
            let token = secret::generate(secret::API_TOKEN_PREFIX);
            accounts::insert_api_token(
                db,
                admin.id,
                None,
                DEV_ADMIN_TOKEN_NAME,
                &secret::digest(&token),
            )
            .await?;
            token
        }
    };
    let login_link_secret = secret::generate(secret::LOGIN_LINK_PREFIX);
    accounts::insert_login_link(
        db,
        admin.id,
        &secret::digest(&login_link_secret),
        Utc::now() + LOGIN_LINK_LIFETIME,
    )
    .await?;
    Ok(DevAdmin { token, login_link_secret })
}

/// The page a sign-in link secret is redeemed at.
pub fn login_url(base_url: &str, login_link_secret: &str) -> String {
    format!("{}/api/v1/auth/link?secret={login_link_secret}", base_url.trim_end_matches('/'))
}
