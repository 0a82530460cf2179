//! Watch streams: one JSON event per line, flushed per event. Events come pre-serialized from
//! the store and the same bytes go to every watcher that needs no per-watcher rewrite
//! (selectors that flip an event's type, or Tables).

use crate::registry::ResourceDef;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Event, EventType, Subscription};
use crate::table;
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

/// Everything one watch needs.
pub struct Watch {
    pub res: usize,
    pub def: ResourceDef,
    pub ns: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub bookmarks: bool,
    pub bookmark_interval: Duration,
    pub deadline: Option<Instant>,
    pub table: bool,
    /// Events with rv ≤ this are already reflected (in `initial` or known to the client).
    pub last_rv: u64,
    pub initial: VecDeque<Arc<Value>>,
    pub backlog: VecDeque<Arc<Event>>,
    pub rx: tokio::sync::broadcast::Receiver<Arc<Event>>,
    pub done: bool,
    pub sent_columns: bool,
}

impl Watch {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        res: usize,
        def: ResourceDef,
        ns: Option<String>,
        labels: LabelSelector,
        fields: FieldSelector,
        bookmarks: bool,
        bookmark_interval: Duration,
        timeout: Option<Duration>,
        table: bool,
        start_rv: u64,
        initial: Vec<Arc<Value>>,
        sub: Subscription,
    ) -> Self {
        Watch {
            res,
            def,
            ns,
            labels,
            fields,
            bookmarks,
            bookmark_interval,
            deadline: timeout.map(|t| Instant::now() + t),
            table,
            last_rv: start_rv,
            initial: initial.into(),
            backlog: sub.backlog.into(),
            rx: sub.rx,
            done: false,
            sent_columns: false,
        }
    }

    fn matches(&self, v: &Value) -> bool {
        self.labels.matches(v) && self.fields.matches(v)
    }

    fn line(&mut self, etype: &str, obj: &Value) -> Bytes {
        let object = if self.table {
            let with_columns = !self.sent_columns;
            self.sent_columns = true;
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or(Value::Null);
            let mut meta = serde_json::Map::new();
            meta.insert("resourceVersion".into(), rv);
            table::table(&self.def, std::iter::once(obj), meta, with_columns)
        } else {
            // Serializing a borrowed value: no clone of the object.
            return serialize_event(etype, obj);
        };
        serialize_event(etype, &object)
    }

    /// The line for one event, or None when this watcher does not see it.
    fn render(&mut self, ev: &Event) -> Option<Bytes> {
        if ev.rv <= self.last_rv {
            return None;
        }
        self.last_rv = ev.rv;
        if ev.res != self.res {
            return None;
        }
        if let Some(ns) = &self.ns {
            if ev.ns != *ns {
                return None;
            }
        }
        let filtered = !self.labels.is_empty() || !self.fields.is_empty();
        if !filtered && !self.table {
            return Some(ev.line.clone());
        }
        let now = self.matches(&ev.obj);
        let before = ev.prev.as_ref().map(|p| self.matches(p));
        let etype = match (ev.etype, before, now) {
            (EventType::Deleted, _, true) => EventType::Deleted,
            (EventType::Deleted, _, false) => return None,
            (EventType::Added, _, true) => EventType::Added,
            (EventType::Modified, Some(false), true) => EventType::Added,
            (EventType::Modified, _, true) => EventType::Modified,
            (EventType::Modified, Some(true), false) => EventType::Deleted,
            _ => return None,
        };
        if etype == ev.etype && !self.table {
            return Some(ev.line.clone());
        }
        let obj = ev.obj.clone();
        Some(self.line(etype.as_str(), &obj))
    }

    fn bookmark(&self) -> Bytes {
        let b = json!({"kind": self.def.kind, "apiVersion": self.def.api_version(),
                       "metadata": {"resourceVersion": self.last_rv.to_string()}});
        serialize_event("BOOKMARK", &b)
    }

    /// The next line to send; None ends the stream.
    pub async fn next(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        if let Some(obj) = self.initial.pop_front() {
            return Some(self.line("ADDED", &obj));
        }
        while let Some(ev) = self.backlog.pop_front() {
            if let Some(b) = self.render(&ev) {
                return Some(b);
            }
        }
        let mut next_bookmark = Instant::now() + self.bookmark_interval;
        loop {
            let deadline = self.deadline;
            let until_deadline = async move {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ev = self.rx.recv() => match ev {
                    Ok(ev) => {
                        if let Some(b) = self.render(&ev) {
                            return Some(b);
                        }
                    }
                    // Too slow to keep up: end the stream; the client re-watches from its last
                    // RV and catches up from the window (or re-lists on 410).
                    Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => {
                        self.done = true;
                        return None;
                    }
                },
                _ = until_deadline => {
                    self.done = true;
                    return self.bookmarks.then(|| self.bookmark());
                }
                _ = tokio::time::sleep_until(next_bookmark) => {
                    if self.bookmarks {
                        return Some(self.bookmark());
                    }
                    next_bookmark = Instant::now() + self.bookmark_interval;
                }
            }
        }
    }
}

pub fn serialize_event(etype: &str, obj: &Value) -> Bytes {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(b"{\"type\":\"");
    buf.extend_from_slice(etype.as_bytes());
    buf.extend_from_slice(b"\",\"object\":");
    // Writing a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut buf, obj);
    buf.extend_from_slice(b"}\n");
    Bytes::from(buf)
}

/// A stream that sends one ERROR event and ends (410 Expired, 504 too-new RV).
pub fn error_line(status: &Value) -> Bytes {
    serialize_event("ERROR", status)
}
