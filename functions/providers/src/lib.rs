//! Model providers, their API keys encrypted with the key cipher. Every
//! caller, admin or member, reaches only its own providers.
//!
//! | method | route |
//! |---|---|
//! | GET POST | `/v1/providers` |
//! | GET PATCH DELETE | `/v1/providers/{id}` |

use axum::extract::{Query, State as Extract};
use axum::http::StatusCode;
use axum::Json;
use lambent_app::state::State;
use lambent_core::ids::ProviderId;
use lambent_core::secret::{ExposeSecret, SecretString};
use lambent_core::validate;
use lambent_core::Error;
use lambent_http::error::{ApiError, ApiResult};
use lambent_http::group::{self, RouteGroup, Routes};
use lambent_http::routes;
use lambent_http::Caller;
use lambent_http::PathId;
use lambent_http::{Body, ListPage, ListParams};
use lambent_store::providers::{self, NewProvider, Provider, ProviderChange, ProviderKind};
use serde::Deserialize;

/// The routes, listed once: with their OpenAPI description for the
/// document, bare for serving.
pub fn routes() -> Routes<State> {
    Routes::new()
        .routes(routes!(list_providers, create_provider))
        .routes(routes!(get_provider, update_provider, delete_provider))
}

/// The route group: these routes behind the API key check.
pub const GROUP: RouteGroup = RouteGroup {
    openapi: || group::openapi_of(routes()),
    routes: |state| Ok(group::protected(routes(), &state, state.clone())),
};

/// Provider names appear in `<provider name>/<model>`, so they are slugs.
const NAME_MAX: usize = 64;
const API_KEY_MAX: usize = 500;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateProvider {
    kind: ProviderKind,
    /// Unique among your providers: letters, digits and `-_.:`.
    #[schema(example = "anthropic", pattern = "^[A-Za-z0-9_.:-]{1,64}$")]
    name: String,
    /// The provider's API key. Only its last four characters are ever shown.
    #[serde(deserialize_with = "secret")]
    #[schema(value_type = String)]
    api_key: SecretString,
    /// Where to send requests instead of the kind's default; required for
    /// `openai_compatible`. Must be https and a public address.
    #[schema(example = "https://api.example.com/v1")]
    base_url: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateProvider {
    #[schema(pattern = "^[A-Za-z0-9_.:-]{1,64}$")]
    name: Option<String>,
    /// A new API key (rotation).
    #[serde(default, deserialize_with = "optional_secret")]
    #[schema(value_type = Option<String>)]
    api_key: Option<SecretString>,
    /// A URL sets it; `null` returns to the kind's default (not allowed for
    /// `openai_compatible`).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    base_url: Option<Option<String>>,
}

/// A JSON string, straight into a secret. Any other JSON value is refused
/// without echoing it.
fn secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Ok(SecretString::from(s)),
        _ => Err(serde::de::Error::custom("must be a string")),
    }
}

fn optional_secret<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<SecretString>, D::Error> {
    secret(d).map(Some)
}

/// Absent: unchanged; `null`: cleared; a value: set.
fn nullable<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Trims the key and checks its shape. The message never contains the key.
fn api_key(raw: &SecretString) -> ApiResult<SecretString> {
    let trimmed = raw.expose_secret().trim();
    let count = trimmed.chars().count();
    if count == 0 || count > API_KEY_MAX {
        return Err(
            Error::BadRequest(format!("api_key: must be 1 to {API_KEY_MAX} characters")).into(),
        );
    }
    if trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::BadRequest(
            "api_key: must not contain whitespace or control characters".into(),
        )
        .into());
    }
    Ok(SecretString::from(trimmed))
}

/// The SSRF guard on a base URL; the URL as parsed.
async fn base_url(state: &State, raw: &str) -> ApiResult<String> {
    lambent_llm::net_guard::check_base_url(raw, state.config.allow_private_provider_urls)
        .await
        .map(|url| url.as_str().to_owned())
        .map_err(|refused| Error::BadRequest(refused.to_string()).into())
}

fn base_url_required() -> ApiError {
    Error::BadRequest("base_url: required for openai_compatible".into()).into()
}

/// Add a provider with its API key.
#[utoipa::path(post, path = "/v1/providers", tag = "providers", request_body = CreateProvider,
    responses((status = 201, body = Provider)))]
async fn create_provider(
    Extract(state): Extract<State>,
    principal: Caller,
    Body(body): Body<CreateProvider>,
) -> ApiResult<(StatusCode, Json<Provider>)> {
    let name = validate::slug("name", &body.name, NAME_MAX)?;
    let api_key = api_key(&body.api_key)?;
    let base_url = match &body.base_url {
        Some(raw) => Some(base_url(&state, raw).await?),
        None if body.kind == ProviderKind::OpenaiCompatible => return Err(base_url_required()),
        None => None,
    };
    let new = NewProvider {
        kind: body.kind,
        name,
        api_key,
        base_url,
    };
    let provider = providers::create(
        state.store.as_ref(),
        state.cipher.as_ref(),
        &principal.user_id,
        new,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(provider)))
}

/// List your providers, a page at a time.
#[utoipa::path(get, path = "/v1/providers", tag = "providers", params(ListParams),
    responses((status = 200, body = ListPage<Provider>)))]
async fn list_providers(
    Extract(state): Extract<State>,
    principal: Caller,
    Query(params): Query<ListParams>,
) -> ApiResult<Json<ListPage<Provider>>> {
    let scope = format!("providers:{}", principal.user_id);
    let listed = params
        .list(&state, &scope, |page| {
            providers::list(state.store.as_ref(), &principal.user_id, page)
        })
        .await?;
    Ok(Json(listed))
}

