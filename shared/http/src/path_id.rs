//! A typed ID from the route's path, parsed once: an ID that cannot exist
//! answers 404, exactly like one that does not exist or is someone else's.

use axum::extract::{FromRequestParts, Path};
use http::request::Parts;

use lambent_core::ids::TypedId;
use lambent_core::Error;

use crate::error::ApiError;

/// `PathId(id): PathId<SessionId>` for a route with one `{id}`.
pub struct PathId<T>(pub T);

impl<S: Send + Sync, T: TypedId> FromRequestParts<S> for PathId<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| Error::NotFound(T::WHAT))?;
        Ok(PathId(T::parse(&raw)?))
    }
}

/// `PathIds(session, message): PathIds<SessionId, MessageId>` for a route
/// with two IDs (`{id}` and `{message_id}`), in path order.
pub struct PathIds<A, B>(pub A, pub B);

impl<S: Send + Sync, A: TypedId, B: TypedId> FromRequestParts<S> for PathIds<A, B> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path((a, b)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|_| Error::NotFound(B::WHAT))?;
        Ok(PathIds(A::parse(&a)?, B::parse(&b)?))
    }
}
