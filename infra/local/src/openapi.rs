//! The OpenAPI document of every route, assembled from the route crates'
//! annotations. `lambent openapi` prints it; `docs/openapi.json` is its
//! committed copy, which the health function serves.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, RefOr, ResponseBuilder};
use utoipa::{PartialSchema, ToSchema};

use lambent_http::error::ErrorBody;

const SECURITY_SCHEME: &str = "api_key";

/// Error answers every protected route may give, besides its own.
const PROTECTED_ERRORS: &[(&str, &str)] = &[
    ("400", "invalid input; the message names the field"),
    ("401", "no API key, or not a valid one"),
    ("403", "the route needs the admin role"),
    ("404", "unknown, or not the caller's"),
    ("409", "a concurrent change or a name in use"),
    ("413", "request body too large"),
    ("415", "the body is not JSON"),
    ("429", "rate limited (`Retry-After` says when to retry)"),
    ("503", "a dependency is unavailable"),
];

/// The document as the code describes it.
pub fn document() -> OpenApi {
    let mut api = OpenApi::builder()
        .info(
            utoipa::openapi::InfoBuilder::new()
                .title("Lambent")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "A serverless backend for LLM agents. Every route but /health and \
                     /openapi.json needs `Authorization: Bearer <API key>`. Errors are \
                     `{\"error\": {\"code\", \"message\", \"request_id\"}}`.",
                ))
                .build(),
        )
        .build();
    for group in crate::app::GROUPS.iter().chain(crate::app::LOCAL_GROUPS) {
        api.merge((group.openapi)());
    }

    let components = api.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        SECURITY_SCHEME,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("an API key, `lmb_<key id>_<secret>`"))
                .build(),
        ),
    );
    components
        .schemas
        .insert(ErrorBody::name().into_owned(), ErrorBody::schema());
    let mut nested = Vec::new();
    ErrorBody::schemas(&mut nested);
    components.schemas.extend(nested);

    api.security = Some(vec![SecurityRequirement::new(
        SECURITY_SCHEME,
        Vec::<String>::new(),
    )]);
    for item in api.paths.paths.values_mut() {
        for operation in operations(item) {
            let public = operation
                .security
                .as_ref()
                .is_some_and(|s| s.iter().all(|r| *r == SecurityRequirement::default()));
            if public {
                continue;
            }
            for (status, description) in PROTECTED_ERRORS {
                operation
                    .responses
                    .responses
                    .entry((*status).to_owned())
                    .or_insert_with(|| RefOr::T(error_response(description)));
            }
        }
    }
    api
}

fn error_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(utoipa::openapi::Ref::from_schema_name(
                    ErrorBody::name(),
                )))
                .build(),
        )
        .build()
}

fn operations(item: &mut utoipa::openapi::PathItem) -> Vec<&mut utoipa::openapi::path::Operation> {
    [
        item.get.as_mut(),
        item.post.as_mut(),
        item.put.as_mut(),
        item.patch.as_mut(),
        item.delete.as_mut(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The document as pretty JSON with a final newline, as committed.
pub fn document_json() -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(&document())? + "\n")
}
