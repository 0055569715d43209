//! Authentication (docs/billing-rules.md, "The HTTP contract"): frontend HS256 JWTs and the
//! service key.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{now_secs, variable};
use crate::error::ApiError;

/// The Spin variable holding the frontend tokens' HMAC secret.
const JWT_SECRET_VARIABLE: &str = "auth_jwt_secret";
/// The Spin variable holding the voice platform's service key.
const SERVICE_API_KEY_VARIABLE: &str = "service_api_key";
/// Upper bound on a token's length; real ones are a few hundred bytes.
const TOKEN_LENGTH_MAX: usize = 8 * 1024;

/// A workspace member's role (R19): only owners and admins manage billing or see amounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The workspace owner.
    Owner,
    /// An administrator.
    Admin,
    /// A member: sees only the status banner.
    Member,
}

impl Role {
    /// Whether this role may manage billing and see amounts.
    pub fn manages_billing(self) -> bool {
        matches!(self, Self::Owner | Self::Admin)
    }
}

/// The verified claims of a frontend token.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The only workspace this token may read or change.
    pub workspace_id: String,
    /// The user's role in that workspace.
    pub role: Role,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// Not-before, seconds since the Unix epoch, when present.
    #[serde(default)]
    pub nbf: Option<i64>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

/// The bearer credential of the `Authorization` header, or 401.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("Missing Authorization header."))?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("Malformed Authorization header."))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| ApiError::unauthorized("Expected an Authorization: Bearer credential."))?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(ApiError::unauthorized(
            "Expected an Authorization: Bearer credential.",
        ));
    }
    Ok(token)
}

/// Verifies an HS256 JWT against `secret` at time `now_secs` and returns its claims.
///
/// Refuses (401 `unauthorized`) any algorithm but HS256 (including `none`), a bad signature
/// (compared in constant time), a token expired or not yet valid, and anything malformed.
/// The signature is checked before the claims are parsed.
pub fn verify_jwt(token: &str, secret: &[u8], now_secs: i64) -> Result<Claims, ApiError> {
    let malformed = || ApiError::unauthorized("Malformed bearer token.");
    if secret.is_empty() {
        // An unset secret must not make every token verifiable.
        return Err(ApiError::unauthorized(
            "Token authentication is not configured.",
        ));
    }
    if token.len() > TOKEN_LENGTH_MAX {
        return Err(malformed());
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    let header: Header = decode_json(header_b64).ok_or_else(malformed)?;
    if header.alg != "HS256" {
        return Err(ApiError::unauthorized(
            "Unsupported token algorithm: only HS256 is accepted.",
        ));
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| malformed())?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret)
        .map_err(|_| ApiError::unauthorized("Token authentication is not configured."))?;
    mac.update(header_b64.as_bytes());
    mac.update(b".");
    mac.update(claims_b64.as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| ApiError::unauthorized("Invalid token signature."))?;
    let claims: Claims = decode_json(claims_b64).ok_or_else(malformed)?;
    if now_secs >= claims.exp {
        return Err(ApiError::unauthorized("The token has expired."));
    }
    if claims.nbf.is_some_and(|nbf| now_secs < nbf) {
        return Err(ApiError::unauthorized("The token is not valid yet."));
    }
    if claims.sub.is_empty() || claims.workspace_id.is_empty() {
        return Err(malformed());
    }
    Ok(claims)
}

fn decode_json<T: serde::de::DeserializeOwned>(segment: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Authenticates a frontend call: a valid HS256 token signed with `auth_jwt_secret`.
pub async fn authenticate_user(headers: &HeaderMap) -> Result<Claims, ApiError> {
    let token = bearer_token(headers)?;
    let secret = variable(JWT_SECRET_VARIABLE).await?;
    verify_jwt(token, secret.as_bytes(), now_secs())
}

/// 403 unless the token was issued for workspace `workspace_id` (R19: workspaces are isolated).
pub fn require_workspace(claims: &Claims, workspace_id: &str) -> Result<(), ApiError> {
    if claims.workspace_id == workspace_id {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "This token does not grant access to this workspace.",
        ))
    }
}

/// 403 unless the token's role is owner or admin (R19).
pub fn require_billing_manager(claims: &Claims) -> Result<(), ApiError> {
    if claims.role.manages_billing() {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "Only workspace owners and admins can manage billing.",
        ))
    }
}

/// Compares a presented service key with the expected one in constant time.
///
/// Both are hashed first so that neither their contents nor their lengths leak through timing;
/// an empty expected key refuses everything.
pub fn verify_service_key(presented: &str, expected: &str) -> Result<(), ApiError> {
    let presented_digest = Sha256::digest(presented.as_bytes());
    let expected_digest = Sha256::digest(expected.as_bytes());
    let equal: bool = presented_digest
        .as_slice()
        .ct_eq(expected_digest.as_slice())
        .into();
    if equal && !expected.is_empty() {
        Ok(())
    } else {
        Err(ApiError::unauthorized("Invalid service key."))
    }
}

