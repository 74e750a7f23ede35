//! Messages: `SESSION#<session>/MSG#<time-ordered id>`, so a page of history
//! is one query with a limit, whatever the session's length. A user message
//! is written when its call starts; the assistant message, with its usage,
//! cost and the prices used, when the call ends (see [`super::usage`]).
//! Each message expires `LAMBENT_SESSION_TTL_DAYS` after it was written.

use lambent_core::ids::{MessageId, TypedId};
use rust_decimal::Decimal;
use serde::Serialize;

use super::models::Prices;
use super::sessions::{self, TokenCounts};
use super::{count, json_text, opt_decimal, opt_json_attr, opt_text, text, PageRequest, Paged};
use lambent_core::chat::{ContentPart, Part, Role, ToolCall, ToolResult, Turn, Usage};
use lambent_core::error::{Error, Result};
use lambent_core::ids;
use lambent_ports::{Condition, Item, ItemStore, Key, Order, Query, TxOp};

pub const ID_PREFIX: &str = <MessageId as TypedId>::PREFIX;
/// The most text one message stores. A reply that goes on (the stream is
/// still forwarded whole) is stored up to here and marked `truncated`; this
/// keeps an item under DynamoDB's 400 KB and memory per stream bounded.
pub const MAX_STORED_BYTES: usize = 256 * 1024;

/// The most bytes of a message's parts kept in its own item; more (large
/// images) go to `PART#<message>#<n>` items of this size, so no item nears
/// DynamoDB's 400 KB.
pub const PARTS_PER_ITEM: usize = 300 * 1024;

fn part_key(session_id: &str, message_id: &str, n: usize) -> Key {
    Key::new(
        sessions::messages_partition(session_id),
        format!("PART#{message_id}#{n:04}"),
    )
}

/// Splits `text` into pieces of at most `max` bytes, at character boundaries.
fn pieces(text: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.len().min(max);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (piece, tail) = rest.split_at(end);
        out.push(piece);
        rest = tail;
    }
    out
}

pub fn item_key(session_id: &str, message_id: &str) -> Key {
    Key::new(
        sessions::messages_partition(session_id),
        format!("MSG#{message_id}"),
    )
}

/// How a reply ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// The whole reply, delivered.
    Complete,
    /// Cut short by Lambent (the stream deadline) or the provider: what the
    /// provider sent is stored and billed.
    Incomplete,
    /// The provider failed; the text received before the failure is kept.
    Failed,
    /// Stopped by a cancel: what was said so far is kept and billed.
    Cancelled,
    /// A turn's reply still being made (shown, never stored).
    Running,
    /// A turn stopped for tool results or approvals (shown, never stored).
    Waiting,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Complete => "complete",
            MessageStatus::Incomplete => "incomplete",
            MessageStatus::Failed => "failed",
            MessageStatus::Cancelled => "cancelled",
            MessageStatus::Running => "running",
            MessageStatus::Waiting => "waiting",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "complete" => Some(MessageStatus::Complete),
            "incomplete" => Some(MessageStatus::Incomplete),
            "failed" => Some(MessageStatus::Failed),
            "cancelled" => Some(MessageStatus::Cancelled),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageRole {
    User,
    Assistant,
    /// The result of one tool call, sent by the caller.
    Tool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Message {
    pub id: String,
    pub session_id: String,
    pub role: MessageRole,
    /// The message's text (its text parts, joined).
    pub content: String,
    /// Every part: text and images.
    pub parts: Vec<ContentPart>,
    /// Assistant messages: the tools the model called, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// Tool messages: the call this answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Tool messages: whether the tool failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_error: Option<bool>,
    /// The agent turn that stored it (the ID of the turn's first reply).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turn_id: Option<String>,
    /// Parts kept in items of their own, still to be read into `parts`.
    #[serde(skip)]
    parts_items: usize,
    pub status: MessageStatus,
    /// The stored text stops at 256 KiB; the reply went on.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// Assistant messages: the model that answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<TokenCounts>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::str_option"
    )]
    #[schema(value_type = Option<String>, example = "0.000321")]
    pub cost_usd: Option<Decimal>,
    /// The prices the cost was computed with (USD per million tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prices: Option<Prices>,
    pub created_at: String,
}

/// An upper bound of a text's tokens: one per byte, the most a byte-level
/// tokenizer (every provider's) can count, plus the framing of a message
/// part. A call's reservation is built from these, so it is never below
/// what the provider can bill (a token per 4 bytes is typical for English:
/// the reservation is about 4 times the usual cost of the prompt).
pub fn estimate_tokens(text: &str) -> u64 {
    text.len() as u64 + PART_FRAMING_TOKENS
}

