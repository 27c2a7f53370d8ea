//! The downstream half of fencing: a resource that refuses stale tokens.

use std::sync::Mutex;

use crate::{Fence, FencingToken, LeaseError};

/// A small in-memory resource that refuses writes whose token is older than
/// the newest it has accepted.
///
/// This is what makes a lease safe when a holder outlives its grant without
/// knowing (a long pause, a partition): the new holder's first write raises
/// the bar, and every later write from the old holder is refused. A real
/// downstream (a database row, an object store) keeps the highest token
/// beside the data and compares in the same atomic step as the write.
#[derive(Debug)]
pub struct FencedResource<T> {
    name: String,
    state: Mutex<(Option<FencingToken>, T)>,
}

impl<T> FencedResource<T> {
    /// A resource called `name` holding `initial`.
    pub fn new(name: impl Into<String>, initial: T) -> Self {
        Self {
            name: name.into(),
            state: Mutex::new((None, initial)),
        }
    }

    /// Applies `write` if `fence`'s token is at least the highest accepted so
    /// far, and raises that mark to it.
    ///
    /// # Errors
    /// [`LeaseError::StaleFence`], with nothing applied, when a newer token
    /// has already been accepted.
    pub fn write<R>(
        &self,
        fence: &Fence,
        write: impl FnOnce(&mut T) -> R,
    ) -> Result<R, LeaseError> {
        let mut state = self.lock();
        if let Some(highest) = state.0
            && fence.token < highest
        {
            return Err(LeaseError::StaleFence {
                resource: self.name.clone(),
                fence: Box::new(fence.clone()),
                highest,
            });
        }
        state.0 = Some(fence.token);
        Ok(write(&mut state.1))
    }

    /// Reads the resource.
    pub fn read<R>(&self, read: impl FnOnce(&T) -> R) -> R {
        read(&self.lock().1)
    }

    /// The highest token accepted so far.
    pub fn highest(&self) -> Option<FencingToken> {
        self.lock().0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Option<FencingToken>, T)> {
        // `write` applies its closure last; a panic in it leaves the raised
        // mark, which only refuses more.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Holder, LeaseKey};

    fn fence(token: u64) -> Fence {
        Fence {
            key: LeaseKey::new("k").unwrap(),
            holder: Holder::new("w", "1").unwrap(),
            token: FencingToken(token),
        }
    }

    #[test]
    fn stale_tokens_are_refused_equal_ones_accepted() {
        let resource = FencedResource::new("log", Vec::new());
        resource.write(&fence(3), |log| log.push(3)).unwrap();
        resource.write(&fence(3), |log| log.push(33)).unwrap();
        let err = resource.write(&fence(2), |log| log.push(2)).unwrap_err();
        assert!(
            matches!(
                err,
                LeaseError::StaleFence {
                    highest: FencingToken(3),
                    ..
                }
            ),
            "{err}"
        );
        resource.write(&fence(7), |log| log.push(7)).unwrap();
        assert_eq!(resource.read(Vec::clone), vec![3, 33, 7]);
        assert_eq!(resource.highest(), Some(FencingToken(7)));
    }
}
