#![forbid(unsafe_code)]
//! pgbaseline: PostgreSQL security baselines for Amazon RDS and Aurora, enforced from Kubernetes.

pub mod api;
pub mod aws;
pub mod check;
pub mod cli;
pub mod controller;
pub mod engine;
pub mod manifest;
pub mod postgres;
pub mod posture;
