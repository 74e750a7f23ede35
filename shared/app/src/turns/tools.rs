//! The server tools of one model reply, run concurrently (at most
//! `LAMBENT_TOOL_CONCURRENCY` at once), each answer handed back as soon as
//! it comes so it is stored (and shown) before the others end.

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use lambent_llm::{LlmClient, ToolAnswer, ToolCall, ToolInvocation};

use crate::chat::Stop;
use crate::targets::ServerTool;

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
    session_id: Option<&'a str>,
    run_id: Option<&'a str>,
    waiting: std::vec::IntoIter<ToRun>,
    under_way: FuturesUnordered<BoxFuture<'a, (ToolCall, ToolAnswer)>>,
    /// The calls started and not answered yet.
    started: Vec<ToolCall>,
}

impl<'a> ToolRuns<'a> {
    /// Starts `calls`, `concurrency` at a time.
    pub fn start(
        llm: &'a LlmClient,
        session_id: Option<&'a str>,
        run_id: Option<&'a str>,
        calls: Vec<ToRun>,
        concurrency: usize,
    ) -> ToolRuns<'a> {
        let mut runs = ToolRuns {
            llm,
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
        let (llm, session_id, run_id) = (self.llm, self.session_id, self.run_id);
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
