//! Workflow definitions and runs. A definition is checked whole when it is
//! created; a run starts with one transaction and its first steps on the
//! steps queue, and the worker (`functions/worker`) does the rest.
//!
//! | method | route |
//! |---|---|
//! | GET POST | `/v1/workflows` |
//! | GET DELETE | `/v1/workflows/{id}` |
//! | POST | `/v1/workflows/{id}/runs` |
//! | GET | `/v1/runs/{id}` |
//! | POST | `/v1/runs/{id}/cancel` |

use axum::extract::{Query, State as Extract};
use axum::http::StatusCode;
use axum::Json;
use lambent_app::state::State;
use lambent_core::auth::Principal;
use lambent_core::ids::{RunId, WorkflowId};
use lambent_core::validate;
use lambent_core::workflow::{Definition, StepSpec};
use lambent_core::Error;
use lambent_http::error::ApiResult;
use lambent_http::group::{self, RouteGroup, Routes};
use lambent_http::routes;
use lambent_http::Caller;
use lambent_http::PathId;
use lambent_http::{Body, ListPage, ListParams};
use lambent_store::runs::{self, RunView};
use lambent_store::turns::Approval;
use lambent_store::workflows::{self, Workflow};
use serde::{Deserialize, Serialize};

/// The routes, listed once: with their OpenAPI description for the
/// document, bare for serving.
pub fn routes() -> Routes<State> {
    Routes::new()
        .routes(routes!(list_workflows, create_workflow))
        .routes(routes!(get_workflow, delete_workflow))
        .routes(routes!(start_run))
        .routes(routes!(get_run))
        .routes(routes!(cancel_run))
        .routes(routes!(decide_approvals))
}

/// The route group: these routes behind the API key check.
pub const GROUP: RouteGroup = RouteGroup {
    openapi: || group::openapi_of(routes()),
    routes: |state| Ok(group::protected(routes(), &state, state.clone())),
};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateWorkflow {
    #[schema(pattern = "\\S", max_length = 200)]
    name: String,
    /// 1 to 40 steps; `depends_on` must not form a cycle.
    #[schema(min_items = 1, max_items = 40)]
    steps: Vec<StepSpec>,
}

/// The most a workflow's steps may take as stored (JSON): the store holds
/// 400 KB a record, and the rest of the record (name, IDs, dates) stays well
/// under the 50 KB left.
const MAX_DEFINITION_BYTES: usize = 350 * 1024;

/// 40 steps of 16 KB prompts would be 640 KB: a definition is refused, as a
/// 400 naming `steps`, before it reaches the store.
fn fits_in_a_record(definition: &Definition) -> ApiResult<()> {
    let stored = serde_json::to_string(&definition.steps)
        .map_err(|e| Error::Internal(format!("encoding steps: {e}")))?;
    validate::stored_size(
        "steps",
        "the workflow's definition",
        stored.len(),
        MAX_DEFINITION_BYTES,
        "a workflow",
    )?;
    Ok(())
}

/// Define a workflow. Every step's ID, dependencies, placeholders and
/// agent are checked now; a mistake is a 400 that names it.
#[utoipa::path(post, path = "/v1/workflows", tag = "workflows", request_body = CreateWorkflow,
    responses((status = 201, body = Workflow)))]
async fn create_workflow(
    Extract(state): Extract<State>,
    principal: Caller,
    Body(body): Body<CreateWorkflow>,
) -> ApiResult<(StatusCode, Json<Workflow>)> {
    let definition = Definition::validate(&body.name, body.steps)?;
    fits_in_a_record(&definition)?;
    let workflow = workflows::create(state.store.as_ref(), &principal.user_id, definition).await?;
    Ok((StatusCode::CREATED, Json(workflow)))
}

/// List your workflows.
#[utoipa::path(get, path = "/v1/workflows", tag = "workflows", params(ListParams),
    responses((status = 200, body = ListPage<Workflow>)))]
async fn list_workflows(
    Extract(state): Extract<State>,
    principal: Caller,
    Query(params): Query<ListParams>,
) -> ApiResult<Json<ListPage<Workflow>>> {
    let scope = format!("workflows:{}", principal.user_id);
    let listed = params
        .list(&state, &scope, |page| {
            workflows::list(state.store.as_ref(), &principal.user_id, page)
        })
        .await?;
    Ok(Json(listed))
}

async fn own_workflow(
    state: &State,
    principal: &Principal,
    id: &WorkflowId,
) -> ApiResult<Workflow> {
    workflows::get(state.store.as_ref(), &principal.user_id, id)
        .await?
        .ok_or(Error::NotFound("workflow").into())
}