/// Read one of your providers.
#[utoipa::path(get, path = "/v1/providers/{id}", tag = "providers",
    params(("id" = String, Path, description = "provider ID (`prv_...`)")),
    responses((status = 200, body = Provider)))]
async fn get_provider(
    Extract(state): Extract<State>,
    principal: Caller,
    PathId(id): PathId<ProviderId>,
) -> ApiResult<Json<Provider>> {
    providers::get(state.store.as_ref(), &principal.user_id, &id)
        .await?
        .map(Json)
        .ok_or(Error::NotFound("provider").into())
}

/// Rename a provider, rotate its API key or change its base URL.
#[utoipa::path(patch, path = "/v1/providers/{id}", tag = "providers",
    request_body = UpdateProvider,
    params(("id" = String, Path, description = "provider ID (`prv_...`)")),
    responses((status = 200, body = Provider)))]
async fn update_provider(
    Extract(state): Extract<State>,
    principal: Caller,
    PathId(id): PathId<ProviderId>,
    Body(body): Body<UpdateProvider>,
) -> ApiResult<Json<Provider>> {
    let name = body
        .name
        .map(|n| validate::slug("name", &n, NAME_MAX))
        .transpose()?;
    let api_key = body.api_key.as_ref().map(api_key).transpose()?;
    let base_url = match body.base_url {
        Some(Some(raw)) => Some(Some(base_url(&state, &raw).await?)),
        Some(None) => {
            let current = providers::get(state.store.as_ref(), &principal.user_id, &id)
                .await?
                .ok_or(Error::NotFound("provider"))?;
            if current.kind == ProviderKind::OpenaiCompatible {
                return Err(base_url_required());
            }
            Some(None)
        }
        None => None,
    };
    let change = ProviderChange {
        name,
        api_key,
        base_url,
    };
    let provider = providers::update(
        state.store.as_ref(),
        state.cipher.as_ref(),
        &principal.user_id,
        &id,
        change,
    )
    .await?;
    state.targets.evict_owner(&principal.user_id);
    Ok(Json(provider))
}

/// Delete one of your providers and its stored key.
#[utoipa::path(delete, path = "/v1/providers/{id}", tag = "providers",
    params(("id" = String, Path, description = "provider ID (`prv_...`)")),
    responses((status = 204, description = "deleted")))]
async fn delete_provider(
    Extract(state): Extract<State>,
    principal: Caller,
    PathId(id): PathId<ProviderId>,
) -> ApiResult<StatusCode> {
    providers::delete(state.store.as_ref(), &principal.user_id, &id).await?;
    state.targets.evict_owner(&principal.user_id);
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(e: ApiError) -> String {
        e.public_message()
    }

    #[test]
    fn api_keys_are_trimmed_and_checked_without_being_echoed() {
        let ok =
            api_key(&SecretString::from("  sk-abc123  ")).map(|k| k.expose_secret().to_owned());
        assert_eq!(ok.ok().as_deref(), Some("sk-abc123"));

        for bad in ["", "   ", "sk-abc 123", "sk-abc\u{7}123", "sk-\tx"] {
            let err = api_key(&SecretString::from(bad)).err().map(message);
            let err = err.unwrap_or_default();
            assert!(err.starts_with("api_key: "), "{bad:?}: {err}");
            assert!(!err.contains("sk-"), "{err}");
        }
        let long = "k".repeat(API_KEY_MAX + 1);
        let err = api_key(&SecretString::from(long.as_str()))
            .err()
            .map(message);
        assert!(err.is_some_and(|e| e.starts_with("api_key: ") && !e.contains("kkkk")));
        assert!(api_key(&SecretString::from("k".repeat(API_KEY_MAX).as_str())).is_ok());
    }

    #[test]
    fn a_non_string_key_is_refused_without_its_value() {
        let err = serde_json::from_str::<CreateProvider>(
            r#"{"kind":"openai","name":"x","api_key":123456789}"#,
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("must be a string"), "{err}");
        assert!(!err.contains("123456789"), "{err}");
    }

    #[test]
    fn a_provider_always_fits_in_a_record() {
        // The longest base_url the guard accepts, as stored (parsed: each
        // 2-byte character percent-encoded to 6 bytes).
        let prefix = "https://x.example/";
        let raw = format!("{prefix}{}", "é".repeat((2048 - prefix.len()) / 2));
        assert!(raw.len() <= 2048);
        let stored = lambent_llm::net_guard::check_url(&raw, false)
            .unwrap()
            .as_str()
            .len();
        // The name, the longest key (4-byte characters) as ciphertext (a
        // generous 1 KB of envelope), the URL: far under the store's 400 KB,
        // so the provider routes need no size check of their own.
        let largest = NAME_MAX + 4 * API_KEY_MAX + 1024 + stored;
        assert!(largest < 16 * 1024, "{largest}");
    }

    #[test]
    fn base_url_null_clears_and_absent_leaves_it() {
        let parse = |raw: &str| {
            serde_json::from_str::<UpdateProvider>(raw)
                .ok()
                .map(|u| u.base_url)
        };
        assert_eq!(parse("{}"), Some(None));
        assert_eq!(parse(r#"{"base_url":null}"#), Some(Some(None)));
        assert_eq!(
            parse(r#"{"base_url":"https://x.example"}"#),
            Some(Some(Some("https://x.example".to_owned())))
        );
        assert!(serde_json::from_str::<UpdateProvider>(r#"{"api_key":null}"#).is_err());
        assert!(serde_json::from_str::<UpdateProvider>(r#"{"kind":"openai"}"#).is_err());
    }
}
