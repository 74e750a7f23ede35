//! The agent loop: model call, server tools, model call… until the turn
//! ends or waits. One runner per turn; it reports everything as events
//! ([`EventLog`]) and stores everything as messages (the journal).

use std::collections::HashSet;

use rust_decimal::Decimal;
use serde_json::json;
use tokio::time::Instant;

use super::log::EventLog;
use super::tools::{decide, Decision, Next, OtherCalls, ToRun, ToolRuns};
use super::{APPROVAL_REQUIRED, BUDGET_EXCEEDED, MAX_TOOL_ROUNDS, TOOL_USE};
use crate::chat::{self, Cut, Piece, Prepared, ReplyReader, Started, Stop, Target, UserInput};
use crate::state::State;
use lambent_core::error::Error;
use lambent_llm::{LlmClient, ToolAnswer, ToolCall, ToolResult, Turn, Usage};
use lambent_ports::StoreError;
use lambent_store::messages::{self, MessageRole, MessageStatus};
use lambent_store::sessions::{self, TokenCounts};
use lambent_store::turns::{self, Approval, Ending, Needs, Pending, TurnStatus};

/// The turn a runner runs.
#[derive(Debug, Clone)]
pub struct TurnRef {
    pub owner: String,
    pub session_id: String,
    pub turn_id: String,
    /// The first message of its input: its journal starts there.
    pub first_message_id: String,
    /// Decisions on the calls its predecessor waited for.
    pub approvals: Vec<Approval>,
    /// The reply whose calls it answers (it goes on from a waiting turn).
    pub answers: Option<String>,
    pub expires_at: i64,
    /// What its error events name as their request: the request that runs
    /// it, or the turn.
    pub request_id: String,
}

impl TurnRef {
    /// A stored turn, run outside any request (the worker).
    pub fn of(turn: &turns::Turn) -> TurnRef {
        TurnRef {
            owner: turn.owner.clone(),
            session_id: turn.session_id.clone(),
            turn_id: turn.id.clone(),
            first_message_id: turn.first_message_id.clone(),
            approvals: turn.approvals.clone(),
            answers: turn.answers.clone(),
            expires_at: turn.expires_at,
            request_id: turn.id.clone(),
        }
    }
}

/// What the turn has used so far.
#[derive(Debug, Default, Clone)]
struct Totals {
    model_calls: u64,
    usage: Usage,
    cost_usd: Decimal,
    tool_rounds: u32,
}

impl Totals {
    fn add(&mut self, usage: &Usage, cost_usd: Decimal) {
        self.model_calls += 1;
        let u = &mut self.usage;
        u.input_tokens += usage.input_tokens;
        u.output_tokens += usage.output_tokens;
        u.cache_read_tokens += usage.cache_read_tokens;
        u.cache_write_tokens += usage.cache_write_tokens;
        u.cache_write_1h_tokens += usage.cache_write_1h_tokens;
        self.cost_usd += cost_usd;
    }
}

/// The turn's newest reply and which of its tool calls are answered.
#[derive(Debug, Default)]
struct Tail {
    reply: Option<LastReply>,
    answered: HashSet<String>,
    /// The results this runner got, in the order they came.
    results: Vec<ToolResult>,
    /// Those not stored yet: they are written beside the next model call
    /// (before its reply is stored), or before the turn ends or waits.
    unstored: Vec<Unstored>,
}

/// A tool's result on its way to the store.
#[derive(Debug)]
struct Unstored {
    /// The tool's name, for its event.
    name: String,
    result: ToolResult,
    /// Taken when the result came, so it sorts before the next reply.
    message_id: String,
}

#[derive(Debug)]
struct LastReply {
    message_id: String,
    /// Its text as stored.
    text: String,
    tool_calls: Vec<ToolCall>,
    stop_reason: Option<String>,
    status: MessageStatus,
}

/// Runs one turn.
pub struct Runner {
    state: State,
    llm: LlmClient,
    turn: TurnRef,
    log: EventLog,
    stop: Stop,
    /// No model call or tool starts after it (the request's function
    /// timeout); a model reply still under way is cut there.
    deadline: Instant,
    totals: Totals,
    /// Whether the turn has stored a reply (its first takes the turn's ID).
    replied: bool,
    /// The last model call this runner made: the next goes on from its
    /// conversation instead of reading the history again.
    last_call: Option<Prepared>,
    /// At the deadline, between two model calls, the turn is given back
    /// (to be taken up again) instead of ended: a worker's invocation ends,
    /// the turn does not.
    hand_back_at_deadline: bool,
    /// Where the last reply this runner stored goes, as stored, for a
    /// caller that answers with it.
    last_reply: Option<LastStored>,
}