/// The role and type markers around each part of a message.
const PART_FRAMING_TOKENS: u64 = 8;

/// What one image counts for in the context: the most either provider
/// bills for an image it scales down to its limits.
pub const IMAGE_TOKENS: u64 = 1_600;

/// An estimate of a turn's tokens that errs high: its text, its images at
/// [`IMAGE_TOKENS`] each, tool calls and results as the JSON they travel as.
pub fn estimate_parts_tokens(parts: &[Part]) -> u64 {
    let mut tokens = 0;
    for part in parts {
        tokens += match part {
            Part::Text(text) => estimate_tokens(text),
            Part::Image(_) => IMAGE_TOKENS,
            Part::ToolCall(call) => {
                estimate_tokens(&call.id)
                    + estimate_tokens(&call.name)
                    + estimate_tokens(&call.input.to_string())
            }
            Part::ToolResult(result) => {
                estimate_tokens(&result.tool_call_id) + estimate_tokens(&result.content)
            }
        };
    }
    tokens
}

/// Two IDs that sort in the order of a turn: the user's message, then the reply.
pub fn turn_ids() -> (String, String) {
    let (mut input, reply) = turn_ids_for(1);
    (input.remove(0), reply)
}

/// IDs that sort in the order of a turn: `inputs` messages (a message, or
/// one per tool result), then the reply.
pub fn turn_ids_for(inputs: usize) -> (Vec<String>, String) {
    let mut made = ids::new_sortable_ids(ID_PREFIX, inputs + 1);
    let reply = made
        .pop()
        .unwrap_or_else(|| ids::new_sortable_id(ID_PREFIX));
    (made, reply)
}

/// Counts `n` new messages in the session's totals, only while it is live:
/// every write of messages counts its own.
fn count_messages(owner: &str, session_id: &str, n: usize) -> TxOp {
    TxOp::Update {
        key: sessions::item_key(owner, session_id),
        update: lambent_ports::Update::new().add("message_count", rust_decimal::Decimal::from(n)),
        condition: Some(sessions::live()),
    }
}

/// The user's message, written only while the session is live. A message
/// of text only is stored as its text; one with images keeps its parts too.
pub fn user_message_ops(
    owner: &str,
    session_id: &str,
    message_id: &str,
    parts: &[Part],
    expires_at: i64,
) -> Vec<TxOp> {
    let turn = Turn {
        role: Role::User,
        parts: parts.to_vec(),
    };
    let mut item = Item::new(item_key(session_id, message_id))
        .with("role", "user")
        .with("content", turn.joined_text())
        .with("status", MessageStatus::Complete.as_str())
        .with("tokens", estimate_parts_tokens(parts) as i64)
        .with("created_at", lambent_core::time::now_rfc3339())
        .expiring_at(expires_at);
    let mut chunks = Vec::new();
    if turn.as_plain_text().is_none() {
        let content: Vec<ContentPart> = parts.iter().filter_map(Part::as_content).collect();
        // The API's own part types always serialise.
        let json = json_text(&content).unwrap_or_default();
        if json.len() <= PARTS_PER_ITEM {
            item = item.with("parts", json);
        } else {
            let split = pieces(&json, PARTS_PER_ITEM);
            item = item.with("parts_items", split.len() as i64);
            for (n, piece) in split.into_iter().enumerate() {
                chunks.push(TxOp::Put {
                    item: Item::new(part_key(session_id, message_id, n))
                        .with("piece", piece)
                        .expiring_at(expires_at),
                    condition: Some(Condition::NotExists),
                });
            }
        }
    }
    let mut ops = vec![
        count_messages(owner, session_id, 1),
        TxOp::Put {
            item,
            condition: Some(Condition::NotExists),
        },
    ];
    ops.extend(chunks);
    ops
}

