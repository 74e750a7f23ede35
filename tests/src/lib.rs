//! Helpers of Lambent's integration and end-to-end tests: the port contract
//! suites, adapter factories for both backends, the AWS emulator, and ways to
//! run `lambent serve` (in process, or as the real binary).

pub mod app;
pub mod chat;
pub mod chat_storage;
pub mod contract;
pub mod embedded;
pub mod emulator;
pub mod identity_storage;
pub mod suites;
pub mod workflow_storage;

use std::ops::Deref;

/// An adapter together with whatever must live as long as it (a temporary
/// data directory).
pub struct Held<T: ?Sized> {
    inner: Box<T>,
    _guard: Option<tempfile::TempDir>,
}

impl<T: ?Sized> Held<T> {
    pub fn new(inner: Box<T>, guard: Option<tempfile::TempDir>) -> Self {
        Held {
            inner,
            _guard: guard,
        }
    }
}

impl<T: ?Sized> Deref for Held<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}
