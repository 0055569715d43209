//! The credentials the app is configured with when it runs here: the service key, the JWT
//! secret, and user tokens signed with it.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// The service key the tests configure.
pub const SERVICE_KEY: &str = "test-service-key";
/// The JWT secret the tests configure.
pub const JWT_SECRET: &str = "test-jwt-secret-of-reasonable-length";

/// A user role in a token.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    /// Workspace owner.
    Owner,
    /// Workspace admin.
    Admin,
    /// Workspace member: sees only the status banner.
    Member,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Admin => "admin",
            Self::Member => "member",
        }
    }
}

/// Seconds since the epoch.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// An HS256 token for `workspace` and `role`, signed with [`JWT_SECRET`].
pub fn token(workspace: &str, role: Role, exp: i64) -> String {
    sign(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &json!({"sub": "user-1", "workspace_id": workspace, "role": role.as_str(), "exp": exp}),
        JWT_SECRET.as_bytes(),
    )
}

/// Signs any header and claims (for hostile-token tests too).
pub fn sign(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return signing_input;
    };
    mac.update(signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}
