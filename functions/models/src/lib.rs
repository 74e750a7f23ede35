//! The model catalog with prices. Every caller reads it; admins add models
//! or reprice them.
//!
//! | method | route |
//! |---|---|
//! | GET POST | `/v1/models` |
//! | GET | `/v1/models/{name}` |

use axum::extract::{Path, State as Extract};
use axum::http::StatusCode;
use axum::Json;
use lambent_app::state::State;
use lambent_core::provider::ProviderKind;
use lambent_core::validate;
use lambent_core::Error;
use lambent_http::error::ApiResult;
use lambent_http::group::{self, RouteGroup, Routes};
use lambent_http::routes;
use lambent_http::{Admin, Caller};
use lambent_http::{Body, ListPage};
use lambent_store::models::{Model, Prices};
use rust_decimal::Decimal;
use serde::Deserialize;

/// The routes, listed once: with their OpenAPI description for the
/// document, bare for serving.
pub fn routes() -> Routes<State> {
    Routes::new()
        .routes(routes!(list_models, upsert_model))
        .routes(routes!(get_model))
}

/// The route group: these routes behind the API key check.
pub const GROUP: RouteGroup = RouteGroup {
    openapi: || group::openapi_of(routes()),
    routes: |state| Ok(group::protected(routes(), &state, state.clone())),
};

const NAME_MAX: usize = 100;

/// A model and its prices in USD per million tokens, each a decimal string.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpsertModel {
    /// The provider's model name: letters, digits and `-_.:`.
    #[schema(example = "claude-sonnet-4-5", pattern = "^[A-Za-z0-9_.:-]{1,100}$")]
    name: String,
    provider_kind: ProviderKind,
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "3")]
    input_per_mtok: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "15")]
    output_per_mtok: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "0.30")]
    cache_read_per_mtok: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "3.75")]
    cache_write_per_mtok: Decimal,
}

/// Every model of the catalog, by name (one page: the catalog is small).
#[utoipa::path(get, path = "/v1/models", tag = "models",
    responses((status = 200, body = ListPage<Model>)))]
async fn list_models(
    Extract(state): Extract<State>,
    _principal: Caller,
) -> ApiResult<Json<ListPage<Model>>> {
    let models = state.catalog.all(state.store.as_ref()).await?;
    Ok(Json(ListPage {
        items: models.values().cloned().collect(),
        next_cursor: None,
    }))
}

/// Read one model of the catalog.
#[utoipa::path(get, path = "/v1/models/{name}", tag = "models",
    params(("name" = String, Path, description = "model name, such as `gpt-4.1`")),
    responses((status = 200, body = Model)))]
async fn get_model(
    Extract(state): Extract<State>,
    _principal: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Model>> {
    state
        .catalog
        .get(state.store.as_ref(), &name)
        .await?
        .map(Json)
        .ok_or(Error::NotFound("model").into())
}

/// Add a model to the catalog, or reprice one (admin). A stored price
/// overrides the shipped one.
#[utoipa::path(post, path = "/v1/models", tag = "models", request_body = UpsertModel,
    responses(
        (status = 201, description = "added", body = Model),
        (status = 200, description = "repriced", body = Model),
    ))]
async fn upsert_model(
    Extract(state): Extract<State>,
    _admin: Admin,
    Body(body): Body<UpsertModel>,
) -> ApiResult<(StatusCode, Json<Model>)> {
    let name = validate::slug("name", &body.name, NAME_MAX)?;
    let prices = Prices {
        input_per_mtok: validate::money("input_per_mtok", body.input_per_mtok)?,
        output_per_mtok: validate::money("output_per_mtok", body.output_per_mtok)?,
        cache_read_per_mtok: validate::money("cache_read_per_mtok", body.cache_read_per_mtok)?,
        cache_write_per_mtok: validate::money("cache_write_per_mtok", body.cache_write_per_mtok)?,
    };
    let (model, added) = state
        .catalog
        .upsert(state.store.as_ref(), &name, body.provider_kind, prices)
        .await?;
    state.targets.clear();
    let status = if added {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(model)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_decimal_strings_and_all_four_are_required() {
        let full = r#"{"name":"m","provider_kind":"openai","input_per_mtok":"1.25",
            "output_per_mtok":"10","cache_read_per_mtok":"0.125","cache_write_per_mtok":"0"}"#;
        let parsed = serde_json::from_str::<UpsertModel>(full).ok();
        assert_eq!(
            parsed.map(|m| m.input_per_mtok.to_string()).as_deref(),
            Some("1.25")
        );
        let number = full.replace(r#""1.25""#, "1.25");
        assert!(serde_json::from_str::<UpsertModel>(&number).is_err());
        let missing = full.replace(r#","cache_write_per_mtok":"0""#, "");
        assert!(serde_json::from_str::<UpsertModel>(&missing).is_err());
    }
}
