//! Hazard events in, MQTT messages out.
//!
//! In: hazard events from `sharpeyes-analytics` and sensor alarms. Out: `sharpeyes.alert/1`
//! JSON on `{prefix}/alerts/{county}/{town}/{village}/{grid}/{hazard}` (QoS 1), retained node
//! and camera status, escalations to the parent centre, acknowledgements in.
//!
//! An alert is written to a durable outbox (Redis Stream, or a disk spool) before it is
//! published and removed only after the broker's PUBACK: a dead broker or process loses none.
//!
//! Status: not built yet (issue: Alerts). This crate only fixes its place in the data flow.

#![forbid(clippy::print_stdout, clippy::print_stderr)]