/// The results of the tools the model called, one message each, in order,
/// written only while the session is live and only once for the calls of
/// message `answered` (a create-only marker, last). `message_ids` are as
/// many time-ordered IDs as results.
pub fn tool_result_ops(
    owner: &str,
    session_id: &str,
    answered: &str,
    message_ids: &[String],
    results: &[ToolResult],
    expires_at: i64,
) -> Vec<TxOp> {
    let mut ops = vec![count_messages(owner, session_id, results.len())];
    for (message_id, result) in message_ids.iter().zip(results) {
        let mut item = Item::new(item_key(session_id, message_id))
            .with("role", "tool")
            .with("content", result.content.as_str())
            .with("tool_call_id", result.tool_call_id.as_str())
            .with("status", MessageStatus::Complete.as_str())
            .with(
                "tokens",
                estimate_parts_tokens(&[Part::ToolResult(result.clone())]) as i64,
            )
            .with("created_at", lambent_core::time::now_rfc3339())
            .expiring_at(expires_at);
        if result.is_error {
            item = item.with("is_error", true);
        }
        ops.push(TxOp::Put {
            item,
            condition: Some(Condition::NotExists),
        });
    }
    ops.push(TxOp::Put {
        item: Item::new(Key::new(
            sessions::messages_partition(session_id),
            format!("ANSWERED#{answered}"),
        ))
        .expiring_at(expires_at),
        condition: Some(Condition::NotExists),
    });
    ops
}

/// Marks the messages `ops` write as stored by agent turn `turn_id`.
pub fn tag_turn(ops: &mut [TxOp], turn_id: &str) {
    for op in ops {
        if let TxOp::Put { item, .. } = op {
            if item.key.sk.starts_with("MSG#") {
                item.attrs.insert("turn".into(), turn_id.into());
            }
        }
    }
}

/// The result of one server tool that turn `turn_id` ran for a call of
/// message `answered`, written only while the session is live and only
/// once per call (a create-only marker).
pub fn server_tool_result_ops(
    owner: &str,
    session_id: &str,
    turn_id: &str,
    answered: &str,
    message_id: &str,
    result: &ToolResult,
    expires_at: i64,
) -> Vec<TxOp> {
    let mut ops = tool_result_ops(
        owner,
        session_id,
        answered,
        &[message_id.to_owned()],
        std::slice::from_ref(result),
        expires_at,
    );
    // The marker answers this one call, not the whole message.
    if let Some(TxOp::Put { item, .. }) = ops.last_mut() {
        *item = Item::new(Key::new(
            sessions::messages_partition(session_id),
            format!("ANSWERED#{answered}#{}", result.tool_call_id),
        ))
        .expiring_at(expires_at);
    }
    tag_turn(&mut ops, turn_id);
    ops
}

/// What a finished call stores as the assistant's message.
#[derive(Debug, Clone)]
pub struct Reply {
    pub text: String,
    /// The tools the model called, in order.
    pub tool_calls: Vec<ToolCall>,
    pub truncated: bool,
    pub status: MessageStatus,
    pub model: String,
    pub stop_reason: Option<String>,
    pub usage: Usage,
    pub cost_usd: Decimal,
    pub prices: Prices,
}

/// The assistant's message, create-only: it doubles as the record that the
/// call was counted, so a retried write cannot count it twice.
pub fn assistant_message_op(
    session_id: &str,
    message_id: &str,
    reply: &Reply,
    expires_at: i64,
) -> TxOp {
    let u = reply.usage;
    let mut item = Item::new(item_key(session_id, message_id))
        .with("role", "assistant")
        .with("content", reply.text.as_str())
        .with("status", reply.status.as_str())
        .with("model", reply.model.as_str())
        .with("tokens", (u.output_tokens.max(reply_tokens(reply))) as i64)
        .with("input_tokens", u.input_tokens as i64)
        .with("output_tokens", u.output_tokens as i64)
        .with("cache_read_tokens", u.cache_read_tokens as i64)
        .with("cache_write_tokens", u.cache_write_tokens as i64)
        .with("cache_write_1h_tokens", u.cache_write_1h_tokens as i64)
        .with("cost_usd", reply.cost_usd)
        .with("input_per_mtok", reply.prices.input_per_mtok)
        .with("output_per_mtok", reply.prices.output_per_mtok)
        .with("cache_read_per_mtok", reply.prices.cache_read_per_mtok)
        .with("cache_write_per_mtok", reply.prices.cache_write_per_mtok)
        .with("created_at", lambent_core::time::now_rfc3339())
        .expiring_at(expires_at);
    if reply.truncated {
        item = item.with("truncated", true);
    }
    if !reply.tool_calls.is_empty() {
        item = item.with(
            "tool_calls",
            json_text(&reply.tool_calls).unwrap_or_default(),
        );
    }
    if let Some(reason) = &reply.stop_reason {
        item = item.with("stop_reason", reason.as_str());
    }
    TxOp::Put {
        item,
        condition: Some(Condition::NotExists),
    }
}

