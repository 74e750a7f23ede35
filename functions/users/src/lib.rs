//! Users and the audit log (admin only).
//!
//! | method | route |
//! |---|---|
//! | GET POST | `/v1/users` |
//! | GET PATCH DELETE | `/v1/users/{id}` |
//! | GET | `/v1/audit` |

use axum::extract::{Query, State as Extract};
use axum::http::StatusCode;
use axum::Json;
use lambent_app::identity::{Principal, Role};
use lambent_app::state::State;
use lambent_core::ids::UserId;
use lambent_core::validate;
use lambent_core::Error;
use lambent_http::error::ApiResult;
use lambent_http::group::{self, RouteGroup, Routes};
use lambent_http::routes;
use lambent_http::Admin;
use lambent_http::PathId;
use lambent_http::{Body, ListPage, ListParams};
use lambent_store::audit::{self, AuditEntry};
use lambent_store::users::{self, NewUser, User, UserChange};
use rust_decimal::Decimal;
use serde::Deserialize;

/// The routes, listed once: with their OpenAPI description for the
/// document, bare for serving.
pub fn routes() -> Routes<State> {
    Routes::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user, delete_user))
        .routes(routes!(list_audit))
}

/// The route group: these routes behind the API key check.
pub const GROUP: RouteGroup = RouteGroup {
    openapi: || group::openapi_of(routes()),
    routes: |state| Ok(group::protected(routes(), &state, state.clone())),
};

const NAME_MAX: usize = 200;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateUser {
    #[schema(pattern = "\\S")]
    name: String,
    role: Role,
    /// USD per calendar month (UTC), as a decimal string.
    #[serde(default, with = "rust_decimal::serde::str_option")]
    #[schema(value_type = Option<String>, example = "25.00")]
    monthly_budget_usd: Option<Decimal>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateUser {
    #[schema(pattern = "\\S")]
    name: Option<String>,
    role: Option<Role>,
    /// A decimal string sets the budget; `null` removes it.
    #[serde(default, deserialize_with = "nullable_money")]
    #[schema(value_type = Option<String>, example = "25.00")]
    monthly_budget_usd: Option<Option<Decimal>>,
}

/// Absent: unchanged; `null`: removed; a decimal string: set.
fn nullable_money<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<Decimal>>, D::Error> {
    rust_decimal::serde::str_option::deserialize(d).map(Some)
}

fn scope(principal: &Principal, listing: &str) -> String {
    format!("{listing}:{}", principal.user_id)
}

/// Create a user.
#[utoipa::path(post, path = "/v1/users", tag = "users", request_body = CreateUser,
    responses((status = 201, body = User)))]
async fn create_user(
    Extract(state): Extract<State>,
    _admin: Admin,
    Body(body): Body<CreateUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    let new = NewUser {
        name: validate::name("name", &body.name, NAME_MAX)?,
        role: body.role,
        monthly_budget_usd: body
            .monthly_budget_usd
            .map(|b| validate::money("monthly_budget_usd", b))
            .transpose()?,
    };
    let user = users::create(state.store.as_ref(), new).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// List users, a page at a time.
#[utoipa::path(get, path = "/v1/users", tag = "users", params(ListParams),
    responses((status = 200, body = ListPage<User>)))]
async fn list_users(
    Extract(state): Extract<State>,
    principal: Admin,
    Query(params): Query<ListParams>,
) -> ApiResult<Json<ListPage<User>>> {
    let scope = scope(&principal, "users");
    let listed = params
        .list(&state, &scope, |page| {
            users::list(state.store.as_ref(), page)
        })
        .await?;
    Ok(Json(listed))
}

/// Read a user.
#[utoipa::path(get, path = "/v1/users/{id}", tag = "users",
    params(("id" = String, Path, description = "user ID (`usr_...`)")),
    responses((status = 200, body = User)))]
async fn get_user(
    Extract(state): Extract<State>,
    _admin: Admin,
    PathId(id): PathId<UserId>,
) -> ApiResult<Json<User>> {
    users::get(state.store.as_ref(), &id)
        .await?
        .map(Json)
        .ok_or(Error::NotFound("user").into())
}

/// Change a user's name, role or monthly budget.
#[utoipa::path(patch, path = "/v1/users/{id}", tag = "users", request_body = UpdateUser,
    params(("id" = String, Path, description = "user ID (`usr_...`)")),
    responses((status = 200, body = User)))]
async fn update_user(
    Extract(state): Extract<State>,
    _admin: Admin,
    PathId(id): PathId<UserId>,
    Body(body): Body<UpdateUser>,
) -> ApiResult<Json<User>> {
    let change = UserChange {
        name: body
            .name
            .map(|n| validate::name("name", &n, NAME_MAX))
            .transpose()?,
        role: body.role,
        monthly_budget_usd: match body.monthly_budget_usd {
            Some(Some(b)) => Some(Some(validate::money("monthly_budget_usd", b)?)),
            other => other,
        },
    };
    if &*id == lambent_core::auth::BOOTSTRAP_ADMIN_USER && change.role == Some(Role::Member) {
        return Err(Error::BadRequest("role: the bootstrap admin stays an admin".into()).into());
    }
    let user = users::update(state.store.as_ref(), &id, change).await?;
    state.identity.cache().evict_user(&id);
    state.callers.evict_user(&id);
    Ok(Json(user))
}

/// Delete a user and everything it owns: keys (they stop working at once),
/// providers, agents, sessions and their messages, workflows and runs.
#[utoipa::path(delete, path = "/v1/users/{id}", tag = "users",
    params(("id" = String, Path, description = "user ID (`usr_...`)")),
    responses((status = 204, description = "deleted")))]
async fn delete_user(
    Extract(state): Extract<State>,
    _admin: Admin,
    PathId(id): PathId<UserId>,
) -> ApiResult<StatusCode> {
    users::delete(state.store.as_ref(), &id).await?;
    state.identity.cache().evict_user(&id);
    state.callers.evict_user(&id);
    state.targets.evict_owner(&id);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AuditParams {
    /// The UTC day to read, `yyyy-mm-dd` (default today).
    day: Option<String>,
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Read the audit log, one UTC day at a time, newest first.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditParams),
    responses((status = 200, body = ListPage<AuditEntry>)))]
async fn list_audit(
    Extract(state): Extract<State>,
    principal: Admin,
    Query(params): Query<AuditParams>,
) -> ApiResult<Json<ListPage<AuditEntry>>> {
    let day = match &params.day {
        None => state.clock.today(),
        Some(raw) => lambent_core::time::parse_day(raw)
            .ok_or_else(|| Error::BadRequest("day: expected yyyy-mm-dd".into()))?,
    };
    let scope = format!("{}:{day}", scope(&principal, "audit"));
    let list = ListParams {
        limit: params.limit,
        cursor: params.cursor,
    };
    let listed = list
        .list(&state, &scope, |page| {
            audit::list(state.store.as_ref(), &day, page)
        })
        .await?;
    Ok(Json(listed))
}
