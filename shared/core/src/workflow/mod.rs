//! Workflows: a DAG of steps, each a model call by one of the owner's agents
//! with a prompt built from the run's input and its dependencies' outputs.
//!
//! - [`definition`]: what a workflow is, and every check made when it is
//!   created (IDs, dependencies, cycles, placeholders, limits);
//! - [`template`]: the prompt placeholders.
//!
//! Runs and steps are stored by [`lambent_store::runs`]; the worker
//! (`functions/worker`) runs the steps.

pub mod definition;
pub mod template;

pub use definition::{Definition, StepSpec};

/// Most steps a workflow may have: a run starts in one transaction of its
/// steps and three more records (DynamoDB allows 100 operations).
pub const MAX_STEPS: usize = 40;
/// Longest prompt template of a step, in bytes.
pub const MAX_PROMPT_BYTES: usize = 16 * 1024;
/// Longest prompt once the run's input is filled in, in bytes.
pub const MAX_PROMPT_WITH_INPUT_BYTES: usize = 32 * 1024;
/// Largest run input (its JSON text), in bytes.
pub const MAX_INPUT_BYTES: usize = 32 * 1024;
/// Longest stored output of a step: the rest is cut (and marked). A step's
/// record holds its own output and the outputs its prompt uses, so these
/// limits keep it under DynamoDB's 400 KB per item.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;
/// Most other steps' outputs one prompt may use.
pub const MAX_OUTPUTS_USED: usize = 4;