/// What a reply counts for in a later call's context.
fn reply_tokens(reply: &Reply) -> u64 {
    estimate_parts_tokens(&Turn::reply(&reply.text, &reply.tool_calls).parts)
}

/// The assistant's message as it is (or will be) stored, without reading
/// it: what a turn answers when its reply is not readable yet (its settle
/// was left to the sweeper).
pub fn assistant_message(session_id: &str, message_id: &str, reply: &Reply) -> Result<Message> {
    match assistant_message_op(session_id, message_id, reply, 0) {
        TxOp::Put { item, .. } => from_item(session_id, &item),
        _ => Err(Error::Internal("an assistant message is a put".into())),
    }
}

/// A message item of `session_id` as reading it back gives it.
pub fn message_of_item(session_id: &str, item: &Item) -> Result<Message> {
    from_item(session_id, item)
}

fn from_item(session_id: &str, item: &Item) -> Result<Message> {
    let role = match text(item, "role")?.as_str() {
        "user" => MessageRole::User,
        "assistant" => MessageRole::Assistant,
        "tool" => MessageRole::Tool,
        other => return Err(Error::Internal(format!("message role {other:?}"))),
    };
    let status = text(item, "status")?;
    let status = MessageStatus::parse(&status)
        .ok_or_else(|| Error::Internal(format!("message status {status:?}")))?;
    let (usage, prices) = match role {
        MessageRole::User | MessageRole::Tool => (None, None),
        MessageRole::Assistant => (
            Some(TokenCounts {
                input_tokens: count(item, "input_tokens")?,
                output_tokens: count(item, "output_tokens")?,
                cache_read_tokens: count(item, "cache_read_tokens")?,
                cache_write_tokens: count(item, "cache_write_tokens")?,
            }),
            Some(Prices {
                input_per_mtok: super::decimal(item, "input_per_mtok")?,
                output_per_mtok: super::decimal(item, "output_per_mtok")?,
                cache_read_per_mtok: super::decimal(item, "cache_read_per_mtok")?,
                cache_write_per_mtok: super::decimal(item, "cache_write_per_mtok")?,
            }),
        ),
    };
    Ok(Message {
        id: super::id_after(item, "MSG#")?.to_owned(),
        session_id: session_id.to_owned(),
        role,
        parts: stored_parts(item)?,
        content: text(item, "content")?,
        tool_calls: opt_json_attr(item, "tool_calls")?.unwrap_or_default(),
        tool_call_id: opt_text(item, "tool_call_id"),
        is_error: (role == MessageRole::Tool).then(|| item.get("is_error").is_some()),
        turn_id: opt_text(item, "turn"),
        parts_items: count(item, "parts_items").unwrap_or(0) as usize,
        status,
        truncated: item.get("truncated").is_some(),
        model: opt_text(item, "model"),
        stop_reason: opt_text(item, "stop_reason"),
        usage,
        cost_usd: opt_decimal(item, "cost_usd"),
        prices,
        created_at: text(item, "created_at")?,
    })
}

/// A message's parts: as stored, or its text alone.
fn stored_parts(item: &Item) -> Result<Vec<ContentPart>> {
    if let Some(parts) = opt_json_attr(item, "parts")? {
        return Ok(parts);
    }
    let content = text(item, "content")?;
    Ok(if content.is_empty() {
        Vec::new()
    } else {
        vec![ContentPart::Text { text: content }]
    })
}

/// The parts of message `message_id` kept in `parts_items` items of their own.
async fn read_parts(
    store: &dyn ItemStore,
    session_id: &str,
    message_id: &str,
    parts_items: usize,
) -> Result<Vec<ContentPart>> {
    let found = store
        .query(
            Query::partition(sessions::messages_partition(session_id))
                .prefix(format!("PART#{message_id}#"))
                .limit(parts_items.clamp(1, lambent_ports::store::MAX_PAGE_SIZE)),
        )
        .await?;
    if found.items.len() != parts_items {
        return Err(Error::Internal(format!(
            "message {message_id} has {} of its {parts_items} part items",
            found.items.len()
        )));
    }
    let mut json = String::new();
    for item in &found.items {
        json.push_str(&text(item, "piece")?);
    }
    serde_json::from_str(&json)
        .map_err(|e| Error::Internal(format!("message parts are not readable: {e}")))
}

/// Reads the parts of `messages` that are kept in items of their own.
async fn fill_parts(store: &dyn ItemStore, messages: &mut [Message]) -> Result<()> {
    for message in messages.iter_mut().filter(|m| m.parts_items > 0) {
        message.parts =
            read_parts(store, &message.session_id, &message.id, message.parts_items).await?;
        message.parts_items = 0;
    }
    Ok(())
}

