//! Hazard events in, MQTT messages out.
//!
//! In: hazard events from `sharpeyes-analytics` and sensor alarms. Out: `sharpeyes.alert/1`
//! JSON on `{prefix}/alerts/{county}/{town}/{village}/{grid}/{hazard}` (QoS 1), retained node
//! and camera status, escalations to the parent centre, acknowledgements in.
//!
//! An alert is written to a durable outbox (Redis Stream, or a disk spool) before it is
//! published and removed only after the broker's PUBACK: a dead broker or process loses none.
//!
//! The pieces: [`Alert`] (the message and its topic), [`render`] (the snapshot),
//! [`StateStore`] (cooldowns, outbox, escalation timers, acknowledgements, snapshots; Redis or
//! memory), and [`Alerts`], the running service that ties them to the MQTT link.

#![forbid(clippy::print_stdout, clippy::print_stderr)]

mod alert;
mod broker;
mod mqtt;
mod recent;
mod service;
mod snapshot;
mod store;

pub use alert::{
    ABSENT_LEVEL, Alert, AlertBox, AlertCamera, AlertError, AlertGrid, FrameSize, GridStep,
    JSON_SCHEMA, SCHEMA, SnapshotRef, Source, is_alert_id,
};
pub use broker::EmbeddedBroker;
pub use mqtt::{InboundMessage, MqttSettings};
pub use recent::{AlertFilter, FeedEvent, RecentAlert};
pub use service::{
    AlertSettings, AlertStats, Alerts, AlertsError, CameraPhase, Submitted, open_store,
};
pub use snapshot::{Snapshot, SnapshotError, render};
pub use store::{Ack, MemoryStore, OutboxRecord, RedisStore, StateStore, StoreError, StoreFuture};
