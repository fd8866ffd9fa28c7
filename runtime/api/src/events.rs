//! `/events`: the daemon's event log, kept in memory (the most recent
//! [`KEEP`] events, for `since`) and broadcast to open streams.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::body::{self, ApiResponse};
use crate::error::ApiError;
use crate::query::{glob, Query};
use crate::time::{now_nanos, parse_timestamp};

/// Events kept for `since`.
const KEEP: usize = 1024;

#[derive(Debug, Clone, Serialize)]
pub struct Actor {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Attributes")]
    pub attributes: BTreeMap<String, String>,
}

/// One event, in Docker's wire shape (with the legacy `status`/`id`/`from`
/// fields old clients read).
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    #[serde(rename = "status", skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(rename = "id", skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "Action")]
    pub action: String,
    #[serde(rename = "Actor")]
    pub actor: Actor,
    pub scope: String,
    pub time: i64,
    #[serde(rename = "timeNano")]
    pub time_nano: i128,
}

pub struct EventHub {
    tx: broadcast::Sender<Event>,
    recent: Mutex<VecDeque<Event>>,
    closing: watch::Sender<bool>,
}

impl Default for EventHub {
    fn default() -> Self {
        Self::new()
    }
}

impl EventHub {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(256);
        let (closing, _) = watch::channel(false);
        EventHub {
            tx,
            recent: Mutex::new(VecDeque::new()),
            closing,
        }
    }

    /// Records an image event: `id` is the image reference or id, `name` the
    /// `name` attribute.
    pub fn image(&self, action: &str, id: &str, name: Option<&str>) {
        let mut attributes = BTreeMap::new();
        if let Some(n) = name {
            attributes.insert("name".to_string(), n.to_string());
        }
        self.publish("image", action, id, attributes);
    }

    /// Records a container event (`image` attribute when known).
    pub fn container(&self, action: &str, id: &str, image: &str) {
        let mut attributes = BTreeMap::new();
        if !image.is_empty() {
            attributes.insert("image".to_string(), image.to_string());
        }
        self.publish("container", action, id, attributes);
    }

    pub fn publish(
        &self,
        kind: &str,
        action: &str,
        id: &str,
        attributes: BTreeMap<String, String>,
    ) {
        let nanos = now_nanos();
        let event = Event {
            status: Some(action.to_string()),
            id: Some(id.to_string()),
            kind: kind.to_string(),
            action: action.to_string(),
            actor: Actor {
                id: id.to_string(),
                attributes,
            },
            scope: "local".to_string(),
            time: nanos.div_euclid(1_000_000_000) as i64,
            time_nano: nanos,
        };
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() >= KEEP {
                recent.pop_front();
            }
            recent.push_back(event.clone());
        }
        let _ = self.tx.send(event);
    }

    /// Ends every open event stream (daemon shutdown).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    fn recent(&self) -> Vec<Event> {
        self.recent
            .lock()
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Which events a stream wants (`type`, `event`/`action`, `image`, `label`…).
struct EventFilter {
    filters: crate::query::Filters,
}

impl EventFilter {
    fn matches(&self, e: &Event) -> bool {
        let any = |key: &str, value: &str| {
            let wanted = self.filters.get(key);
            wanted.is_empty() || wanted.iter().any(|w| w == value)
        };
        let actions = [self.filters.get("event"), self.filters.get("action")].concat();
        let action_ok = actions.is_empty()
            || actions
                .iter()
                .any(|a| *a == e.action || e.action.starts_with(&format!("{a}:")));
        let image_ok = {
            let wanted = self.filters.get("image");
            wanted.is_empty()
                || (e.kind == "image"
                    && wanted.iter().any(|w| {
                        e.actor.id == *w
                            || glob(w, &e.actor.id)
                            || e.actor.attributes.get("name").is_some_and(|n| n == w)
                            || e.actor
                                .id
                                .strip_prefix("sha256:")
                                .is_some_and(|h| h.starts_with(w))
                    }))
        };
        any("type", &e.kind)
            && any("scope", &e.scope)
            && action_ok
            && image_ok
            && self.filters.labels_match("label", &e.actor.attributes)
    }
}

/// `GET /events?since=&until=&filters=`.
pub fn stream(hub: &std::sync::Arc<crate::ApiState>, q: &Query) -> Result<ApiResponse, ApiError> {
    let parse = |key: &str| -> Result<Option<i128>, ApiError> {
        q.get(key)
            .map(|s| {
                parse_timestamp(s)
                    .ok_or_else(|| ApiError::bad(format!("invalid value for {key}: {s:?}")))
            })
            .transpose()
    };
    let since = parse("since")?;
    let until = parse("until")?;
    let filter = EventFilter {
        filters: q.filters()?,
    };
    let state = std::sync::Arc::clone(hub);
    let mut live = state.events.tx.subscribe();
    let mut closing = state.events.closing.subscribe();
    let backlog = state.events.recent();
    let (tx, response) = body::stream("application/json");
    tokio::spawn(async move {
        let in_range = |e: &Event| {
            since.is_none_or(|s| e.time_nano >= s) && until.is_none_or(|u| e.time_nano <= u)
        };
        let mut last = i128::MIN;
        if since.is_some() {
            for e in backlog.iter().filter(|e| in_range(e) && filter.matches(e)) {
                if tx.send(body::json_line(e)).await.is_err() {
                    return;
                }
                last = e.time_nano;
            }
        }
        let deadline = until.map(|u| {
            let wait = u.saturating_sub(now_nanos()).max(0);
            tokio::time::Instant::now()
                + std::time::Duration::from_nanos(u64::try_from(wait).unwrap_or(u64::MAX))
        });
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(sleep);
        let closed = async move {
            let _ = closing.wait_for(|c| *c).await.is_ok();
        };
        tokio::pin!(closed);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                _ = tx.closed() => break,
                _ = &mut closed => break,
                received = live.recv() => match received {
                    Ok(e) => {
                        if e.time_nano > last && in_range(&e) && filter.matches(&e)
                            && tx.send(body::json_line(&e)).await.is_err()
                        {
                            break;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
    });
    Ok(response)
}
