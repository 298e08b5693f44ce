//! Single flight: concurrent misses on one key (under the same generations) run the
//! computation once per instance; the others wait for its result, bounded by a timeout
//! after which they compute themselves rather than hang.
//!
//! A finished flight stays visible until its entry has been written to the store, so a
//! request that misses in Redis meanwhile is answered from it: the store can run off the
//! request path without losing read-after-store on this instance. Hits never come here:
//! only lookups that already missed take the map's lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::watch;

use crate::entry::Entry;

/// What a flight's waiters see.
#[derive(Debug, Clone)]
pub(crate) enum FlightState {
    /// The leader is computing.
    Computing,
    /// The leader's computation produced this storable entry.
    Produced(Arc<Entry>),
    /// The leader finished with nothing to share (an error, a response not to store):
    /// errors are not shared, its waiters compute their own.
    NothingToShare,
}

impl FlightState {
    /// Whether the leader has published.
    pub(crate) fn is_finished(&self) -> bool {
        !matches!(self, FlightState::Computing)
    }

    /// The entry the leader produced, if any.
    pub(crate) fn entry(&self) -> Option<Arc<Entry>> {
        match self {
            FlightState::Produced(entry) => Some(entry.clone()),
            FlightState::Computing | FlightState::NothingToShare => None,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<String, watch::Receiver<FlightState>>>,
}

pub(crate) enum Join {
    Leader(FlightGuard),
    Follower(watch::Receiver<FlightState>),
}

impl Flights {
    pub(crate) fn join(self: &Arc<Self>, flight_key: String) -> Join {
        let mut map = match self.map.lock() {
            Ok(map) => map,
            // Poisoned: fall back to computing alone, which is always correct.
            Err(_) => {
                let (sender, _) = watch::channel(FlightState::Computing);
                return Join::Leader(FlightGuard {
                    flights: Weak::new(),
                    key: flight_key,
                    sender,
                });
            }
        };
        if let Some(receiver) = map.get(&flight_key) {
            // A receiver whose leader vanished without publishing is stale: replace it.
            if receiver.has_changed().is_ok() {
                return Join::Follower(receiver.clone());
            }
        }
        let (sender, receiver) = watch::channel(FlightState::Computing);
        map.insert(flight_key.clone(), receiver);
        Join::Leader(FlightGuard {
            flights: Arc::downgrade(self),
            key: flight_key,
            sender,
        })
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }
}

/// Held by the request computing a key. Dropping it (finished, or cancelled because the
/// client went away) removes the flight; followers of a flight that never published
/// then compute themselves.
pub(crate) struct FlightGuard {
    flights: Weak<Flights>,
    key: String,
    sender: watch::Sender<FlightState>,
}

impl FlightGuard {
    /// Hands the computation's storable entry (or that there is none) to the waiters.
    pub(crate) fn publish(&self, entry: Option<Arc<Entry>>) {
        self.sender.send_replace(match entry {
            Some(entry) => FlightState::Produced(entry),
            None => FlightState::NothingToShare,
        });
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        if let Some(flights) = self.flights.upgrade() {
            if let Ok(mut map) = flights.map.lock() {
                if map
                    .get(&self.key)
                    .is_some_and(|r| r.same_channel(&self.sender.subscribe()))
                {
                    map.remove(&self.key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_joiner_follows_until_the_leader_drops() {
        let flights = Arc::new(Flights::default());
        let leader = match flights.join("k".into()) {
            Join::Leader(guard) => guard,
            Join::Follower(_) => panic!("first joiner must lead"),
        };
        let mut follower = match flights.join("k".into()) {
            Join::Follower(rx) => rx,
            Join::Leader(_) => panic!("second joiner must follow"),
        };
        assert!(matches!(flights.join("other".into()), Join::Leader(_)));
        leader.publish(None);
        assert!(follower.borrow_and_update().is_finished());
        drop(leader);
        assert_eq!(flights.len(), 0);
    }
}