/// The item of the last reply a turn's runner stored (`None` until one
/// is, or when its settle was finished elsewhere).
pub type LastStored = std::sync::Arc<std::sync::Mutex<Option<lambent_ports::Item>>>;

impl Runner {
    pub fn new(
        state: State,
        llm: LlmClient,
        turn: TurnRef,
        log: EventLog,
        stop: Stop,
        deadline: Instant,
    ) -> Runner {
        Runner {
            state,
            llm,
            turn,
            log,
            stop,
            deadline,
            totals: Totals::default(),
            replied: false,
            last_call: None,
            hand_back_at_deadline: false,
            last_reply: None,
        }
    }

    /// A runner that puts each reply it stores into `slot`.
    pub fn keeping_last_reply(mut self, slot: LastStored) -> Runner {
        self.last_reply = Some(slot);
        self
    }

    /// A runner whose deadline is its invocation's, not the turn's: there
    /// it stops between two model calls and returns a `running` ending,
    /// for its caller to give the turn back.
    pub fn handing_back_at_deadline(mut self) -> Runner {
        self.hand_back_at_deadline = true;
        self
    }

    /// Runs the turn to its end (or until it waits): from its first model
    /// call, under way, or from its journal (a background turn, an answer,
    /// a turn taken up after its runner died).
    pub async fn run(mut self, first: Option<(Prepared, Started)>) -> Ending {
        // The first call has resolved the agent already.
        let known = first
            .as_ref()
            .and_then(|(call, _)| call.context.as_ref())
            .map(|context| context.target().clone());
        let target = match known {
            Some(target) => Ok(target),
            None => self.target().await,
        };
        let target = match target {
            Ok(target) => target,
            Err(e) => {
                if let Some((call, started)) = first {
                    drop(started.stream);
                    chat::release(&self.state, &call).await;
                }
                return self.fail(&e).await;
            }
        };
        let tail = match first {
            Some((call, started)) => self.model_call(call, started).await,
            None => self.read_journal().await,
        };
        let mut tail = match tail {
            Ok(tail) => tail,
            Err(ended) => return self.end(ended).await,
        };
        loop {
            if let Err(ended) = self.after_reply(&target, &mut tail).await {
                return self.end_after(ended, &mut tail).await;
            }
            tail = match self.next_call(&mut tail).await {
                Ok(tail) => tail,
                Err(ended) => return self.end_after(ended, &mut tail).await,
            };
        }
    }

    /// Ends the turn once the results it got are stored.
    async fn end_after(mut self, ending: Ending, tail: &mut Tail) -> Ending {
        match self.flush_results(tail).await {
            Ok(()) => self.end(ending).await,
            Err(failed) => self.end(failed).await,
        }
    }

    async fn target(&self) -> lambent_core::Result<Target> {
        let store = self.state.store.as_ref();
        let Some(session) = sessions::get(store, &self.turn.owner, &self.turn.session_id).await?
        else {
            return Err(Error::NotFound("session"));
        };
        Target::of_agent(
            &self.state,
            &self.turn.owner,
            &session.agent_id,
            "the session's agent",
        )
        .await
    }

    fn ending(&self, status: TurnStatus, stop_reason: Option<&str>) -> Ending {
        Ending {
            status,
            stop_reason: stop_reason.map(str::to_owned),
            model_calls: self.totals.model_calls,
            cost_usd: self.totals.cost_usd,
            waiting: Vec::new(),
        }
    }

    fn cancelled(&self) -> bool {
        *self.stop.borrow()
    }

