//! Whole tool calls from a streamed reply: the calls begin with their ID
//! and name and their arguments arrive in pieces, split anywhere.

use crate::wire::arguments;
use crate::{Chunk, ToolCall};

/// Collects the [`Chunk::ToolCallStart`] and [`Chunk::ToolCallArguments`]
/// of one reply; other chunks pass by.
#[derive(Debug, Default)]
pub struct ToolCallAssembler {
    calls: Vec<Pending>,
}

#[derive(Debug)]
struct Pending {
    id: String,
    name: String,
    json: String,
}

impl ToolCallAssembler {
    pub fn push(&mut self, chunk: &Chunk) {
        match chunk {
            Chunk::ToolCallStart { index, id, name } => {
                // Decoders number calls 0, 1, 2… in order.
                debug_assert_eq!(*index as usize, self.calls.len());
                self.calls.push(Pending {
                    id: id.clone(),
                    name: name.clone(),
                    json: String::new(),
                });
            }
            Chunk::ToolCallArguments { index, json } => {
                if let Some(call) = self.calls.get_mut(*index as usize) {
                    call.json.push_str(json);
                }
            }
            Chunk::Text(_) | Chunk::Usage(_) | Chunk::Stop(_) => {}
        }
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// How many calls have begun.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Call `index` with the arguments received so far: whole once a later
    /// call has begun or the reply has ended.
    pub fn call(&self, index: usize) -> Option<ToolCall> {
        self.calls.get(index).map(|call| ToolCall {
            id: call.id.clone(),
            name: call.name.clone(),
            input: arguments(&call.json),
        })
    }

    /// The calls, in order, their arguments parsed.
    pub fn finish(self) -> Vec<ToolCall> {
        self.calls
            .into_iter()
            .map(|call| ToolCall {
                input: arguments(&call.json),
                id: call.id,
                name: call.name,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pieces_split_anywhere_join_into_each_call() {
        let mut calls = ToolCallAssembler::default();
        let start = |index: u32, id: &str, name: &str| Chunk::ToolCallStart {
            index,
            id: id.into(),
            name: name.into(),
        };
        let piece = |index: u32, json: &str| Chunk::ToolCallArguments {
            index,
            json: json.into(),
        };
        for chunk in [
            start(0, "call_a", "weather"),
            piece(0, "{\"ci"),
            start(1, "call_b", "time"),
            piece(1, "{}"),
            piece(0, "ty\": \"Zür"),
            Chunk::Text("ignored".into()),
            piece(0, "ich\"}"),
            start(2, "call_c", "broken"),
            piece(2, "{not json"),
            start(3, "call_d", "none"),
        ] {
            calls.push(&chunk);
        }
        assert_eq!(
            calls.finish(),
            vec![
                ToolCall {
                    id: "call_a".into(),
                    name: "weather".into(),
                    input: json!({"city": "Zürich"}),
                },
                ToolCall {
                    id: "call_b".into(),
                    name: "time".into(),
                    input: json!({}),
                },
                ToolCall {
                    id: "call_c".into(),
                    name: "broken".into(),
                    input: json!("{not json"),
                },
                ToolCall {
                    id: "call_d".into(),
                    name: "none".into(),
                    input: json!({}),
                },
            ]
        );
    }
}