/// Read one of your workflows.
#[utoipa::path(get, path = "/v1/workflows/{id}", tag = "workflows",
    params(("id" = String, Path, description = "workflow ID (`wfl_...`)")),
    responses((status = 200, body = Workflow)))]
async fn get_workflow(
    Extract(state): Extract<State>,
    principal: Caller,
    PathId(id): PathId<WorkflowId>,
) -> ApiResult<Json<Workflow>> {
    Ok(Json(own_workflow(&state, &principal, &id).await?))
}

/// Delete one of your workflows. Its runs go on and stay readable.
#[utoipa::path(delete, path = "/v1/workflows/{id}", tag = "workflows",
    params(("id" = String, Path, description = "workflow ID (`wfl_...`)")),
    responses((status = 204, description = "deleted")))]
async fn delete_workflow(
    Extract(state): Extract<State>,
    principal: Caller,
    PathId(id): PathId<WorkflowId>,
) -> ApiResult<StatusCode> {
    workflows::delete(state.store.as_ref(), &principal.user_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct StartRun {
    /// The values of the prompts' `{{input.<name>}}` placeholders.
    #[serde(default)]
    #[schema(value_type = Object)]
    input: serde_json::Map<String, serde_json::Value>,
    /// Starting again with the same key returns the same run.
    #[schema(min_length = 1, max_length = 128, pattern = "^[!-~]+$")]
    idempotency_key: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct RunStarted {
    run_id: String,
}

/// Start a run of one of your workflows. Its first steps are queued at
/// once; follow it with `GET /v1/runs/{id}`.
#[utoipa::path(post, path = "/v1/workflows/{id}/runs", tag = "workflows",
    params(("id" = String, Path, description = "workflow ID (`wfl_...`)")),
    request_body = StartRun,
    responses((status = 202, body = RunStarted)))]
async fn start_run(
    Extract(state): Extract<State>,
    principal: Caller,
    PathId(id): PathId<WorkflowId>,
    Body(body): Body<StartRun>,
) -> ApiResult<(StatusCode, Json<RunStarted>)> {
    let workflow = own_workflow(&state, &principal, &id).await?;
    let started = lambent_app::workflows::start_run(
        state.store.as_ref(),
        state.queue.as_ref(),
        &principal.user_id,
        &workflow,
        body.input,
        body.idempotency_key.as_deref(),
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(RunStarted {
            run_id: started.run_id,
        }),
    ))
}

/// Read one of your runs: its status, each step's status, attempts, output,
/// error and cost, and the run's total cost, while it runs and after.
#[utoipa::path(get, path = "/v1/runs/{id}", tag = "workflows",
    params(("id" = String, Path, description = "run ID (`run_...`)")),
    responses((status = 200, body = RunView)))]
async fn get_run(
    Extract(state): Extract<State>,
    principal: Caller,
    PathId(id): PathId<RunId>,
) -> ApiResult<Json<RunView>> {
    runs::get(state.store.as_ref(), &principal.user_id, &id)
        .await?
        .map(Json)
        .ok_or(Error::NotFound("run").into())
}

/// Cancel one of your runs: no further step starts (one already running
/// finishes and is billed). 409 if the run has already finished.
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "workflows",
    params(("id" = String, Path, description = "run ID (`run_...`)")),
    responses((status = 200, body = RunView)))]
async fn cancel_run(
    Extract(state): Extract<State>,
    principal: Caller,
    PathId(id): PathId<RunId>,
) -> ApiResult<Json<RunView>> {
    Ok(Json(
        runs::cancel(state.store.as_ref(), &principal.user_id, &id).await?,
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Approvals {
    /// A decision on each call a paused step waits for (see the run's
    /// steps' `pending`); a denial reaches the model as an `is_error`
    /// result with its `reason`.
    approvals: Vec<Approval>,
}

/// Decide the tool calls a step of the run waits for (the run is
/// `waiting`): the step goes on, running the approved tools. 409 when no
/// step waits; 400 naming a call that does not wait, or one left undecided.
#[utoipa::path(post, path = "/v1/runs/{id}/approvals", tag = "workflows",
    request_body = Approvals,
    params(("id" = String, Path, description = "run ID (`run_...`)")),
    responses((status = 200, body = RunView)))]
async fn decide_approvals(
    Extract(state): Extract<State>,
    principal: Caller,
    PathId(id): PathId<RunId>,
    Body(body): Body<Approvals>,
) -> ApiResult<Json<RunView>> {
    Ok(Json(
        lambent_app::workflows::approvals::decide(&state, &principal.user_id, &id, body.approvals)
            .await?,
    ))
}
