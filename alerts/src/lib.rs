//! Hazard events in, MQTT messages out.
//!
//! In: hazard events from `sharpeyes-analytics` and sensor alarms. Out: `sharpeyes.alert/1`
//! JSON on `{prefix}/alerts/{county}/{town}/{village}/{grid}/{hazard}` (QoS 1), retained node
//! and camera status, escalations to the parent centre, acknowledgements in.
//!
//! An alert is written to a durable outbox (Redis Stream, or a disk spool) before it is
//! published and removed only after the broker's PUBACK: a dead broker or process loses none.
//!
//! Status: the alert message, its topic and snapshots are built; publishing, the outbox,
//! escalation timers and acknowledgements are not yet (issue: Alerts).

#![forbid(clippy::print_stdout, clippy::print_stderr)]

mod alert;
mod snapshot;

pub use alert::{
    ABSENT_LEVEL, Alert, AlertBox, AlertCamera, AlertError, AlertGrid, FrameSize, GridStep,
    JSON_SCHEMA, SCHEMA, SnapshotRef, Source,
};
pub use snapshot::{Snapshot, SnapshotError, render};