/// A stored message as the model sees it again.
fn turn_of(item: &Item) -> Result<Turn> {
    match item.get_str("role") {
        Some("assistant") => {
            let calls: Vec<ToolCall> = opt_json_attr(item, "tool_calls")?.unwrap_or_default();
            Ok(Turn::reply(&text(item, "content")?, &calls))
        }
        Some("tool") => Ok(Turn::results([ToolResult {
            tool_call_id: text(item, "tool_call_id")?,
            content: text(item, "content")?,
            is_error: item.get("is_error").is_some(),
        }])),
        _ => Ok(Turn {
            role: Role::User,
            parts: stored_parts(item)?.into_iter().map(Part::from).collect(),
        }),
    }
}

/// Whether a turn answers tool calls (it cannot start a conversation).
fn is_tool_results(turn: &Turn) -> bool {
    turn.parts.iter().any(|p| matches!(p, Part::ToolResult(_)))
}

/// One page of a session's history. The caller has checked the session is its own.
pub async fn page(
    store: &dyn ItemStore,
    session_id: &str,
    order: Order,
    page: PageRequest,
) -> Result<Paged<Message>> {
    let mut found = super::page_of(
        store,
        Query::partition(sessions::messages_partition(session_id))
            .prefix("MSG#")
            .order(order),
        page,
        |item| from_item(session_id, item),
    )
    .await?;
    fill_parts(store, &mut found.items).await?;
    Ok(found)
}

pub async fn get(
    store: &dyn ItemStore,
    session_id: &str,
    message_id: &str,
) -> Result<Option<Message>> {
    let Some(item) = store.get(&item_key(session_id, message_id)).await? else {
        return Ok(None);
    };
    let mut message = [from_item(session_id, &item)?];
    fill_parts(store, &mut message).await?;
    let [message] = message;
    Ok(Some(message))
}

/// Messages read per query while filling the context.
const CONTEXT_PAGE: usize = 50;

/// A page of a session's messages, newest first, after `after`.
fn newest_first(session_id: &str, after: Option<lambent_ports::StoreCursor>) -> Query {
    Query::partition(sessions::messages_partition(session_id))
        .prefix("MSG#")
        .order(Order::Descending)
        .limit(CONTEXT_PAGE)
        .after(after)
}

/// The newest history that fits `budget` tokens, oldest first, as turns for
/// the model. Reading stops at the first message that does not fit, so the
/// cost of a call grows with the budget, never with the session's length.
/// Failed replies with no text are left out, and so is a leading assistant
/// turn (a conversation starts with the user).
pub async fn recent_turns(
    store: &dyn ItemStore,
    session_id: &str,
    budget: u64,
) -> Result<(Vec<Turn>, u64)> {
    let mut turns = Vec::new();
    let mut used = 0u64;
    let mut after = None;
    'pages: loop {
        let found = store.query(newest_first(session_id, after)).await?;
        for item in &found.items {
            let mut turn = turn_of(item)?;
            let parts_items = count(item, "parts_items").unwrap_or(0) as usize;
            if turn.parts.is_empty() && parts_items == 0 {
                continue;
            }
            // Checked before any part item is read: a message that does not
            // fit costs no more reads.
            let stored_tokens = count(item, "tokens")?;
            if used + stored_tokens > budget {
                break 'pages;
            }
            if parts_items > 0 {
                let id = super::id_after(item, "MSG#")?;
                let parts = read_parts(store, session_id, id, parts_items).await?;
                turn.parts = parts.into_iter().map(Part::from).collect();
            }
            if turn.parts.is_empty() {
                continue;
            }
            // Messages stored before estimates counted a token per byte
            // carry a lower `tokens`: the parts decide.
            let tokens = stored_tokens.max(estimate_parts_tokens(&turn.parts));
            if used + tokens > budget {
                break 'pages;
            }
            used += tokens;
            // Newest first here: a result joins the results read before it
            // (the later ones), so one turn holds all results of a call.
            match turns.last_mut() {
                Some((later, later_tokens)) if is_tool_results(&turn) && is_tool_results(later) => {
                    let mut parts = turn.parts;
                    parts.append(&mut later.parts);
                    later.parts = parts;
                    *later_tokens += tokens;
                }
                _ => turns.push((turn, tokens)),
            }
        }
        match found.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    turns.reverse();
    // Tool results whose calls did not fit cannot open the conversation.
    let first_user = turns
        .iter()
        .position(|(t, _)| t.role == Role::User && !is_tool_results(t))
        .unwrap_or(turns.len());
    let dropped: u64 = turns.drain(..first_user).map(|(_, tokens)| tokens).sum();
    Ok((turns.into_iter().map(|(t, _)| t).collect(), used - dropped))
}

