//! What becomes of each tool call of a model reply ([`decide`]: the one
//! policy of an agent turn's loop and a workflow step's), and the server
//! tools among them, run concurrently (at most `LAMBENT_TOOL_CONCURRENCY`
//! at once), each answer handed back as soon as it comes so it is stored
//! (and shown) before the others end.

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use lambent_llm::{LlmClient, ToolAnswer, ToolCall, ToolInvocation};

use std::collections::HashMap;

use lambent_store::turns::{Approval, Needs};

use crate::chat::Stop;
use crate::metrics::Metrics;
use crate::targets::ServerTool;

/// What becomes of one tool call.
pub enum Decision {
    /// A server tool Lambent runs now.
    Run(ToRun),
    /// Answered without running: a person denied it, or it names no server
    /// tool where only server tools are offered.
    Answered(ToolCall, ToolAnswer),
    /// It waits: for a person's approval, or for the client's result.
    Waits(ToolCall, Needs),
}

/// Who answers a call that names no server tool of the agent.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum OtherCalls {
    /// The client (an agent turn: it offers the client's tools too).
    Client,
    /// Nobody (a workflow step offers only server tools): an error result.
    Nobody,
}

/// What becomes of `call`, with `tools` the agent's server tools and
/// `approval` a person's decision on it, if any.
pub fn decide(
    call: ToolCall,
    tools: &HashMap<String, ServerTool>,
    approval: Option<&Approval>,
    others: OtherCalls,
) -> Decision {
    let refused = |call: ToolCall, content: String| {
        Decision::Answered(
            call,
            ToolAnswer {
                content,
                is_error: true,
            },
        )
    };
    match tools.get(&call.name) {
        Some(tool) if !tool.requires_approval || approval.is_some_and(|a| a.approved) => {
            let tool = tool.clone();
            Decision::Run(ToRun { call, tool })
        }
        Some(_) => match approval {
            Some(denial) => {
                let content = match &denial.reason {
                    Some(reason) => format!("denied by a person: {reason}"),
                    None => "denied by a person".to_owned(),
                };
                refused(call, content)
            }
            None => Decision::Waits(call, Needs::Approval),
        },
        None => match others {
            OtherCalls::Client => Decision::Waits(call, Needs::Result),
            OtherCalls::Nobody => {
                let content = format!("{} is not a server tool of this agent", call.name);
                refused(call, content)
            }
        },
    }
}

/// One call to run, with its tool.
pub struct ToRun {
    pub call: ToolCall,
    pub tool: ServerTool,
}

/// What [`ToolRuns::next`] gives.
pub enum Next {
    Answer(ToolCall, ToolAnswer),
    /// Stopped: the calls under way were dropped (their requests closed);
    /// these are unanswered.
    Stopped(Vec<ToolCall>),
    /// Every call is answered.
    Done,
}

/// Calls under way.
pub struct ToolRuns<'a> {
    llm: &'a LlmClient,
    /// Where each answer is counted, by outcome.
    metrics: &'a Metrics,
    session_id: Option<&'a str>,
    run_id: Option<&'a str>,
    waiting: std::vec::IntoIter<ToRun>,
    under_way: FuturesUnordered<BoxFuture<'a, (ToolCall, ToolAnswer)>>,
    /// The calls started and not answered yet.
    started: Vec<ToolCall>,
}

