//! Workflow definitions: `USER#<owner>/WORKFLOW#<id>`, with the steps as
//! JSON. A lookup record `WORKFLOW#<id>/OWNER` names the owner, so a trigger
//! event that carries only the workflow's ID finds it; the definition owns
//! the lookup (see [`super::cascade`]).

use lambent_core::ids::{TypedId, WorkflowId};
use std::collections::BTreeSet;

use futures::future::join_all;
use serde::Serialize;

use super::users;
use super::{cascade, text, PageRequest, Paged};
use crate::agents;
use lambent_core::error::{Error, Result};
use lambent_core::ids;
use lambent_core::workflow::{Definition, StepSpec};
use lambent_ports::{Condition, Item, ItemStore, Key, Query, TxOp};

pub const ID_PREFIX: &str = <WorkflowId as TypedId>::PREFIX;

pub fn item_key(owner: &str, id: &str) -> Key {
    Key::new(users::partition(owner), format!("WORKFLOW#{id}"))
}

fn lookup_key(id: &str) -> Key {
    Key::new(format!("WORKFLOW#{id}"), "OWNER")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Workflow {
    pub id: String,
    pub name: String,
    /// The steps, each after its dependencies.
    pub steps: Vec<StepSpec>,
    pub created_at: String,
}

fn from_item(item: &Item) -> Result<Workflow> {
    let steps = serde_json::from_str(&text(item, "steps")?)
        .map_err(|e| Error::Internal(format!("item {} has unreadable steps: {e}", item.key)))?;
    Ok(Workflow {
        id: super::id_after(item, "WORKFLOW#")?.to_owned(),
        name: text(item, "name")?,
        steps,
        created_at: text(item, "created_at")?,
    })
}

/// The index of the first step whose agent is not one of the owner's, if
/// any: each distinct agent is read once, all at once.
pub async fn step_without_agent(
    store: &dyn ItemStore,
    owner: &str,
    steps: &[StepSpec],
) -> Result<Option<usize>> {
    let ids: BTreeSet<&str> = steps.iter().map(|s| s.agent_id.as_str()).collect();
    let found = join_all(ids.iter().map(|id| agents::get(store, owner, id))).await;
    let mut missing = BTreeSet::new();
    for (id, agent) in ids.iter().zip(found) {
        if agent?.is_none() {
            missing.insert(*id);
        }
    }
    Ok(steps
        .iter()
        .position(|s| missing.contains(s.agent_id.as_str())))
}

pub async fn create(
    store: &dyn ItemStore,
    owner: &str,
    definition: Definition,
) -> Result<Workflow> {
    if let Some(i) = step_without_agent(store, owner, &definition.steps).await? {
        return Err(Error::BadRequest(format!(
            "steps[{i}].agent_id: you have no agent {:?}",
            definition.steps[i].agent_id
        )));
    }
    let workflow = Workflow {
        id: ids::new_id(ID_PREFIX),
        name: definition.name,
        steps: definition.steps,
        created_at: lambent_core::time::now_rfc3339(),
    };
    let steps = serde_json::to_string(&workflow.steps)
        .map_err(|e| Error::Internal(format!("encoding steps: {e}")))?;
    let lookup = lookup_key(&workflow.id);
    let item = cascade::owns_item(Item::new(item_key(owner, &workflow.id)), &lookup)
        .with("name", workflow.name.as_str())
        .with("steps", steps)
        .with("created_at", workflow.created_at.as_str());
    let ops = vec![
        TxOp::Put {
            item,
            condition: Some(Condition::NotExists),
        },
        TxOp::Put {
            item: Item::new(lookup).with("owner", owner),
            condition: Some(Condition::NotExists),
        },
    ];
    users::write_owned(store, owner, ops, |_| None).await?;
    Ok(workflow)
}

pub async fn get(store: &dyn ItemStore, owner: &str, id: &str) -> Result<Option<Workflow>> {
    match store.get(&item_key(owner, id)).await? {
        Some(item) => Ok(Some(from_item(&item)?)),
        None => Ok(None),
    }
}

/// The owner of workflow `id`, for events that name only the workflow.
pub async fn owner_of(store: &dyn ItemStore, id: &str) -> Result<Option<String>> {
    Ok(store
        .get(&lookup_key(id))
        .await?
        .and_then(|item| item.get_str("owner").map(str::to_owned)))
}

pub async fn list(
    store: &dyn ItemStore,
    owner: &str,
    page: PageRequest,
) -> Result<Paged<Workflow>> {
    super::page_of(
        store,
        Query::partition(users::partition(owner)).prefix("WORKFLOW#"),
        page,
        from_item,
    )
    .await
}

/// Deletes the definition and its lookup. Runs keep their own copy of the
/// steps, so runs in progress go on.
pub async fn delete(store: &dyn ItemStore, owner: &str, id: &str) -> Result<()> {
    let result = store
        .transact(vec![
            TxOp::Delete {
                key: item_key(owner, id),
                condition: Some(Condition::Exists),
            },
            TxOp::Delete {
                key: lookup_key(id),
                condition: None,
            },
        ])
        .await;
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.is_condition_failure() => Err(Error::NotFound("workflow")),
        Err(e) => Err(e.into()),
    }
}
