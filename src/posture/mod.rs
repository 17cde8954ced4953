//! The sans-IO core: the control catalogue, the observed model, `evaluate`, `plan`, and the
//! results that status, events, metrics and reports are made from. No tokio, no kube client, no
//! AWS SDK: everything here is a pure function of its inputs and tested exhaustively.

pub mod catalogue;
pub mod drift;
pub mod effective;
pub mod evaluate;
pub mod exposure;
pub mod failure;
pub mod indb;
pub mod managed;
pub mod model;
pub mod modify;
pub mod plan;
pub mod policy_report;
pub mod report;
pub mod select;
pub mod simulate;
pub mod testing;
pub mod values;

pub use evaluate::{EvalContext, Evaluation, Fix, evaluate};
pub use model::{Database, Fleet};
pub use plan::{Plan, PlanContext, plan};

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
