//! Pure decisions for applications across the fleet: which resources a
//! policy selects, where replicas go (scheduling, division, failover), what
//! each member receives (overrides, dependencies), whether a policy is valid,
//! how a Work is applied in a member and how member status is aggregated. No
//! I/O: the hub and the agent observe, then ask here what to do.

pub mod affinity;
pub mod aggregate;
pub mod app_failover;
pub mod applied_overrides;
pub mod apply;
pub mod apply_latency;
pub mod autoscaling;
pub mod binding;
pub mod binding_events;
pub mod binding_status;
pub mod claim;
pub mod cron_hpa;
pub mod dependency_policy;
pub mod dependent_overrides;
pub mod deschedule;
pub mod estimator;
pub mod failover;
pub mod field_overrides;
pub mod fleet_health;
pub mod health;
pub mod interpreter;
mod json_patch_op;
pub mod kind_discovery;
pub mod member_events;
pub mod member_hpa;
pub mod member_namespaces;
pub mod metric_gate;
pub mod migration;
pub mod overrides;
pub mod placed_outcome;
pub mod pvc_protection;
pub mod rebalance;
pub mod resolution;
pub mod revision;
pub mod rollout;
pub mod rollout_status;
pub mod scheduler;
pub mod selection;
pub mod suspension;
pub mod validation;
pub mod work_content;
pub mod work_removal;
pub mod workload;
pub mod workload_affinity;
