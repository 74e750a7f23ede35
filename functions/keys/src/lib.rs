//! API keys: create (the secret is in that response only), list masked,
//! revoke (effective at once in this process, within
//! `LAMBENT_AUTH_CACHE_SECS` everywhere).
//!
//! | method | route |
//! |---|---|
//! | GET POST | `/v1/keys` |
//! | DELETE | `/v1/keys/{id}` |

use axum::extract::{Query, State as Extract};
use axum::http::StatusCode;
use axum::{Extension, Json};
use lambent_app::state::State;
use lambent_core::auth::Principal;
use lambent_core::ids::{KeyId, TypedId, UserId};
use lambent_core::secret::ExposeSecret;
use lambent_core::validate;
use lambent_http::error::ApiResult;
use lambent_http::group::{self, RouteGroup, Routes};
use lambent_http::routes;
use lambent_http::PathId;
use lambent_http::{AuditSubject, Caller};
use lambent_http::{Body, ListPage, ListParams};
use lambent_store::keys::{self, ApiKeyInfo};
use serde::{Deserialize, Serialize};

/// The routes, listed once: with their OpenAPI description for the
/// document, bare for serving.
pub fn routes() -> Routes<State> {
    Routes::new()
        .routes(routes!(list_keys, create_key))
        .routes(routes!(revoke_key))
}

/// The route group: these routes behind the API key check.
pub const GROUP: RouteGroup = RouteGroup {
    openapi: || group::openapi_of(routes()),
    routes: |state| Ok(group::protected(routes(), &state, state.clone())),
};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    /// A label to recognise the key by.
    #[schema(pattern = "\\S")]
    name: Option<String>,
    /// Admins only: the user the key is for (default: the caller).
    #[schema(pattern = "^usr_[0-9a-z]{1,64}$")]
    user_id: Option<String>,
}

/// A new key. `key` is shown in this response only; store it now.
#[derive(Serialize, utoipa::ToSchema)]
struct CreatedKey {
    #[serde(flatten)]
    info: ApiKeyInfo,
    /// The full API key: `lmb_<key id>_<secret>`.
    key: String,
}

/// The user a request acts for: the caller, or (admins only) another user.
fn target_user(principal: &Principal, requested: Option<String>) -> ApiResult<String> {
    match requested {
        None => Ok(principal.user_id.clone()),
        Some(id) if id == principal.user_id => Ok(id),
        Some(id) => {
            principal.require_admin()?;
            UserId::parse(&id)?;
            Ok(id)
        }
    }
}

/// Create an API key for yourself (admins: for any user).
#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = CreateKey,
    responses((status = 201, body = CreatedKey)))]
async fn create_key(
    Extract(state): Extract<State>,
    principal: Caller,
    Body(body): Body<CreateKey>,
) -> ApiResult<(StatusCode, Extension<AuditSubject>, Json<CreatedKey>)> {
    let user_id = target_user(&principal, body.user_id)?;
    let name = body
        .name
        .map(|n| validate::name("name", &n, 200))
        .transpose()?;
    let (info, full) = keys::create(state.store.as_ref(), &user_id, name).await?;
    let audited = AuditSubject {
        user_id: info.user_id.clone(),
        resource_id: info.id.clone(),
    };
    let created = CreatedKey {
        info,
        key: full.expose_secret().to_owned(),
    };
    Ok((StatusCode::CREATED, Extension(audited), Json(created)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct KeyListParams {
    /// Admins only: whose keys (default: the caller's).
    user_id: Option<String>,
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    cursor: Option<String>,
}

/// List your API keys, masked.
#[utoipa::path(get, path = "/v1/keys", tag = "keys", params(KeyListParams),
    responses((status = 200, body = ListPage<ApiKeyInfo>)))]
async fn list_keys(
    Extract(state): Extract<State>,
    principal: Caller,
    Query(params): Query<KeyListParams>,
) -> ApiResult<Json<ListPage<ApiKeyInfo>>> {
    let user_id = target_user(&principal, params.user_id)?;
    let scope = format!("keys:{}:{user_id}", principal.user_id);
    let list = ListParams {
        limit: params.limit,
        cursor: params.cursor,
    };
    let listed = list
        .list(&state, &scope, |page| {
            keys::list(state.store.as_ref(), &user_id, page)
        })
        .await?;
    Ok(Json(listed))
}

/// Revoke an API key: one of yours (admins: anyone's).
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path, description = "key ID (`key_...`)")),
    responses((status = 204, description = "revoked")))]
async fn revoke_key(
    Extract(state): Extract<State>,
    principal: Caller,
    PathId(id): PathId<KeyId>,
) -> ApiResult<StatusCode> {
    let owner = (!principal.is_admin()).then_some(principal.user_id.as_str());
    keys::revoke(state.store.as_ref(), owner, &id).await?;
    state.identity.cache().evict(&id);
    Ok(StatusCode::NO_CONTENT)
}
