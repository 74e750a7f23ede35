//! A workflow's definition and the checks it passes before it is stored.
//! Everything that can be known without running is checked here, so a run
//! never fails halfway on something a create could have refused.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::template::{self, Template};
use super::{MAX_OUTPUTS_USED, MAX_PROMPT_BYTES, MAX_STEPS};
use crate::error::{Error, Result};
use crate::validate;

const NAME_MAX: usize = 200;

/// One step as a client defines it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Unique within the workflow: letters, digits, `_` and `-`.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub id: String,
    /// One of your agents (`agt_...`).
    #[schema(pattern = "^agt_[0-9a-z]{1,64}$")]
    pub agent_id: String,
    /// The prompt; `{{input.<name>}}` takes a field of the run's input and
    /// `{{steps.<id>.output}}` the output of a step listed in `depends_on`.
    #[schema(min_length = 1, max_length = 16384)]
    pub prompt: String,
    /// Steps that must succeed before this one starts.
    #[serde(default)]
    pub depends_on: Vec<String>,
}

/// A validated workflow: its name and its steps, in an order where every
/// step comes after its dependencies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    pub name: String,
    pub steps: Vec<StepSpec>,
}

fn bad(message: String) -> Error {
    Error::BadRequest(message)
}

impl Definition {
    /// Checks everything but the agents' existence (see [`Definition::agent_ids`]).
    pub fn validate(name: &str, steps: Vec<StepSpec>) -> Result<Definition> {
        let name = validate::name("name", name, NAME_MAX)?;
        if steps.is_empty() || steps.len() > MAX_STEPS {
            return Err(bad(format!("steps: a workflow has 1 to {MAX_STEPS} steps")));
        }
        let mut ids = BTreeSet::new();
        for (i, step) in steps.iter().enumerate() {
            if !template::is_identifier(&step.id) {
                return Err(bad(format!(
                    "steps[{i}].id: must be 1 to 64 letters, digits, _ or -"
                )));
            }
            if !ids.insert(step.id.as_str()) {
                return Err(bad(format!(
                    "steps[{i}].id: {:?} is used by more than one step",
                    step.id
                )));
            }
        }
        for (i, step) in steps.iter().enumerate() {
            check_step(i, step, &ids)?;
        }
        let order = topological_order(&steps)?;
        let mut by_id: BTreeMap<String, StepSpec> =
            steps.into_iter().map(|s| (s.id.clone(), s)).collect();
        let steps = order
            .iter()
            .filter_map(|id| by_id.remove(id.as_str()))
            .collect();
        Ok(Definition { name, steps })
    }

    /// The distinct agents the steps use.
    pub fn agent_ids(&self) -> BTreeSet<&str> {
        self.steps.iter().map(|s| s.agent_id.as_str()).collect()
    }

    /// For each step, the steps that depend on it.
    pub fn successors(&self) -> BTreeMap<&str, Vec<&str>> {
        let mut next: BTreeMap<&str, Vec<&str>> = self
            .steps
            .iter()
            .map(|s| (s.id.as_str(), Vec::new()))
            .collect();
        for step in &self.steps {
            for dep in &step.depends_on {
                if let Some(list) = next.get_mut(dep.as_str()) {
                    list.push(step.id.as_str());
                }
            }
        }
        next
    }
}

fn check_step(i: usize, step: &StepSpec, ids: &BTreeSet<&str>) -> Result<()> {
    let field = |f: &str| format!("steps[{i}].{f}");
    if !crate::ids::is_id(
        &step.agent_id,
        <crate::ids::AgentId as crate::ids::TypedId>::PREFIX,
    ) {
        return Err(bad(format!(
            "{}: not an agent ID (`agt_...`)",
            field("agent_id")
        )));
    }
    if step.prompt.trim().is_empty() {
        return Err(bad(format!("{}: must not be empty", field("prompt"))));
    }
    if step.prompt.len() > MAX_PROMPT_BYTES {
        return Err(bad(format!(
            "{}: must be at most {MAX_PROMPT_BYTES} bytes",
            field("prompt")
        )));
    }
    let mut deps = BTreeSet::new();
    for dep in &step.depends_on {
        if dep == &step.id {
            return Err(bad(format!(
                "{}: step {} cannot depend on itself",
                field("depends_on"),
                step.id
            )));
        }
        if !ids.contains(dep.as_str()) {
            return Err(bad(format!(
                "{}: there is no step {dep:?}",
                field("depends_on")
            )));
        }
        if !deps.insert(dep.as_str()) {
            return Err(bad(format!(
                "{}: {dep:?} is listed twice",
                field("depends_on")
            )));
        }
    }
    let template =
        Template::parse(&step.prompt).map_err(|e| bad(format!("{}: {e}", field("prompt"))))?;
    let used: BTreeSet<&str> = template.step_refs().collect();
    for reference in &used {
        if !deps.contains(reference) {
            let why = if ids.contains(reference) {
                format!("add {reference:?} to depends_on to use its output")
            } else {
                "there is no such step".to_owned()
            };
            return Err(bad(format!(
                "{}: {{{{steps.{reference}.output}}}} cannot be resolved: {why}",
                field("prompt")
            )));
        }
    }
    if used.len() > MAX_OUTPUTS_USED {
        return Err(bad(format!(
            "{}: uses {} steps' outputs; at most {MAX_OUTPUTS_USED} are allowed",
            field("prompt"),
            used.len()
        )));
    }
    Ok(())
}

