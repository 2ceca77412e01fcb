//! Pure decisions for applications across the fleet: which resources a
//! policy selects, where replicas go (scheduling, division, failover), what
//! each member receives (overrides, dependencies), whether a policy is valid,
//! how a Work is applied in a member and how member status is aggregated. No
//! I/O: the hub and the agent observe, then ask here what to do.

pub mod affinity;
pub mod aggregate;
pub mod applied_overrides;
pub mod apply;
pub mod apply_latency;
pub mod autoscaling;
pub mod binding;
pub mod binding_events;
pub mod binding_status;
pub mod cron_hpa;
pub mod deschedule;
pub mod estimator;
pub mod failover;
pub mod fleet_health;
pub mod health;
pub mod interpreter;
pub mod member_events;
pub mod member_hpa;
pub mod metric_gate;
pub mod migration;
pub mod overrides;
pub mod rebalance;
pub mod resolution;
pub mod revision;
pub mod rollout;
pub mod rollout_status;
pub mod scheduler;
pub mod selection;
pub mod suspension;
pub mod validation;
pub mod workload;
pub mod workload_affinity;
