//! Hazard events in, MQTT messages out.
//!
//! In: hazard events from `sharpeyes-analytics` and sensor alarms. Out: `sharpeyes.alert/1`
//! JSON on `{prefix}/alerts/{county}/{town}/{village}/{grid}/{hazard}` (QoS 1), retained node
//! and camera status, escalations to the parent centre, acknowledgements in.
//!
//! An alert is written to a durable outbox (Redis Stream, or a disk spool) before it is
//! published and removed only after the broker's PUBACK: a dead broker or process loses none.
//!
//! The pieces: [`Alert`] (the message and its topic; its parts in [`message`]), [`render`]
//! (the snapshot), [`StateStore`] (cooldowns, outbox, escalation timers, acknowledgements,
//! snapshots; Redis or memory), and [`Alerts`], the running service that ties them to the
//! MQTT link. What fails is an [`Error`] of some [`ErrorKind`].

#![forbid(clippy::print_stdout, clippy::print_stderr)]

mod alert;
mod broker;
mod error;
mod health;
mod mqtt;
mod mute;
mod recent;
mod service;
mod snapshot;
mod stats;
mod store;
mod view;

pub use alert::{Alert, FrameSize, JSON_SCHEMA, SCHEMA, Source, is_alert_id};
pub use broker::EmbeddedBroker;
pub use error::{Error, ErrorKind};
pub use health::{HEALTH_JSON_SCHEMA, HEALTH_SCHEMA, HealthMeasures, HealthNotice};
pub use mqtt::{Identity, InboundMessage, MqttSettings, read_identity};
pub use mute::{MAX_MUTES_PER_CAMERA, MuteRefused, Muted};
pub use recent::{AlertFilter, FeedEvent, RecentAlert};
/// A Redis connection that reconnects by itself: see [`RedisStore::connection`].
pub use redis::aio::ConnectionManager as RedisConnection;
pub use service::{AckRequest, AlertSettings, AlertStats, Alerts, CameraPhase, Submitted};
pub use snapshot::{Snapshot, render};
pub use store::{
    Ack, AckOutcome, FallbackStore, JudgedAlert, MAX_NOTE, MemoryStore, Mute, RedisStore,
    StateStore, Verdict, open_store,
};

/// The parts of a `sharpeyes.alert/1` message, and what the state stores keep.
pub mod message {
    pub use crate::alert::{ABSENT_LEVEL, AlertBox, AlertCamera, AlertGrid, GridStep, SnapshotRef};
    pub use crate::store::{OutboxRecord, StoreFuture};
}
