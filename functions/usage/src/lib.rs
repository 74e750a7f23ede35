//! Costs and tokens, aggregated per day, agent, model or session (and, for
//! admins, per user), as exact decimals. Members see their own usage;
//! admins see the whole deployment's, or one user's with `user_id`.
//!
//! | method | route |
//! |---|---|
//! | GET | `/v1/usage` |

use axum::extract::{Query, State as Extract};
use axum::Json;
use lambent_app::state::State;
use lambent_core::ids::{TypedId, UserId};
use lambent_core::Error;
use lambent_http::error::ApiResult;
use lambent_http::group::{self, RouteGroup, Routes};
use lambent_http::routes;
use lambent_http::Caller;
use lambent_store::usage::{self, Dimension, Group, Scope, Totals};
use serde::{Deserialize, Serialize};

/// The routes, listed once: with their OpenAPI description for the
/// document, bare for serving.
pub fn routes() -> Routes<State> {
    Routes::new().routes(routes!(get_usage))
}

/// The route group: these routes behind the API key check.
pub const GROUP: RouteGroup = RouteGroup {
    openapi: || group::openapi_of(routes()),
    routes: |state| Ok(group::protected(routes(), &state, state.clone())),
};

/// The longest range one report covers.
const MAX_DAYS: i64 = 366;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct UsageParams {
    /// First day (UTC, `yyyy-mm-dd`), inclusive; default: the first of this month.
    #[param(example = "2026-11-01")]
    from: Option<String>,
    /// Last day (UTC, `yyyy-mm-dd`), inclusive; default: today.
    #[param(example = "2026-11-30")]
    to: Option<String>,
    /// `day` (default), `agent`, `model`, `session`, or (deployment-wide) `user`.
    #[param(inline)]
    group_by: Option<Dimension>,
    /// Admins only: one user's usage instead of the whole deployment's.
    user_id: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct UsageReport {
    from: String,
    to: String,
    group_by: Dimension,
    /// The user reported on, or `null` for the whole deployment.
    user_id: Option<String>,
    /// One entry per day, agent, model, session or user, in key order.
    groups: Vec<Group>,
    /// The sum of the groups.
    total: Totals,
}

fn day(field: &str, raw: &str) -> ApiResult<time::Date> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(raw, &format)
        .map_err(|_| Error::BadRequest(format!("{field}: must be a day as yyyy-mm-dd")).into())
}

fn text(d: time::Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// Tokens and cost between two days, grouped, with their total.
#[utoipa::path(get, path = "/v1/usage", tag = "usage", params(UsageParams),
    responses((status = 200, body = UsageReport)))]
async fn get_usage(
    Extract(state): Extract<State>,
    principal: Caller,
    Query(params): Query<UsageParams>,
) -> ApiResult<Json<UsageReport>> {
    let today = time::OffsetDateTime::now_utc().date();
    let to = match params.to.as_deref() {
        Some(raw) => day("to", raw)?,
        None => today,
    };
    let from = match params.from.as_deref() {
        Some(raw) => day("from", raw)?,
        None => to.replace_day(1).unwrap_or(to),
    };
    if from > to {
        return Err(Error::BadRequest("from: must not be after to".into()).into());
    }
    if (to - from).whole_days() >= MAX_DAYS {
        return Err(
            Error::BadRequest(format!("to: a report covers at most {MAX_DAYS} days")).into(),
        );
    }
    let scope = match params.user_id {
        Some(user) if user == principal.user_id => Scope::User(user),
        Some(user) => {
            principal.require_admin()?;
            UserId::parse(&user)?;
            Scope::User(user)
        }
        None if principal.is_admin() => Scope::Everyone,
        None => Scope::User(principal.user_id.clone()),
    };
    let group_by = params.group_by.unwrap_or(Dimension::Day);
    if group_by == Dimension::User && scope != Scope::Everyone {
        return Err(Error::BadRequest(
            "group_by: user groups the whole deployment's usage (admins, without user_id)".into(),
        )
        .into());
    }
    let (from, to) = (text(from), text(to));
    let (groups, total) = usage::report(state.store.as_ref(), &scope, group_by, &from, &to).await?;
    Ok(Json(UsageReport {
        from,
        to,
        group_by,
        user_id: match scope {
            Scope::User(user) => Some(user),
            Scope::Everyone => None,
        },
        groups,
        total,
    }))
}