/// The step IDs with every step after its dependencies (definition order
/// kept where free), or a 400 naming a cycle.
fn topological_order(steps: &[StepSpec]) -> Result<Vec<String>> {
    let mut remaining: BTreeMap<&str, usize> = steps
        .iter()
        .map(|s| (s.id.as_str(), s.depends_on.len()))
        .collect();
    let mut order = Vec::with_capacity(steps.len());
    while order.len() < steps.len() {
        let ready: Vec<&str> = steps
            .iter()
            .map(|s| s.id.as_str())
            .filter(|id| remaining.get(id) == Some(&0))
            .collect();
        if ready.is_empty() {
            return Err(bad(format!(
                "steps: the dependencies form a cycle: {}",
                cycle(steps, &remaining).join(" -> ")
            )));
        }
        for id in ready {
            remaining.remove(id);
            order.push(id.to_owned());
            for step in steps {
                if step.depends_on.iter().any(|d| d == id) {
                    if let Some(n) = remaining.get_mut(step.id.as_str()) {
                        *n -= 1;
                    }
                }
            }
        }
    }
    Ok(order)
}

/// One cycle among the steps left unordered, as a path back to its start.
fn cycle<'a>(steps: &'a [StepSpec], left: &BTreeMap<&str, usize>) -> Vec<&'a str> {
    let deps = |id: &str| {
        steps
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.depends_on.as_slice())
            .unwrap_or_default()
    };
    // Every unordered step has an unordered dependency, so walking them
    // must come back to a step already seen.
    let Some(start) = steps.iter().find(|s| left.contains_key(s.id.as_str())) else {
        return Vec::new();
    };
    let mut path: Vec<&str> = vec![start.id.as_str()];
    loop {
        let Some(current) = path.last().copied() else {
            return path;
        };
        let Some(next) = deps(current).iter().find(|d| left.contains_key(d.as_str())) else {
            return path;
        };
        if let Some(at) = path.iter().position(|p| *p == next.as_str()) {
            let mut cycle: Vec<&str> = path[at..].to_vec();
            cycle.push(next.as_str());
            cycle.reverse();
            return cycle;
        }
        path.push(next.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(id: &str, prompt: &str, deps: &[&str]) -> StepSpec {
        StepSpec {
            id: id.into(),
            agent_id: "agt_abc".into(),
            prompt: prompt.into(),
            depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
        }
    }

    fn message(result: Result<Definition>) -> String {
        match result {
            Err(Error::BadRequest(m)) => m,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn orders_steps_after_their_dependencies() {
        let d = Definition::validate(
            "w",
            vec![
                step("c", "{{steps.a.output}} {{steps.b.output}}", &["a", "b"]),
                step("b", "{{steps.a.output}}", &["a"]),
                step("a", "{{input.x}}", &[]),
            ],
        )
        .unwrap();
        let order: Vec<&str> = d.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(order, ["a", "b", "c"]);
        assert_eq!(d.successors()["a"], ["b", "c"]);
        assert!(d.successors()["c"].is_empty());
    }

    #[test]
    fn names_a_cycle() {
        let m = message(Definition::validate(
            "w",
            vec![
                step("a", "x", &["c"]),
                step("b", "x", &["a"]),
                step("c", "x", &["b"]),
                step("d", "x", &[]),
            ],
        ));
        assert!(m.contains("cycle"), "{m}");
        assert!(
            m.contains("a -> b -> c -> a")
                || m.contains("b -> c -> a -> b")
                || m.contains("c -> a -> b -> c"),
            "{m}"
        );
    }

    #[test]
    fn refuses_each_kind_of_mistake_naming_it() {
        let cases: Vec<(Vec<StepSpec>, &str)> = vec![
            (vec![], "1 to 40 steps"),
            (
                vec![step("a", "x", &[]), step("a", "y", &[])],
                "more than one step",
            ),
            (vec![step("a b", "x", &[])], "steps[0].id"),
            (vec![step("a", "x", &["zz"])], "no step \"zz\""),
            (vec![step("a", "x", &["a"])], "itself"),
            (
                vec![step("a", "x", &[]), step("b", "x", &["a", "a"])],
                "twice",
            ),
            (
                vec![step("a", "  ", &[])],
                "steps[0].prompt: must not be empty",
            ),
            (vec![step("a", "{{nope}}", &[])], "not a placeholder"),
            (
                vec![step("a", "x", &[]), step("b", "{{steps.a.output}}", &[])],
                "add \"a\" to depends_on",
            ),
            (vec![step("a", "{{steps.q.output}}", &[])], "no such step"),
        ];
        for (steps, expected) in cases {
            let m = message(Definition::validate("w", steps));
            assert!(m.contains(expected), "{m:?} lacks {expected:?}");
        }
        let mut bad_agent = step("a", "x", &[]);
        bad_agent.agent_id = "usr_1".into();
        assert!(message(Definition::validate("w", vec![bad_agent])).contains("agent_id"));
        assert!(message(Definition::validate(" ", vec![step("a", "x", &[])])).contains("name"));
    }

    #[test]
    fn limits_outputs_used_per_prompt() {
        let mut steps: Vec<StepSpec> = (0..5).map(|i| step(&format!("s{i}"), "x", &[])).collect();
        let deps: Vec<&str> = vec!["s0", "s1", "s2", "s3", "s4"];
        let prompt: String = deps
            .iter()
            .map(|d| format!("{{{{steps.{d}.output}}}}"))
            .collect();
        steps.push(step("last", &prompt, &deps));
        assert!(message(Definition::validate("w", steps)).contains("at most 4"));
    }
}
