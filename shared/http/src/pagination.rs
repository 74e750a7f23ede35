//! Listings: `?limit=&cursor=` in, `{"items": [...], "next_cursor": ...}` out.
//! Cursors are sealed (see [`crate::cursor`]) and bound to the listing's
//! scope, which each route builds from its name, the caller and its filters.

use lambent_core::Error;
use serde::{Deserialize, Serialize};

use crate::error::ApiResult;
use lambent_app::state::State;
use lambent_store::{PageRequest, Paged};

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Items per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One page of a listing.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ListPage<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

impl ListParams {
    /// The store request of this page, with the cursor opened for `scope`.
    pub async fn page(&self, state: &State, scope: &str) -> ApiResult<PageRequest> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(Error::BadRequest(format!("limit: must be 1 to {MAX_LIMIT}")).into());
        }
        let after = match self.cursor.as_deref() {
            // An empty cursor is the first page, like no cursor.
            None | Some("") => None,
            Some(c) => {
                let keys = state.identity.keys().await?;
                Some(crate::cursor::open(&keys.cursor, scope, c)?)
            }
        };
        Ok(PageRequest {
            limit: limit as usize,
            after,
        })
    }
}

/// The page as the client sees it, its cursor sealed for `scope`.
pub async fn listed<T>(state: &State, scope: &str, page: Paged<T>) -> ApiResult<ListPage<T>> {
    let next_cursor = match page.next {
        None => None,
        Some(position) => {
            let keys = state.identity.keys().await?;
            Some(crate::cursor::seal(&keys.cursor, scope, &position))
        }
    };
    Ok(ListPage {
        items: page.items,
        next_cursor,
    })
}
