//! The engine's event log: what happened to containers, images, volumes and
//! networks, in Docker's terms (a type, an action, an actor with
//! attributes). The most recent [`KEEP`] events are kept (for `since`) and
//! every event is broadcast to whoever listens; the API serves them as
//! `GET /events`.
//!
//! The services publish where things happen — container exits are seen by a
//! watcher on the state the monitors write (`containers::events`) — so an
//! event is emitted once however it was caused: through the API, by a
//! restart policy, a health check, or a container exiting on its own.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

/// Events kept for `since`.
pub const KEEP: usize = 1024;
/// Events a slow listener may fall behind before it misses some.
const BACKLOG: usize = 1024;

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `container`, `image`, `volume`, `network`.
    pub kind: String,
    /// `create`, `die`, `exec_create: sh -c …`, `health_status: healthy`…
    pub action: String,
    /// The actor: container or network id, image reference or id, volume name.
    pub id: String,
    pub attributes: BTreeMap<String, String>,
    /// Unix time in nanoseconds; strictly increasing from one event to the next.
    pub time_nano: i128,
}

struct Log {
    recent: VecDeque<Event>,
    last: i128,
}

struct Bus {
    tx: broadcast::Sender<Event>,
    log: Mutex<Log>,
}

/// The event log; cheap to clone (clones share it).
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<Bus>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus").finish_non_exhaustive()
    }
}

fn now_nanos() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

impl EventBus {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(BACKLOG);
        Self {
            inner: Arc::new(Bus {
                tx,
                log: Mutex::new(Log {
                    recent: VecDeque::new(),
                    last: 0,
                }),
            }),
        }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.inner.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records and broadcasts an event; returns it.
    pub fn publish(
        &self,
        kind: &str,
        action: &str,
        id: &str,
        attributes: BTreeMap<String, String>,
    ) -> Event {
        let mut log = self.log();
        // Strictly increasing times: listeners tell the backlog from live
        // events by time, and `since`/`until` compare them.
        let time_nano = now_nanos().max(log.last + 1);
        log.last = time_nano;
        let event = Event {
            kind: kind.to_string(),
            action: action.to_string(),
            id: id.to_string(),
            attributes,
            time_nano,
        };
        if log.recent.len() >= KEEP {
            log.recent.pop_front();
        }
        log.recent.push_back(event.clone());
        // Sent under the lock, so a subscriber sees every event exactly once:
        // in its snapshot or on its receiver.
        let _ = self.inner.tx.send(event.clone());
        event
    }

    /// The events kept so far and a receiver of every later one.
    pub fn subscribe(&self) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let log = self.log();
        let rx = self.inner.tx.subscribe();
        (log.recent.iter().cloned().collect(), rx)
    }

    /// The events kept so far.
    pub fn recent(&self) -> Vec<Event> {
        self.log().recent.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_increase_and_subscribers_miss_nothing() {
        let bus = EventBus::new();
        for i in 0..3 {
            bus.publish("image", "tag", &format!("i{i}"), BTreeMap::new());
        }
        let (backlog, mut rx) = bus.subscribe();
        bus.publish("image", "untag", "i3", BTreeMap::new());
        assert_eq!(backlog.len(), 3);
        let live = rx.try_recv().expect("live event");
        assert_eq!(live.action, "untag");
        let times: Vec<i128> = bus.recent().iter().map(|e| e.time_nano).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    }

    #[test]
    fn keeps_the_most_recent() {
        let bus = EventBus::new();
        for i in 0..KEEP + 10 {
            bus.publish("volume", "create", &i.to_string(), BTreeMap::new());
        }
        let recent = bus.recent();
        assert_eq!(recent.len(), KEEP);
        assert_eq!(recent[0].id, "10");
    }
}