    /// After a reply: its server tools run (or denied), then `Ok` for the
    /// next model call, or how the turn ends.
    async fn after_reply(&mut self, target: &Target, tail: &mut Tail) -> Result<(), Ending> {
        if self.cancelled() {
            return Err(self.ending(TurnStatus::Cancelled, Some(chat::CANCELLED)));
        }
        let Some(reply) = &tail.reply else {
            // Nothing answered yet (a background turn): the first call.
            return Ok(());
        };
        match reply.status {
            MessageStatus::Complete => {}
            MessageStatus::Cancelled => {
                return Err(self.ending(TurnStatus::Cancelled, Some(chat::CANCELLED)))
            }
            MessageStatus::Failed => return Err(self.ending(TurnStatus::Failed, None)),
            _ => return Err(self.ending(TurnStatus::Incomplete, reply.stop_reason.as_deref())),
        }
        let open: Vec<ToolCall> = reply
            .tool_calls
            .iter()
            .filter(|c| !tail.answered.contains(&c.id))
            .cloned()
            .collect();
        if open.is_empty() {
            return if reply.tool_calls.is_empty() {
                Err(self.ending(TurnStatus::Complete, reply.stop_reason.as_deref()))
            } else {
                // Every call answered: the model goes on.
                Ok(())
            };
        }
        let answered_message = reply.message_id.clone();
        let mut run = Vec::new();
        let mut denied = Vec::new();
        let mut pending = Vec::new();
        for call in open {
            let approval = self
                .turn
                .approvals
                .iter()
                .find(|a| a.tool_call_id == call.id);
            match decide(call, &target.server_tools, approval, OtherCalls::Client) {
                Decision::Run(job) => run.push(job),
                Decision::Answered(call, answer) => denied.push((call, answer)),
                Decision::Waits(call, needs) => pending.push(Pending {
                    tool_call_id: call.id,
                    name: call.name,
                    input: call.input,
                    needs,
                    message_id: answered_message.clone(),
                }),
            }
        }
        if !run.is_empty() && self.totals.tool_rounds >= target.max_tool_rounds {
            // The model asked for more than the agent allows: the calls are
            // answered as not run, so the conversation stays whole.
            for job in run {
                let answer = ToolAnswer {
                    content: format!(
                        "not run: the turn reached the agent's max_tool_rounds ({})",
                        target.max_tool_rounds
                    ),
                    is_error: true,
                };
                record(&job.call, answer, tail);
            }
            return Err(self.ending(TurnStatus::Complete, Some(MAX_TOOL_ROUNDS)));
        }
        for (call, answer) in denied {
            record(&call, answer, tail);
        }
        if !run.is_empty() {
            self.totals.tool_rounds += 1;
            self.run_tools(run, tail).await?;
        }
        if self.cancelled() {
            return Err(self.ending(TurnStatus::Cancelled, Some(chat::CANCELLED)));
        }
        if pending.is_empty() {
            return Ok(());
        }
        for call in pending.iter().filter(|p| p.needs == Needs::Approval) {
            self.log
                .emit(
                    "approval_required",
                    json!({ "tool_call_id": call.tool_call_id, "name": call.name, "input": call.input }),
                )
                .await;
        }
        let reason = if pending.iter().any(|p| p.needs == Needs::Result) {
            TOOL_USE
        } else {
            APPROVAL_REQUIRED
        };
        let mut waiting = self.ending(TurnStatus::Waiting, Some(reason));
        waiting.waiting = pending;
        Err(waiting)
    }

