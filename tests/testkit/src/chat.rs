//! A chat world for tests: `lambent serve` on embedded storage, a fake
//! provider on loopback, a member with a provider, an agent and helpers to
//! read server-sent events.

use lambent_fake_provider::FakeProvider;
use reqwest::Method;
use serde_json::{json, Value};

use crate::app::{spawn_app_on, TestApp};

/// The provider API key the member registers; it must never leak.
pub const PROVIDER_KEY: &str = "sk-fake-CANARY-4c1d9e2b7a";

pub struct ChatWorld {
    pub app: TestApp,
    pub fake: FakeProvider,
    pub user_id: String,
    pub key: String,
    pub provider_id: String,
    pub agent_id: String,
}

/// Prices of the test model `fake-model` (USD per million tokens): round
/// numbers whose products stay exact.
pub const PRICES: (&str, &str, &str, &str) = ("3", "15", "0.3", "3.75");

impl ChatWorld {
    /// An Anthropic-kind world with default settings.
    pub async fn start() -> ChatWorld {
        ChatWorld::start_with("anthropic", |_| {}).await
    }

    /// A world whose provider is of `kind` (`anthropic` or `openai`), with
    /// the configuration changed by `configure`.
    pub async fn start_with(
        kind: &str,
        configure: impl FnOnce(&mut lambent_app::config::Config),
    ) -> ChatWorld {
        ChatWorld::start_on(lambent_core::clock::system(), kind, configure).await
    }

    /// Like [`ChatWorld::start_with`], with `lambent serve` on `clock`.
    pub async fn start_on(
        clock: std::sync::Arc<dyn lambent_core::clock::Clock>,
        kind: &str,
        configure: impl FnOnce(&mut lambent_app::config::Config),
    ) -> ChatWorld {
        ChatWorld::seed(spawn_app_on(clock, configure).await, kind).await
    }

    /// A world on `app`, which may be served by the real binary
    /// ([`TestApp::attached`]): a fake provider of `kind`, the model, the
    /// member and their provider and agent.
    pub async fn seed(app: TestApp, kind: &str) -> ChatWorld {
        let fake = FakeProvider::start().await.unwrap();
        let admin = app.admin_key();
        let model_kind = if kind == "anthropic" {
            "anthropic"
        } else {
            "openai"
        };
        let (status, body) = app
            .call(
                Method::POST,
                "/v1/models",
                &admin,
                Some(json!({
                    "name": format!("fake-{model_kind}"),
                    "provider_kind": model_kind,
                    "input_per_mtok": PRICES.0,
                    "output_per_mtok": PRICES.1,
                    "cache_read_per_mtok": PRICES.2,
                    "cache_write_per_mtok": PRICES.3,
                })),
            )
            .await;
        assert!(status == 201 || status == 200, "{status} {body}");
        let (user_id, key) = app.user_with_key("chatter", "member").await;
        let base_url = if kind == "anthropic" {
            fake.anthropic_base_url()
        } else {
            fake.openai_base_url()
        };
        let (status, provider) = app
            .call(
                Method::POST,
                "/v1/providers",
                &key,
                Some(json!({"kind": kind, "name": "fake", "api_key": PROVIDER_KEY, "base_url": base_url})),
            )
            .await;
        assert_eq!(status, 201, "{provider}");
        let provider_id = provider["id"].as_str().unwrap().to_owned();
        let (status, agent) = app
            .call(
                Method::POST,
                "/v1/agents",
                &key,
                Some(json!({
                    "name": "helper",
                    "provider_id": provider_id,
                    "model": format!("fake-{model_kind}"),
                    "system_prompt": "You are terse.",
                    "max_tokens": 100,
                })),
            )
            .await;
        assert_eq!(status, 201, "{agent}");
        let agent_id = agent["id"].as_str().unwrap().to_owned();
        ChatWorld {
            app,
            fake,
            user_id,
            key,
            provider_id,
            agent_id,
        }
    }

