//! `/events`: the engine's event log ([`berth_engine::events::EventBus`],
//! where the container, volume and network services publish) plus the image
//! events of the API's own image endpoints, in Docker's wire shape, with
//! Docker's filters.

use std::collections::BTreeMap;

use berth_engine::events::{Event, EventBus};
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::body::{self, ApiResponse};
use crate::error::ApiError;
use crate::query::{Filters, Query};
use crate::time::{now_nanos, parse_timestamp};

#[derive(Debug, Clone, Serialize)]
pub struct Actor {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Attributes")]
    pub attributes: BTreeMap<String, String>,
}

/// One event as Docker sends it. Container and image events also carry the
/// legacy `status`/`id`/`from` fields old clients read.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    #[serde(rename = "status", skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(rename = "id", skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "from", skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
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

impl From<&Event> for Message {
    fn from(e: &Event) -> Self {
        let legacy = matches!(e.kind.as_str(), "container" | "image");
        Message {
            status: legacy.then(|| e.action.clone()),
            id: legacy.then(|| e.id.clone()),
            from: (e.kind == "container")
                .then(|| e.attributes.get("image").cloned())
                .flatten(),
            kind: e.kind.clone(),
            action: e.action.clone(),
            actor: Actor {
                id: e.id.clone(),
                attributes: e.attributes.clone(),
            },
            scope: "local".to_string(),
            time: e.time_nano.div_euclid(1_000_000_000) as i64,
            time_nano: e.time_nano,
        }
    }
}

/// The daemon's events, and the switch that ends open streams.
pub struct EventHub {
    bus: EventBus,
    closing: watch::Sender<bool>,
}

impl EventHub {
    pub fn new(bus: EventBus) -> Self {
        let (closing, _) = watch::channel(false);
        EventHub { bus, closing }
    }

    /// Records an image event: `id` is the image reference or id, `name` the
    /// `name` attribute.
    pub fn image(&self, action: &str, id: &str, name: Option<&str>) {
        let mut attributes = BTreeMap::new();
        if let Some(n) = name {
            attributes.insert("name".to_string(), n.to_string());
        }
        self.bus.publish("image", action, id, attributes);
    }

    pub fn publish(
        &self,
        kind: &str,
        action: &str,
        id: &str,
        attributes: BTreeMap<String, String>,
    ) {
        self.bus.publish(kind, action, id, attributes);
    }

    /// Ends every open event stream (daemon shutdown).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }
}

/// The filter keys Docker accepts for events.
const FILTER_KEYS: &[&str] = &[
    "config",
    "container",
    "daemon",
    "event",
    "image",
    "label",
    "network",
    "node",
    "plugin",
    "scope",
    "secret",
    "service",
    "type",
    "volume",
];

/// Which events a stream wants, as Docker's `events.Filter` decides: every
/// key given must match; values of one key are alternatives.
struct EventFilter {
    filters: Filters,
}

impl EventFilter {
    fn new(filters: Filters) -> Result<Self, ApiError> {
        if let Some(bad) = filters.keys().find(|k| !FILTER_KEYS.contains(&k.as_str())) {
            return Err(ApiError::bad(format!("invalid filter '{bad}'")));
        }
        Ok(EventFilter { filters })
    }

    /// True when `key` is not filtered on, or one of its values is `value`.
    fn exact(&self, key: &str, value: &str) -> bool {
        let wanted = self.filters.get(key);
        wanted.is_empty() || wanted.iter().any(|w| w == value)
    }

    /// `container=`, `volume=`, `network=`: events of that type whose actor
    /// id or name starts with one of the values.
    fn named(&self, key: &str, e: &Event) -> bool {
        let wanted = self.filters.get(key);
        if wanted.is_empty() {
            return true;
        }
        if e.kind != key {
            return false;
        }
        let name = e.attributes.get("name").map(String::as_str).unwrap_or("");
        wanted.iter().any(|w| {
            e.id.starts_with(w.as_str()) || (!name.is_empty() && name.starts_with(w.as_str()))
        })
    }

    /// `image=`: an image event's id or name, or a container event's image,
    /// with or without the tag.
    fn image(&self, e: &Event) -> bool {
        let wanted = self.filters.get("image");
        if wanted.is_empty() {
            return true;
        }
        let attr = if e.kind == "image" { "name" } else { "image" };
        let name = e.attributes.get(attr).map(String::as_str).unwrap_or("");
        let candidates = [e.id.as_str(), name, strip_tag(&e.id), strip_tag(name)];
        wanted
            .iter()
            .any(|w| candidates.iter().any(|c| !c.is_empty() && c == w))
    }

    fn matches(&self, e: &Event) -> bool {
        // `exec_create: sh -c …` and `health_status: healthy` match their
        // prefix, as in Docker.
        let action = e.action.split(':').next().unwrap_or(&e.action);
        (self.exact("event", action) || self.exact("event", &e.action))
            && self.exact("type", &e.kind)
            && self.exact("scope", "local")
            && self.named("container", e)
            && self.named("volume", e)
            && self.named("network", e)
            && self.image(e)
            && self.filters.labels_match("label", &e.attributes)
    }
}

