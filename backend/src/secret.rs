//! Bearer secrets: 256 random bits, given out once, stored as SHA-256 digests.
//! (A slow hash is for low-entropy passwords; these cannot be guessed.)

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// A new secret with a prefix that says what it is (`agt_` API token, `agl_` sign-in link, ...).
pub(crate) fn generate(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

pub(crate) fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

pub(crate) const API_TOKEN_PREFIX: &str = "agt_";
pub(crate) const LOGIN_LINK_PREFIX: &str = "agl_";
pub(crate) const SESSION_PREFIX: &str = "ags_";

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_are_unique_and_prefixed() {
        let first = super::generate("agt_");
        let second = super::generate("agt_");
        assert!(first.starts_with("agt_") && first.len() == 4 + 43, "{first}");
        assert_ne!(first, second);
        assert_ne!(super::digest(&first), super::digest(&second));
    }
}