/// The messages agent turn `turn_id` stored, oldest first, from `first_id`
/// on: read from the newest back, so the cost is the turn's length, not
/// the session's. If `first_id` is a reply with tool calls that the turn
/// answers (it goes on from a waiting turn), that reply and every result
/// of its calls come too, whichever turn stored them.
pub async fn of_turn(
    store: &dyn ItemStore,
    session_id: &str,
    turn_id: &str,
    first_id: &str,
) -> Result<Vec<Message>> {
    let first_key = format!("MSG#{first_id}");
    let mut found: Vec<Message> = Vec::new();
    let mut after = None;
    'pages: loop {
        let page = store.query(newest_first(session_id, after)).await?;
        for item in &page.items {
            if item.key.sk < first_key {
                break 'pages;
            }
            let answered = item.key.sk == first_key
                || (item.get_str("role") == Some("tool") && item.get_str("turn") != Some(turn_id));
            if item.get_str("turn") == Some(turn_id) || answered {
                found.push(from_item(session_id, item)?);
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    found.reverse();
    // Results stored by other turns count only if they answer `first_id`.
    let calls: Vec<String> = match found.first() {
        Some(first) if first.id == first_id => {
            first.tool_calls.iter().map(|c| c.id.clone()).collect()
        }
        _ => Vec::new(),
    };
    found.retain(|m| {
        m.turn_id.as_deref() == Some(turn_id)
            || m.id == first_id
            || m.tool_call_id.as_ref().is_some_and(|id| calls.contains(id))
    });
    Ok(found)
}

/// The reply of a turn that has not stored it yet, as it shows meanwhile.
pub fn placeholder(session_id: &str, message_id: &str, created_at: &str) -> Message {
    Message {
        id: message_id.to_owned(),
        session_id: session_id.to_owned(),
        role: MessageRole::Assistant,
        content: String::new(),
        parts: Vec::new(),
        tool_calls: Vec::new(),
        tool_call_id: None,
        is_error: None,
        turn_id: Some(message_id.to_owned()),
        parts_items: 0,
        status: MessageStatus::Running,
        truncated: false,
        model: None,
        stop_reason: None,
        usage: None,
        cost_usd: None,
        prices: None,
        created_at: created_at.to_owned(),
    }
}

/// The reply of a turn that could not be finished (its runner died more
/// often than a turn is taken up again), if it stored none: `failed`, with
/// `stop_reason`, at no cost, so no user message is left unanswered.
/// Create-only, and counted in the session's messages.
pub fn gave_up_ops(
    owner: &str,
    session_id: &str,
    turn_id: &str,
    stop_reason: &str,
    expires_at: i64,
) -> Vec<TxOp> {
    let zero = rust_decimal::Decimal::ZERO;
    let reply = Reply {
        text: String::new(),
        tool_calls: Vec::new(),
        truncated: false,
        status: MessageStatus::Failed,
        model: String::new(),
        stop_reason: Some(stop_reason.to_owned()),
        usage: Usage::default(),
        cost_usd: zero,
        prices: Prices {
            input_per_mtok: zero,
            output_per_mtok: zero,
            cache_read_per_mtok: zero,
            cache_write_per_mtok: zero,
        },
    };
    let mut ops = vec![
        assistant_message_op(session_id, turn_id, &reply, expires_at),
        count_messages(owner, session_id, 1),
    ];
    tag_turn(&mut ops, turn_id);
    ops
}

/// [`server_tool_result_ops`] for several results of one reply, in one
/// transaction: the session's count first, then each result (under its
/// message ID) and its marker.
pub fn server_tool_results_ops(
    owner: &str,
    session_id: &str,
    turn_id: &str,
    answered: &str,
    results: &[(&str, &ToolResult)],
    expires_at: i64,
) -> Vec<TxOp> {
    let mut ops = vec![count_messages(owner, session_id, results.len())];
    for (message_id, result) in results {
        let single = server_tool_result_ops(
            owner, session_id, turn_id, answered, message_id, result, expires_at,
        );
        // Its own count is the one above.
        ops.extend(single.into_iter().skip(1));
    }
    ops
}
