//! Token endpoints: Entra ID client credentials (secret or federated assertion) and the
//! managed identity endpoint (IMDS shape), with Entra-shaped errors.

use std::time::Instant;

use serde_json::json;

use super::Shared;
use super::http::{Request, Response};

const AUDIENCES: [&str; 3] = [
    "https://monitor.azure.com",
    "https://monitor.azure.us",
    "https://monitor.azure.cn",
];

fn entra_error(status: u16, error: &str, code: u64, description: &str) -> Response {
    Response::json(
        status,
        &json!({
            "error": error,
            "error_description": format!(
                "AADSTS{code}: {description} Trace ID: 00000000-0000-0000-0000-000000000000 \
                 Correlation ID: 00000000-0000-0000-0000-000000000000 Timestamp: 2024-01-01 00:00:00Z"
            ),
            "error_codes": [code],
            "timestamp": "2024-01-01 00:00:00Z",
            "trace_id": "00000000-0000-0000-0000-000000000000",
            "correlation_id": "00000000-0000-0000-0000-000000000000",
            "error_uri": "https://login.microsoftonline.com/error?code=".to_string() + &code.to_string(),
        }),
    )
}

/// Issues a token valid for the configured lifetime.
fn issue(state: &Shared) -> (String, u64) {
    let mut s = state.lock().expect("emulator state");
    let token = format!("emu-at-{:032x}", rand::random::<u128>());
    let lifetime = s.config.token_lifetime;
    s.tokens.insert(token.clone(), Instant::now() + lifetime);
    (token, lifetime.as_secs())
}

fn count(state: &Shared, status: u16) {
    let mut s = state.lock().expect("emulator state");
    *s.stats.token_by_status.entry(status).or_default() += 1;
}

/// `POST /{tenant}/oauth2/v2.0/token`.
pub(super) fn token(state: &Shared, tenant: &str, request: &Request) -> Response {
    let bomb_mib = state
        .lock()
        .expect("emulator state")
        .config
        .faults
        .token_gzip_bomb_mib;
    let response = if bomb_mib > 0 {
        Response {
            status: 200,
            headers: vec![
                (
                    "Content-Type".into(),
                    "application/json; charset=utf-8".into(),
                ),
                ("Content-Encoding".into(), "gzip".into()),
            ],
            body: crate::miro::gzip_bomb(bomb_mib)
                .flat_map(|b| b.to_vec())
                .collect(),
        }
    } else {
        token_inner(state, tenant, request)
    };
    count(state, response.status);
    response
}

fn token_inner(state: &Shared, tenant: &str, request: &Request) -> Response {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&request.body)
        .into_owned()
        .collect();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let config = state.lock().expect("emulator state").config.clone();
    if tenant != config.tenant_id {
        return entra_error(
            400,
            "invalid_request",
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        );
    }
    if field("grant_type") != Some("client_credentials") {
        return entra_error(
            400,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    let client_id = field("client_id").unwrap_or("");
    if client_id != config.client_id {
        return entra_error(
            400,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'."
            ),
        );
    }
    let scope = field("scope").unwrap_or("");
    let Some(resource) = scope.strip_suffix("/.default") else {
        return entra_error(
            400,
            "invalid_scope",
            1002012,
            &format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier."
            ),
        );
    };
    if !AUDIENCES.contains(&resource.trim_end_matches('/')) {
        return entra_error(
            400,
            "invalid_resource",
            500011,
            &format!("The resource principal named {resource} was not found in the tenant."),
        );
    }
    match (field("client_secret"), field("client_assertion")) {
        (Some(secret), _) => {
            if secret != config.client_secret {
                return entra_error(
                    401,
                    "invalid_client",
                    7000215,
                    &format!(
                        "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
                    ),
                );
            }
        }
        (None, Some(assertion)) => {
            if field("client_assertion_type")
                != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
            {
                return entra_error(
                    400,
                    "invalid_request",
                    90014,
                    "The required field 'client_assertion_type' is missing from the credential.",
                );
            }
            if config.federated_assertion.as_deref() != Some(assertion) {
                return entra_error(
                    400,
                    "invalid_client",
                    700213,
                    "No matching federated identity record found for presented assertion subject.",
                );
            }
        }
        (None, None) => {
            return entra_error(
                401,
                "invalid_client",
                7000216,
                "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
            );
        }
    }
    let (token, lifetime) = issue(state);
    Response::json(
        200,
        &json!({"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token}),
    )
}

/// `GET /metadata/identity/oauth2/token?api-version=...&resource=...[&client_id=...]`.
pub(super) fn managed_identity(state: &Shared, request: &Request) -> Response {
    let response = managed_identity_inner(state, request);
    count(state, response.status);
    response
}

fn managed_identity_inner(state: &Shared, request: &Request) -> Response {
    let metadata = request
        .header("metadata")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let identity_header = request
        .header("x-identity-header")
        .is_some_and(|v| !v.is_empty());
    if !metadata && !identity_header {
        return Response::json(
            400,
            &json!({"error": "invalid_request", "error_description": "Required metadata header not specified"}),
        );
    }
    let resource = request.query("resource").unwrap_or("");
    if !AUDIENCES.contains(&resource.trim_end_matches('/')) {
        return Response::json(
            400,
            &json!({"error": "invalid_resource", "error_description": format!("AADSTS500011: The resource principal named {resource} was not found in the tenant.")}),
        );
    }
    let config = state.lock().expect("emulator state").config.clone();
    if let Some(id) = request.query("client_id")
        && id != config.client_id
    {
        return Response::json(
            400,
            &json!({"error": "invalid_request", "error_description": "Identity not found"}),
        );
    }
    let (token, lifetime) = issue(state);
    Response::json(
        200,
        &json!({
            "access_token": token,
            "expires_in": lifetime.to_string(),
            "expires_on": (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) + lifetime).to_string(),
            "resource": resource,
            "token_type": "Bearer",
        }),
    )
}
