//! Listings: `?limit=&cursor=` in, `{"items": [...], "next_cursor": ...}` out.
//! Cursors are sealed (see [`crate::cursor`]) and bound to the listing's
//! scope, which each route builds from its name, the caller and its filters.

use std::future::Future;

use lambent_core::Error;
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult};
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
    async fn page(&self, state: &State, scope: &str) -> ApiResult<PageRequest> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(Error::BadRequest(format!("limit: must be 1 to {MAX_LIMIT}")).into());
        }
        let after = match self.cursor.as_deref() {
            // An empty cursor is the first page, like no cursor.
            None | Some("") => None,
            Some(c) => {
                let keys = state.identity.keys().await?;
                match crate::cursor::open(&keys.cursor, scope, c) {
                    Ok(position) => Some(position),
                    // Perhaps sealed under the previous root, not read yet.
                    Err(_) if !keys.with_previous => {
                        let keys = state.identity.keys_with_previous().await?;
                        Some(crate::cursor::open(&keys.cursor, scope, c)?)
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        Ok(PageRequest {
            limit: limit as usize,
            after,
        })
    }

    /// One page of a listing: the cursor opened for `scope` (a bad cursor or
    /// limit is refused before anything is read), `fetch` run with the store
    /// request, and the next cursor sealed for `scope`.
    pub async fn list<T, E, Fut>(
        &self,
        state: &State,
        scope: &str,
        fetch: impl FnOnce(PageRequest) -> Fut,
    ) -> ApiResult<ListPage<T>>
    where
        Fut: Future<Output = Result<Paged<T>, E>>,
        ApiError: From<E>,
    {
        let page = self.page(state, scope).await?;
        let found = fetch(page).await?;
        listed(state, scope, found).await
    }
}

/// The page as the client sees it, its cursor sealed for `scope`.
async fn listed<T>(state: &State, scope: &str, page: Paged<T>) -> ApiResult<ListPage<T>> {
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
