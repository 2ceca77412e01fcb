//! The controllers' finalizers go through kube-runtime's
//! [`kube::runtime::finalizer::finalizer`]: it adds the finalizer before the
//! first `Apply` and removes it once `Cleanup` succeeded. A cleanup that
//! still waits for something returns [`Error::CleanupPending`], which keeps
//! the finalizer and asks for another look after its delay.

use kube::runtime::controller::Action;
use kube::runtime::finalizer;

use crate::Error;

/// The finalizer helper's error as this crate's: the reconcile's own error
/// as it was, a failed finalizer patch as an API error.
pub(crate) fn finalizer_error(error: finalizer::Error<Error>) -> Error {
    match error {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => Error::Kube(e),
        other => Error::Other(other.to_string()),
    }
}

/// The requeue of a cleanup that waits (not a failure: no warning).
pub(crate) fn pending(error: &Error) -> Option<Action> {
    match error {
        Error::CleanupPending { after, waiting_for } => {
            tracing::debug!(%waiting_for, "deletion waits");
            Some(Action::requeue(*after))
        }
        _ => None,
    }
}