    /// Gives the member a monthly spending limit (USD, a decimal string), as
    /// the bootstrap admin.
    pub async fn set_monthly_budget(&self, usd: &str) {
        let (status, body) = self
            .app
            .call(
                Method::PATCH,
                &format!("/v1/users/{}", self.user_id),
                &self.app.admin_key(),
                Some(json!({"monthly_budget_usd": usd})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.app.call(method, path, &self.key, body).await
    }

    /// A new session with the world's agent; returns its ID.
    pub async fn session(&self, extra: Value) -> String {
        let mut body = json!({"agent_id": self.agent_id});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let (status, session) = self.call(Method::POST, "/v1/sessions", Some(body)).await;
        assert_eq!(status, 201, "{session}");
        session["id"].as_str().unwrap().to_owned()
    }

    /// Posts a message and reads the whole event stream.
    pub async fn chat(&self, session: &str, content: &str) -> Stream {
        let response = self
            .app
            .request(
                Method::POST,
                &format!("/v1/sessions/{session}/messages"),
                &self.key,
            )
            .json(&json!({ "content": content }))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = response.text().await.unwrap();
        Stream {
            status,
            content_type,
            events: parse_events(&text),
            raw: text,
        }
    }

    /// Posts a message with `"stream": false`.
    pub async fn chat_whole(&self, session: &str, content: &str) -> (u16, Value) {
        self.call(
            Method::POST,
            &format!("/v1/sessions/{session}/messages"),
            Some(json!({"content": content, "stream": false})),
        )
        .await
    }

    /// Every message of a session, oldest first, read page by page.
    pub async fn history(&self, session: &str, limit: u32, order: &str) -> Vec<Value> {
        let mut all = Vec::new();
        let mut cursor = String::new();
        loop {
            let (status, page) = self
                .call(
                    Method::GET,
                    &format!(
                        "/v1/sessions/{session}/messages?limit={limit}&order={order}&cursor={cursor}"
                    ),
                    None,
                )
                .await;
            assert_eq!(status, 200, "{page}");
            all.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = next.to_owned(),
                None => return all,
            }
        }
    }

    /// The events of turn `turn` (its ID: its first reply's) after event
    /// `after` (`Last-Event-ID`), read to the turn's `done`.
    pub async fn turn_events(
        &self,
        session: &str,
        turn: &str,
        after: Option<u64>,
    ) -> Vec<SseEvent> {
        let mut request = self.app.request(
            Method::GET,
            &format!("/v1/sessions/{session}/messages/{turn}/events"),
            &self.key,
        );
        if let Some(after) = after {
            request = request.header("last-event-id", after.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        parse_events(&response.text().await.unwrap())
    }

    /// The reply of a session's first turn, once it is stored (a reply
    /// whose client went away is stored when the provider's stream ends).
    pub async fn stored_reply(&self, session: &str, within: std::time::Duration) -> Value {
        crate::eventually("the reply stored", within, || async {
            let history = self.history(session, 10, "asc").await;
            (history.len() == 2).then(|| history[1].clone())
        })
        .await
    }
}

/// A server-sent event as the client saw it, read by the product's own
/// parser (`lambent_llm::sse`).
pub use lambent_llm::sse::SseEvent;

/// An event's `data:` as JSON (`null` if it is not JSON).
pub trait JsonData {
    fn json(&self) -> Value;
}

impl JsonData for SseEvent {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }
}

pub struct Stream {
    pub status: u16,
    pub content_type: String,
    pub events: Vec<SseEvent>,
    pub raw: String,
}

impl Stream {
    pub fn named(&self, name: &str) -> Vec<&SseEvent> {
        self.events
            .iter()
            .filter(|e| e.event.as_deref() == Some(name))
            .collect()
    }

    /// The text of every `delta`, in order.
    pub fn text(&self) -> String {
        self.named("delta")
            .iter()
            .map(|e| e.json()["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    pub fn end(&self) -> Value {
        let ends = self.named("message_end");
        assert_eq!(ends.len(), 1, "one message_end expected: {}", self.raw);
        ends[0].json()
    }
}

/// Parses a whole `text/event-stream` body.
pub fn parse_events(text: &str) -> Vec<SseEvent> {
    lambent_llm::sse::SseParser::new()
        .feed(text.as_bytes())
        .expect("a well-formed event stream")
}