    /// Runs server tools concurrently, storing each answer as it comes.
    async fn run_tools(&mut self, run: Vec<ToRun>, tail: &mut Tail) -> Result<(), Ending> {
        let llm = self.llm.clone();
        let session_id = self.turn.session_id.clone();
        let mut stop = self.stop.clone();
        let metrics = self.state.metrics.clone();
        let mut runs = ToolRuns::start(
            &llm,
            &metrics,
            Some(&session_id),
            None,
            run,
            self.state.config.tool_concurrency,
        );
        loop {
            match runs.next(&mut stop).await {
                Next::Answer(call, answer) => record(&call, answer, tail),
                Next::Done => return Ok(()),
                Next::Stopped(unanswered) => {
                    // Cancelled under way: the calls are answered as
                    // cancelled, so the conversation stays whole.
                    drop(runs);
                    for call in unanswered {
                        let answer = ToolAnswer {
                            content: "cancelled".to_owned(),
                            is_error: true,
                        };
                        record(&call, answer, tail);
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Stores the results not stored yet, then shows them. A failure ends
    /// the turn.
    async fn flush_results(&mut self, tail: &mut Tail) -> Result<(), Ending> {
        let unstored = std::mem::take(&mut tail.unstored);
        let Some(answered) = tail.reply.as_ref().map(|r| r.message_id.clone()) else {
            return Ok(());
        };
        let stored = store_results(&self.state, &self.turn, &answered, &unstored).await;
        self.show_results(unstored, stored).await
    }

    /// Shows results once stored (a failure to store them ends the turn).
    async fn show_results(
        &mut self,
        results: Vec<Unstored>,
        stored: Result<(), StoreError>,
    ) -> Result<(), Ending> {
        match stored {
            Ok(()) => {}
            Err(e) if e.is_condition_failure() => {
                return Err(self.ending(TurnStatus::Failed, Some("session_deleted")))
            }
            Err(e) => {
                tracing::error!(error = %e, "could not store a tool's result");
                return Err(self.ending(TurnStatus::Failed, None));
            }
        }
        for Unstored { name, result, .. } in results {
            self.log
                .emit(
                    "tool_result",
                    json!({
                        "tool_call_id": result.tool_call_id,
                        "name": name,
                        "content": result.content,
                        "is_error": result.is_error,
                    }),
                )
                .await;
        }
        Ok(())
    }

    /// The next model call of the turn: the last call's conversation with
    /// `tail` (its reply and results) added, or from the stored history.
    async fn next_call(&mut self, tail: &mut Tail) -> Result<Tail, Ending> {
        if self.cancelled() {
            return Err(self.ending(TurnStatus::Cancelled, Some(chat::CANCELLED)));
        }
        if Instant::now() >= self.deadline {
            if self.hand_back_at_deadline {
                return Err(self.ending(TurnStatus::Running, None));
            }
            return Err(self.ending(TurnStatus::Incomplete, Some(chat::DEADLINE)));
        }
        let continued = match (self.last_call.take(), &tail.reply) {
            (Some(previous), Some(reply)) => {
                chat::prepare_next(&self.state, &previous, added_turns(reply, tail)).await
            }
            _ => None,
        };
        let prepared = match continued {
            Some(prepared) => prepared,
            None => {
                // The history is read from the store: the results first.
                self.flush_results(tail).await?;
                chat::prepare_session_turn(
                    &self.state,
                    &self.turn.owner,
                    &self.turn.session_id,
                    UserInput::Continue {
                        turn_id: self.turn.turn_id.clone(),
                        first: !self.replied,
                    },
                )
                .await
            }
        };
        let call = match prepared {
            Ok(call) => call,
            Err(e @ Error::BudgetExceeded(_)) => {
                self.error_event(&e).await;
                return Err(self.ending(TurnStatus::Incomplete, Some(BUDGET_EXCEEDED)));
            }
            Err(e) => return Err(self.failed(&e).await),
        };
        // The results go into the store while the provider starts; the
        // reply is stored after them. The provider's request is polled
        // first, so it is on its way before the store (which may run its
        // transaction on this thread) takes its turn.
        let unstored = std::mem::take(&mut tail.unstored);
        let answered = tail.reply.as_ref().map(|r| r.message_id.clone());
        let (started, stored) = tokio::join!(chat::start(&self.state, &self.llm, &call), async {
            match &answered {
                Some(answered) if !unstored.is_empty() => {
                    store_results(&self.state, &self.turn, answered, &unstored).await
                }
                _ => Ok(()),
            }
        });
        let shown = self.show_results(unstored, stored).await;
        let started = match (started, shown) {
            (Ok(started), Ok(())) => started,
            (Ok(started), Err(failed)) => {
                drop(started.stream);
                chat::release(&self.state, &call).await;
                return Err(failed);
            }
            (Err(e), shown) => {
                shown?;
                return Err(self.failed(&e).await);
            }
        };
        self.model_call(call, started).await
    }

    /// One model call, streamed as events, settled, shown with its cost.
    async fn model_call(&mut self, call: Prepared, started: Started) -> Result<Tail, Ending> {
        self.log
            .emit(
                "message_start",
                json!({
                    "message_id": call.reply_id(),
                    "session_id": self.turn.session_id,
                    "model": call.model,
                }),
            )
            .await;
        let mut reader = ReplyReader::new(started.stream, self.deadline, Some(self.stop.clone()));
        while let Some(piece) = reader.next().await {
            match piece {
                Piece::Text(text) => self.log.emit("delta", json!({ "text": text })).await,
                Piece::ToolCall(index, tool_call) => {
                    self.log
                        .emit(
                            "tool_call",
                            json!({ "index": index, "id": tool_call.id, "name": tool_call.name, "input": tool_call.input }),
                        )
                        .await
                }
                Piece::ToolPiece(_) => {}
            }
        }
        match started.user_message.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the user's message was not stored"),
            Err(e) => tracing::error!(error = %e, "storing the user's message failed"),
        }
        let mut read = reader.finish(&call);
        if read.cut.is_some() {
            // Calls cut short are not run: the stored reply keeps none.
            read.outcome.tool_calls.clear();
        }
        let tool_calls = read.outcome.tool_calls.clone();
        let text = read.outcome.text.text.clone();
        let status = read.outcome.status;
        let settled = chat::settle(self.state.store.as_ref(), &call, read.outcome).await;
        let mut settled = match settled {
            Ok(settled) => settled,
            Err(e) => {
                tracing::error!(error = %e, "could not store a reply");
                return Err(self.failed(&e).await);
            }
        };
        self.totals.add(&settled.usage, settled.cost_usd);
        self.replied = true;
        if let Some(slot) = &self.last_reply {
            if let Ok(mut last) = slot.lock() {
                *last = settled.stored.take();
            }
        }
        if let Some(e) = read.failure {
            let error = chat::provider_error(e);
            return Err(self.failed(&error).await);
        }
        self.log
            .emit(
                "message_end",
                json!({
                    "message_id": settled.reply_id,
                    "stop_reason": settled.stop_reason,
                    "usage": TokenCounts::from(settled.usage),
                    "cost_usd": settled.cost_usd.to_string(),
                }),
            )
            .await;
        match read.cut {
            Some(Cut::Cancelled) => {
                return Err(self.ending(TurnStatus::Cancelled, Some(chat::CANCELLED)))
            }
            Some(Cut::Deadline) => {
                return Err(self.ending(TurnStatus::Incomplete, Some(chat::DEADLINE)))
            }
            None => {}
        }
        self.last_call = Some(call);
        Ok(Tail {
            reply: Some(LastReply {
                message_id: settled.reply_id,
                text,
                tool_calls,
                stop_reason: settled.stop_reason,
                status,
            }),
            answered: HashSet::new(),
            results: Vec::new(),
            unstored: Vec::new(),
        })
    }

    /// Where a turn taken up again stands: its stored messages say which
    /// calls are done. Its events go on from the last stored one; a reply
    /// its dead runner had begun to show is closed as interrupted.
    async fn read_journal(&mut self) -> Result<Tail, Ending> {
        let store = self.state.store.as_ref();
        let stored = messages::of_turn(
            store,
            &self.turn.session_id,
            &self.turn.turn_id,
            self.turn
                .answers
                .as_deref()
                .unwrap_or(&self.turn.first_message_id),
        )
        .await;
        let stored = match stored {
            Ok(stored) => stored,
            Err(e) => return Err(self.failed(&e).await),
        };
        let mut tail = Tail::default();
        for message in &stored {
            match message.role {
                MessageRole::Assistant => {
                    if message.turn_id.as_deref() == Some(&self.turn.turn_id) {
                        self.replied = true;
                    }
                    if let (Some(usage), Some(cost)) = (&message.usage, message.cost_usd) {
                        let usage = Usage {
                            input_tokens: usage.input_tokens,
                            output_tokens: usage.output_tokens,
                            cache_read_tokens: usage.cache_read_tokens,
                            cache_write_tokens: usage.cache_write_tokens,
                            cache_write_1h_tokens: 0,
                        };
                        self.totals.add(&usage, cost);
                    }
                    if tail
                        .reply
                        .as_ref()
                        .is_some_and(|r| !r.tool_calls.is_empty() && !tail.answered.is_empty())
                    {
                        self.totals.tool_rounds += 1;
                    }
                    tail = Tail {
                        reply: Some(LastReply {
                            message_id: message.id.clone(),
                            text: message.content.clone(),
                            tool_calls: message.tool_calls.clone(),
                            stop_reason: message.stop_reason.clone(),
                            status: message.status,
                        }),
                        answered: HashSet::new(),
                        results: Vec::new(),
                        unstored: Vec::new(),
                    };
                }
                MessageRole::Tool => {
                    if let Some(id) = &message.tool_call_id {
                        tail.answered.insert(id.clone());
                    }
                }
                MessageRole::User => {}
            }
        }
        Ok(tail)
    }

    async fn error_event(&mut self, e: &Error) {
        if matches!(
            e,
            Error::Internal(_) | Error::Unavailable(_) | Error::ProviderFailed(_)
        ) {
            tracing::error!(error = ?e, "a turn failed");
        }
        // An error's text never holds an internal detail.
        self.log
            .emit(
                "error",
                json!({ "code": e.code(), "message": e.to_string(), "request_id": self.turn.request_id }),
            )
            .await;
    }

    /// Shows `e` and ends the turn as failed.
    async fn failed(&mut self, e: &Error) -> Ending {
        self.error_event(e).await;
        self.ending(TurnStatus::Failed, None)
    }

    async fn fail(mut self, e: &Error) -> Ending {
        let ended = self.failed(e).await;
        self.end(ended).await
    }

    /// Records how the turn ended, then shows `done`: whoever sees `done`
    /// finds the turn final.
    async fn end(mut self, ending: Ending) -> Ending {
        if ending.status == TurnStatus::Running {
            // Given back, not ended: its events so far are stored.
            self.log.close().await;
            return ending;
        }
        let store = self.state.store.as_ref();
        let mut recorded = false;
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
            }
            match turns::finish(store, &self.turn.session_id, &self.turn.turn_id, &ending).await {
                Ok(_) => {
                    recorded = true;
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "could not record a turn's end"),
            }
        }
        if !recorded {
            tracing::error!(turn_id = %self.turn.turn_id, "a turn's end is not recorded; the sweeper will take it up");
        }
        self.log
            .emit(
                "done",
                json!({
                    "stop_reason": ending.stop_reason,
                    "status": ending.status,
                    "model_calls": ending.model_calls,
                    "usage": TokenCounts::from(self.totals.usage),
                    "cost_usd": ending.cost_usd.to_string(),
                }),
            )
            .await;
        self.log.close().await;
        ending
    }
}

/// A reply and its tools' results as the next call sends them again: what
/// the stored history reads back as.
fn added_turns(reply: &LastReply, tail: &Tail) -> Vec<Turn> {
    let results = reply
        .tool_calls
        .iter()
        .filter_map(|c| tail.results.iter().find(|r| r.tool_call_id == c.id))
        .cloned();
    vec![
        Turn::reply(&reply.text, &reply.tool_calls),
        Turn::results(results),
    ]
}

/// Keeps a tool call's answer, to be stored and shown with the others of
/// its reply ([`Runner::flush_results`], or beside the next model call).
fn record(call: &ToolCall, answer: ToolAnswer, tail: &mut Tail) {
    let result = ToolResult {
        tool_call_id: call.id.clone(),
        content: answer.content,
        is_error: answer.is_error,
    };
    tail.answered.insert(call.id.clone());
    tail.results.push(result.clone());
    tail.unstored.push(Unstored {
        name: call.name.clone(),
        result,
        message_id: messages::turn_ids_for(0).1,
    });
}

/// Stores server tools' results for the calls of reply `answered`, each
/// once: in one transaction, or (when some were stored already, by an
/// earlier runner of the turn) one by one.
async fn store_results(
    state: &State,
    turn: &TurnRef,
    answered: &str,
    results: &[Unstored],
) -> Result<(), StoreError> {
    let store = state.store.as_ref();
    let ops_of = |unstored: &Unstored| {
        messages::server_tool_result_ops(
            &turn.owner,
            &turn.session_id,
            &turn.turn_id,
            answered,
            &unstored.message_id,
            &unstored.result,
            turn.expires_at,
        )
    };
    if results.len() > 1 {
        let all: Vec<(&str, &ToolResult)> = results
            .iter()
            .map(|u| (u.message_id.as_str(), &u.result))
            .collect();
        let ops = messages::server_tool_results_ops(
            &turn.owner,
            &turn.session_id,
            &turn.turn_id,
            answered,
            &all,
            turn.expires_at,
        );
        match lambent_store::transact_retrying(store, ops).await {
            Ok(()) => return Ok(()),
            Err(StoreError::TransactionCancelled { failed }) if !failed.contains(&0) => {}
            Err(e) => return Err(e),
        }
    }
    for unstored in results {
        let ops = ops_of(unstored);
        let marker = ops.len() - 1;
        match lambent_store::transact_retrying(store, ops).await {
            Ok(()) => {}
            // Stored by an earlier runner of the turn.
            Err(StoreError::TransactionCancelled { failed }) if failed == [marker] => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