impl<'a> ToolRuns<'a> {
    /// Starts `calls`, `concurrency` at a time; each answer is counted in
    /// `metrics`.
    pub fn start(
        llm: &'a LlmClient,
        metrics: &'a Metrics,
        session_id: Option<&'a str>,
        run_id: Option<&'a str>,
        calls: Vec<ToRun>,
        concurrency: usize,
    ) -> ToolRuns<'a> {
        let mut runs = ToolRuns {
            llm,
            metrics,
            session_id,
            run_id,
            waiting: calls.into_iter(),
            under_way: FuturesUnordered::new(),
            started: Vec::new(),
        };
        for _ in 0..concurrency.max(1) {
            runs.start_next();
        }
        runs
    }

    fn start_next(&mut self) {
        let Some(job) = self.waiting.next() else {
            return;
        };
        self.started.push(job.call.clone());
        let (llm, metrics) = (self.llm, self.metrics);
        let (session_id, run_id) = (self.session_id, self.run_id);
        self.under_way.push(Box::pin(async move {
            let answer = llm
                .call_tool(
                    &job.tool.http,
                    ToolInvocation {
                        tool_call_id: &job.call.id,
                        name: &job.call.name,
                        input: &job.call.input,
                        session_id,
                        run_id,
                    },
                )
                .await;
            metrics.tool_call(!answer.is_error);
            (job.call, answer)
        }));
    }

    /// The next answer, unless `stop` is set first.
    pub async fn next(&mut self, stop: &mut Stop) -> Next {
        if *stop.borrow() {
            return self.stopped();
        }
        let stopped = async {
            if stop.wait_for(|s| *s).await.is_err() {
                // Nobody can stop it any more.
                std::future::pending::<()>().await;
            }
        };
        let next = tokio::select! {
            biased;
            _ = stopped => return self.stopped(),
            next = self.under_way.next() => next,
        };
        match next {
            Some((call, answer)) => {
                self.started.retain(|c| c.id != call.id);
                self.start_next();
                Next::Answer(call, answer)
            }
            None => Next::Done,
        }
    }

    fn stopped(&mut self) -> Next {
        self.under_way.clear();
        let mut unanswered = std::mem::take(&mut self.started);
        unanswered.extend(self.waiting.by_ref().map(|job| job.call));
        Next::Stopped(unanswered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambent_llm::HttpTool;
    use std::time::Duration;

    fn tools() -> HashMap<String, ServerTool> {
        let tool = |requires_approval| ServerTool {
            http: HttpTool {
                url: "https://tools.example/x".into(),
                headers: Vec::new(),
                timeout: Duration::from_secs(1),
            },
            requires_approval,
        };
        HashMap::from([
            ("weather".to_owned(), tool(false)),
            ("deploy".to_owned(), tool(true)),
        ])
    }

    fn call(name: &str) -> ToolCall {
        ToolCall {
            id: format!("toolu_{name}"),
            name: name.to_owned(),
            input: serde_json::json!({}),
        }
    }

    fn approval(approved: bool, reason: Option<&str>) -> Approval {
        Approval {
            tool_call_id: "toolu_deploy".into(),
            approved,
            reason: reason.map(str::to_owned),
        }
    }

    /// The outcome as (what, detail), to compare.
    fn outcome(decision: Decision) -> (&'static str, String) {
        match decision {
            Decision::Run(job) => ("run", job.call.name),
            Decision::Answered(_, answer) => {
                assert!(answer.is_error);
                ("answered", answer.content)
            }
            Decision::Waits(_, Needs::Approval) => ("waits", "approval".into()),
            Decision::Waits(_, Needs::Result) => ("waits", "result".into()),
        }
    }

    #[test]
    fn each_call_runs_waits_or_is_answered_by_one_policy() {
        let tools = tools();
        let decide = |name: &str, approval: Option<&Approval>, others| {
            outcome(decide(call(name), &tools, approval, others))
        };
        let client = OtherCalls::Client;
        assert_eq!(decide("weather", None, client), ("run", "weather".into()));
        assert_eq!(decide("deploy", None, client), ("waits", "approval".into()));
        let yes = approval(true, None);
        assert_eq!(
            decide("deploy", Some(&yes), client),
            ("run", "deploy".into())
        );
        let no = approval(false, Some("not on a Friday"));
        assert_eq!(
            decide("deploy", Some(&no), client),
            ("answered", "denied by a person: not on a Friday".into())
        );
        let silent_no = approval(false, None);
        assert_eq!(
            decide("deploy", Some(&silent_no), client),
            ("answered", "denied by a person".into())
        );
        // A call that names no server tool: the client's in a turn, an
        // error where only server tools are offered (a workflow step).
        assert_eq!(decide("ask_user", None, client), ("waits", "result".into()));
        assert_eq!(
            decide("ask_user", None, OtherCalls::Nobody),
            (
                "answered",
                "ask_user is not a server tool of this agent".into()
            )
        );
    }
}