/// `busybox:latest` → `busybox`; digests and registry ports are kept.
fn strip_tag(reference: &str) -> &str {
    if reference.starts_with("sha256:") || reference.contains('@') {
        return reference;
    }
    match reference.rfind(':') {
        Some(i) if !reference[i + 1..].contains('/') => &reference[..i],
        _ => reference,
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
    if let (Some(s), Some(u)) = (since, until) {
        if s > u {
            return Err(ApiError::bad(format!(
                "since ({}) is after until ({})",
                q.get("since").unwrap_or(""),
                q.get("until").unwrap_or("")
            )));
        }
    }
    let filter = EventFilter::new(q.filters()?)?;
    let state = std::sync::Arc::clone(hub);
    let (backlog, mut live) = state.events.bus.subscribe();
    let mut closing = state.events.closing.subscribe();
    let (tx, response) = body::stream("application/json");
    tokio::spawn(async move {
        let in_range = |e: &Event| {
            since.is_none_or(|s| e.time_nano >= s) && until.is_none_or(|u| e.time_nano <= u)
        };
        let send = |e: &Event| body::json_line(&Message::from(e));
        if since.is_some() {
            for e in backlog.iter().filter(|e| in_range(e) && filter.matches(e)) {
                if tx.send(send(e)).await.is_err() {
                    return;
                }
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
                biased;
                _ = &mut closed => break,
                _ = tx.closed() => break,
                received = live.recv() => match received {
                    Ok(e) => {
                        if until.is_some_and(|u| e.time_nano > u) {
                            break;
                        }
                        if in_range(&e) && filter.matches(&e) && tx.send(send(&e)).await.is_err() {
                            break;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = &mut sleep => break,
            }
        }
    });
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, action: &str, id: &str, attrs: &[(&str, &str)]) -> Event {
        Event {
            kind: kind.into(),
            action: action.into(),
            id: id.into(),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            time_nano: 1,
        }
    }

    fn filter(json: &str) -> EventFilter {
        EventFilter::new(Filters::parse(Some(json)).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn docker_filter_semantics() {
        let die = event(
            "container",
            "die",
            "0123456789ab0123",
            &[
                ("name", "web"),
                ("image", "busybox:latest"),
                ("tier", "front"),
                ("exitCode", "3"),
            ],
        );
        let exec = event(
            "container",
            "exec_create: sh -c true",
            "0123456789ab0123",
            &[("name", "web")],
        );
        let pulled = event("image", "pull", "busybox:latest", &[("name", "busybox")]);
        let vol = event("volume", "create", "data", &[("driver", "local")]);
        assert!(filter(r#"{"container":{"web":true}}"#).matches(&die));
        assert!(filter(r#"{"container":{"0123456789ab":true}}"#).matches(&die));
        assert!(!filter(r#"{"container":{"web":true}}"#).matches(&pulled));
        assert!(filter(r#"{"event":{"exec_create":true}}"#).matches(&exec));
        assert!(filter(r#"{"event":{"die":true,"stop":true}}"#).matches(&die));
        assert!(!filter(r#"{"event":{"stop":true}}"#).matches(&die));
        assert!(filter(r#"{"image":{"busybox":true}}"#).matches(&die));
        assert!(filter(r#"{"image":{"busybox":true}}"#).matches(&pulled));
        assert!(!filter(r#"{"image":{"busybox":true}}"#).matches(&vol));
        assert!(filter(r#"{"label":{"tier=front":true}}"#).matches(&die));
        assert!(!filter(r#"{"label":{"tier=back":true}}"#).matches(&die));
        assert!(!filter(r#"{"label":{"tier":true}}"#).matches(&vol));
        assert!(filter(r#"{"type":{"volume":true}}"#).matches(&vol));
        assert!(filter(r#"{"volume":{"da":true}}"#).matches(&vol));
        assert!(!filter(r#"{"type":{"volume":true}}"#).matches(&die));
        assert!(EventFilter::new(
            Filters::parse(Some(r#"{"bogus":{"x":true}}"#)).unwrap_or_default()
        )
        .is_err());
    }

    #[test]
    fn legacy_fields_for_containers_and_images_only() {
        let die = event("container", "die", "abc", &[("image", "busybox")]);
        let m = serde_json::to_value(Message::from(&die)).unwrap_or_default();
        assert_eq!(m["status"], "die");
        assert_eq!(m["from"], "busybox");
        let vol = event("volume", "create", "data", &[]);
        let m = serde_json::to_value(Message::from(&vol)).unwrap_or_default();
        assert!(m.get("status").is_none() && m.get("id").is_none(), "{m}");
    }

    #[test]
    fn tags_stripped_like_docker() {
        assert_eq!(strip_tag("busybox:latest"), "busybox");
        assert_eq!(strip_tag("localhost:5000/app"), "localhost:5000/app");
        assert_eq!(strip_tag("localhost:5000/app:1"), "localhost:5000/app");
        assert_eq!(strip_tag("sha256:abcd"), "sha256:abcd");
    }
}
