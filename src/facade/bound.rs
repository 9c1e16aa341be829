//! The one deadline of a facade request, and the drain, around every
//! backend call it makes.
//!
//! A held request waits on backend calls as much as it sleeps between
//! them: the submit, each status call and its body, the result fetch up
//! to its head. Each such step runs [`Bound::within`], so when the
//! client's hold ends, or shutdown's grace does, the call in flight is
//! abandoned (dropped, closing its connection) and the client is answered
//! at once, whatever the backend is doing.

use std::future::Future;

use tokio::sync::watch;
use tokio::time::Instant;

/// Why a step was abandoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// The client's hold ended.
    Deadline,
    /// Shutdown's grace period ended: everyone held answers now.
    Drained,
}

/// The limits every step of one request runs under.
pub(crate) struct Bound {
    pub(crate) deadline: Instant,
    drain: watch::Receiver<bool>,
}

impl Bound {
    pub(crate) fn new(deadline: Instant, drain: watch::Receiver<bool>) -> Self {
        Bound { deadline, drain }
    }

    /// Resolves once shutdown's grace has ended.
    pub(crate) async fn drained(&mut self) {
        // An error means the signal's sender is gone, which happens only
        // when the process is: that is a drain too.
        let _ = self.drain.wait_for(|now| *now).await;
    }

    /// Runs `step` unless the deadline or the drain comes first. The drain
    /// is looked at first: once it has begun, no new step starts.
    pub(crate) async fn within<T>(&mut self, step: impl Future<Output = T>) -> Result<T, Cut> {
        let deadline = self.deadline;
        tokio::select! {
            biased;
            () = self.drained() => Err(Cut::Drained),
            () = tokio::time::sleep_until(deadline) => Err(Cut::Deadline),
            done = step => Ok(done),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_step_that_outlives_the_deadline_is_cut_at_it() {
        let (_drain, signal) = watch::channel(false);
        let start = Instant::now();
        let mut bound = Bound::new(start + Duration::from_secs(3), signal);
        let cut = bound.within(std::future::pending::<()>()).await;
        assert_eq!(cut, Err(Cut::Deadline));
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        assert_eq!(bound.within(async { 7 }).await, Err(Cut::Deadline));
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_cuts_a_step_in_flight_and_every_later_one() {
        let (drain, signal) = watch::channel(false);
        let mut bound = Bound::new(Instant::now() + Duration::from_secs(60), signal);
        let step = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            drain.send_replace(true);
            std::future::pending::<()>().await
        };
        assert_eq!(bound.within(step).await, Err(Cut::Drained));
        assert_eq!(bound.within(async { 7 }).await, Err(Cut::Drained));
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_that_ends_in_time_gives_its_output() {
        let (_drain, signal) = watch::channel(false);
        let mut bound = Bound::new(Instant::now() + Duration::from_secs(3), signal);
        assert_eq!(bound.within(async { 7 }).await, Ok(7));
    }
}