/// Runs `handler` for a service caller (`Authorization: Bearer <service_api_key>`), or answers
/// the contract's 401 without running it: the one guard of every service route.
pub async fn for_service<T>(
    headers: &HeaderMap,
    handler: impl AsyncFnOnce() -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    authenticate_service(headers).await?;
    handler().await
}

/// Authenticates a service call (through [`for_service`] only).
async fn authenticate_service(headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = bearer_token(headers)?;
    let expected = variable(SERVICE_API_KEY_VARIABLE).await?;
    verify_service_key(presented, &expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-secret-of-reasonable-length";
    const NOW: i64 = 1_800_000_000;

    fn encode(value: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("json"))
    }

    fn sign(header: &serde_json::Value, claims: &serde_json::Value, secret: &[u8]) -> String {
        let signing_input = format!("{}.{}", encode(header), encode(claims));
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("key");
        mac.update(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{signature}")
    }

    fn claims(role: &str, exp: i64) -> serde_json::Value {
        serde_json::json!({"sub": "u1", "workspace_id": "ws1", "role": role, "exp": exp, "iat": NOW - 10})
    }

    fn hs256() -> serde_json::Value {
        serde_json::json!({"alg": "HS256", "typ": "JWT"})
    }

    fn rejected(token: &str) -> ApiError {
        let error = verify_jwt(token, SECRET, NOW).expect_err("must be rejected");
        assert_eq!((error.status, error.code.as_ref()), (401, "unauthorized"));
        error
    }

    #[test]
    fn valid_token() {
        let token = sign(&hs256(), &claims("admin", NOW + 60), SECRET);
        let claims = verify_jwt(&token, SECRET, NOW).expect("valid");
        assert_eq!(claims.workspace_id, "ws1");
        assert_eq!(claims.role, Role::Admin);
        assert!(require_workspace(&claims, "ws1").is_ok());
        assert!(require_billing_manager(&claims).is_ok());
    }

    #[test]
    fn wrong_signature() {
        let token = sign(&hs256(), &claims("owner", NOW + 60), b"another-secret");
        assert!(rejected(&token).message.contains("signature"));
        // A tampered payload with the original signature.
        let good = sign(&hs256(), &claims("member", NOW + 60), SECRET);
        let forged = sign(&hs256(), &claims("owner", NOW + 60), SECRET);
        let mut parts: Vec<&str> = good.split('.').collect();
        let forged_claims = forged.split('.').nth(1).expect("claims");
        parts[1] = forged_claims;
        rejected(&parts.join("."));
    }

    #[test]
    fn alg_none_and_others_rejected() {
        let unsigned = format!(
            "{}.{}.",
            encode(&serde_json::json!({"alg": "none"})),
            encode(&claims("owner", NOW + 60))
        );
        assert!(rejected(&unsigned).message.contains("algorithm"));
        let hs512 = sign(
            &serde_json::json!({"alg": "HS512"}),
            &claims("owner", NOW + 60),
            SECRET,
        );
        rejected(&hs512);
    }

    #[test]
    fn expired_and_not_yet_valid() {
        let token = sign(&hs256(), &claims("owner", NOW), SECRET);
        assert!(rejected(&token).message.contains("expired"));
        let mut early = claims("owner", NOW + 60);
        early["nbf"] = (NOW + 30).into();
        rejected(&sign(&hs256(), &early, SECRET));
    }

    #[test]
    fn malformed_tokens() {
        for token in ["", "a.b", "a.b.c.d", "!!.??.**", "e30.e30.e30"] {
            rejected(token);
        }
        let missing_role = serde_json::json!({"sub": "u1", "workspace_id": "ws1", "exp": NOW + 60});
        rejected(&sign(&hs256(), &missing_role, SECRET));
        let bad_role = claims("superuser", NOW + 60);
        rejected(&sign(&hs256(), &bad_role, SECRET));
        assert!(verify_jwt(&sign(&hs256(), &claims("owner", NOW + 60), b""), b"", NOW).is_err());
    }

    #[test]
    fn wrong_workspace_and_member_role_are_forbidden() {
        let token = sign(&hs256(), &claims("member", NOW + 60), SECRET);
        let claims = verify_jwt(&token, SECRET, NOW).expect("valid");
        let error = require_workspace(&claims, "ws2").expect_err("other workspace");
        assert_eq!((error.status, error.code.as_ref()), (403, "forbidden"));
        let error = require_billing_manager(&claims).expect_err("member");
        assert_eq!(error.status, 403);
    }

    #[test]
    fn bearer_and_service_key() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers).expect_err("missing").status, 401);
        headers.insert(
            http::header::AUTHORIZATION,
            "Basic abc".parse().expect("header"),
        );
        assert!(bearer_token(&headers).is_err());
        headers.insert(
            http::header::AUTHORIZATION,
            "bearer key-1".parse().expect("header"),
        );
        assert_eq!(bearer_token(&headers).expect("token"), "key-1");
        assert!(verify_service_key("key-1", "key-1").is_ok());
        assert_eq!(
            verify_service_key("key-2", "key-1")
                .expect_err("wrong")
                .status,
            401
        );
        assert!(verify_service_key("", "").is_err());
    }
}
