//! What is specific to AWS ECS about the sidecar, apart from moving bytes.
//!
//! Two halves, for the two moments of a task's life:
//!
//! - **At run time** ([`metadata`]): on ECS the sidecar learns who it is from
//!   the task metadata endpoint v4 (task ARN, cluster, availability zone,
//!   addresses) and derives the name istiod gives its WorkloadEntry
//!   (`ecs-task-<account>-<region>-<cluster>-<task id>`), its locality and its
//!   workload identity, so that `BOOTSTRAP_TOKEN` is the only variable a task
//!   definition has to set.
//! - **At enrolment** ([`mod@inject`]): `ztunnel-sidecar inject` turns an ECS task
//!   definition into a mesh-enabled one, a drop-in for what
//!   `istioctl ecs add-service` writes, plus the proxy variables and optional
//!   transparent capture this sidecar supports. [`diff`] shows the change for
//!   `--dry-run`.
//!
//! What it is not: it does not proxy traffic, talk to istiod, or call AWS APIs
//! (registering the task definition and tagging the service stay with the
//! operator's `aws` CLI). The metadata client only speaks plain HTTP to the
//! link-local endpoint. [`inject()`] is pure: text in, text out.
//!
//! Users: the sidecar binary (configuration at start-up on ECS, and the
//! `inject` subcommand) and the local test harness.
//!
//! ```
//! use zs_ecs::{inject, InjectOptions};
//!
//! let task_definition = r#"{
//!   "family": "echo-service",
//!   "taskRoleArn": "arn:aws:iam::111122223333:role/echo-task",
//!   "networkMode": "awsvpc",
//!   "containerDefinitions": [{"name": "echo", "image": "ealen/echo-server"}]
//! }"#;
//! let options = InjectOptions {
//!     bootstrap_token: Some("eyJ1cmwiOi4uLn0=".into()),
//!     ..InjectOptions::default()
//! };
//! let output = inject(task_definition, &options)?;
//! assert!(output.json.contains(r#""name": "ztunnel""#));
//! # Ok::<(), zs_ecs::InjectError>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod diff;
pub mod inject;
mod json;
pub mod metadata;

pub use diff::diff;
pub use inject::{
    Auth, Capture, InjectError, InjectOptions, InjectOutput, ParseOptionError, ProxyEnv, inject,
};
pub use metadata::{
    FetchOptions, MetadataError, TaskMetadata, WorkloadInfo, fetch_task_metadata,
    fetch_task_metadata_with, parse_task_metadata, workload_info,
};
