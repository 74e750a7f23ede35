//! Agent turns: the loop that runs an agent until it is done, and keeps
//! going when its client goes away.
//!
//! A turn starts with the caller's input (a message, or the answers a
//! waiting turn asked for) and then, round after round: a model call
//! through the model-call pipeline ([`crate::chat`]: prepared, reserved,
//! made, settled), the server tools of its reply run concurrently
//! ([`tools`]), their results back to the model, until the model stops
//! for another reason, asks for a client tool or an approval (the turn
//! *waits*), reaches `max_tool_rounds`, runs out of budget, or is
//! cancelled ([`run`]).
//!
//! **Durable.** Everything a turn does is stored as it happens: each
//! reply and each tool result is a message of the session, tagged with the
//! turn; together they are its journal. A turn whose runner died is taken
//! up by the worker (the sweeper hands it over once its lease has run
//! out), which reads the journal and goes on: a model call whose answer is
//! stored is not made again, a tool call whose result is stored is not
//! sent again (one in flight when the runner died is sent again, with the
//! same `Idempotency-Key`).
//!
//! **Resumable.** Every event of a turn is numbered and stored in batches
//! ([`log`]); `GET …/messages/{id}/events` replays them after a
//! `Last-Event-ID` and follows the live turn until `done` ([`follow`]).
//! A disconnect never stops a turn; a cancel does ([`cancel`]).
//!
//! **Where it runs.** A turn asked for in a request runs in that request's
//! process, streaming to its client as it goes; a background turn
//! (`"background": true`) in the worker, off the steps queue
//! ([`background`]), handed on from one invocation to the next between two
//! model calls when it outlives one. (A workflow step's agent loop is the
//! worker's own, `crate::workflows`, with its journal under the run; it
//! runs its tools with [`tools`] too.)

pub mod answers;
pub mod background;
pub mod cancel;
pub mod follow;
pub mod log;
pub mod run;
pub(crate) mod tools;
mod watch;

pub use run::{Runner, TurnRef};

use lambent_llm::LlmClient;
use lambent_store::{messages, turns};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::state::State;

/// The stop reason of a turn that waits for client tools' results.
pub const TOOL_USE: &str = "tool_use";
/// The stop reason of a turn that waits for approvals.
pub const APPROVAL_REQUIRED: &str = "approval_required";
/// The stop reason of a turn stopped at its agent's `max_tool_rounds`.
pub const MAX_TOOL_ROUNDS: &str = "max_tool_rounds";
/// The stop reason of a turn whose next model call did not fit a
/// spending limit.
pub const BUDGET_EXCEEDED: &str = "budget_exceeded";
/// The stop reason of a turn that could not be finished (its runner died
/// more often than a turn is taken up again).
pub const INTERRUPTED: &str = "interrupted";

/// The message that asks the worker to run (or take up) a turn, on the
/// steps queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnMessage {
    pub turn_id: String,
    pub session_id: String,
    pub owner: String,
}

impl TurnMessage {
    /// The queue body.
    pub fn body(&self) -> String {
        // Three strings: serialising cannot fail.
        serde_json::json!({ "turn": self }).to_string()
    }

    /// A queue body that is a turn message.
    pub fn parse(body: &str) -> Option<TurnMessage> {
        #[derive(Deserialize)]
        struct Envelope {
            turn: TurnMessage,
        }
        serde_json::from_str::<Envelope>(body).ok().map(|e| e.turn)
    }
}

/// How a turn that ran in this process ended.
pub struct Ended {
    pub ending: turns::Ending,
    /// Its last reply as stored, when this process stored it and nobody
    /// read the turn live.
    pub last_reply: Option<messages::Message>,
}

/// A turn running in this process.
pub struct Spawned {
    /// Its ending, once it has one.
    pub ended: tokio::task::JoinHandle<Ended>,
    /// Its events as they happen, for the client that asked for it.
    pub live: Option<log::LiveEvents>,
}

/// Runs `turn` here, in a task of its own (a disconnect never stops it),
/// from its first model call (under way) or its journal; `live`: a client
/// reads its events as they happen. `hold` (a stream slot) is kept until
/// the turn ends.
pub fn spawn(
    state: &State,
    llm: &LlmClient,
    turn: TurnRef,
    first: Option<(crate::chat::Prepared, crate::chat::Started)>,
    live: bool,
    hold: impl Send + 'static,
) -> Spawned {
    // A turn answered whole answers with its last reply, as stored.
    let last_reply = (!live).then(run::LastStored::default);
    let (stop, followed, watching) = watch::start(state, &turn.session_id, &turn.turn_id);
    let (log, live) = log::EventLog::open(
        state,
        &turn.session_id,
        &turn.turn_id,
        0,
        turn.expires_at,
        live,
        followed,
    );
    let deadline = tokio::time::Instant::now() + state.config.stream_deadline;
    let session_id = turn.session_id.clone();
    let mut runner = Runner::new(state.clone(), llm.clone(), turn, log, stop, deadline);
    if let Some(slot) = &last_reply {
        runner = runner.keeping_last_reply(slot.clone());
    }
    let ended = tokio::spawn(
        async move {
            let ending = runner.run(first).await;
            drop((watching, hold));
            let last_reply = last_reply
                .and_then(|slot| slot.lock().ok().and_then(|mut last| last.take()))
                .and_then(|item| messages::message_of_item(&session_id, &item).ok());
            Ended { ending, last_reply }
        }
        .in_current_span(),
    );
    Spawned { ended, live }
}
