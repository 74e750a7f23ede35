//! Functions driven through the real `lambda_http` and `lambda_runtime`
//! adapters with the events AWS delivers (the fixtures in `events/`), as the
//! Lambda runtime would call them: REST API proxy events (buffered and
//! streamed), the REST API's `REQUEST` authorizer event, SQS batches.

use std::sync::Once;

use futures::StreamExt;
use lambda_http::request::LambdaRequest;
use lambda_http::{Adapter, Context, LambdaEvent, Service, StreamAdapter};
use lambent_fake_provider::{FakeUsage, Reply};
use lambent_testkit::chat::{parse_events, ChatWorld, JsonData};
use serde_json::{json, Value};
use tower::ServiceExt;

/// A function's process as the template sets it up: REST API events carry
/// the stage in their path (`/api/v1/...`), the routes are `/v1/...`; and
/// its logs as JSON lines (captured here, see [`logs`]).
fn as_the_template_sets_it() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| std::env::set_var("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH", "true"));
    logs();
}

#[tokio::test]
async fn the_health_function_answers_a_rest_api_event_and_logs_its_ids() {
    use lambda_runtime::layers::trace::request_span;
    use tracing::Instrument;

    as_the_template_sets_it();
    let dir = tempfile::tempdir().unwrap();
    let state = lambent_boot::embedded(dir.path(), Default::default()).unwrap();
    let mut adapter: Adapter<'_, _, _> =
        Adapter::from(lambent_lambda::app(&lambent_fn_health::GROUP, state).unwrap());

    let fixture = include_str!("../../events/health-apigw-rest.json");
    let request: LambdaRequest = serde_json::from_str(fixture).unwrap();
    let mut context = Context::default();
    context.request_id = "8476a536-e9f4-11e8-9739-2dfe598c3fcd".into();
    context.xray_trace_id = Some("Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Sampled=1".into());
    // What the runtime wraps each invocation in (lambda_runtime::run).
    let invocation = request_span(&context);
    let event = LambdaEvent::new(request, context);
    let response = adapter
        .ready()
        .await
        .unwrap()
        .call(event)
        .instrument(invocation)
        .await
        .unwrap();
    let logs = logs().lines();

    // The adapter's answer, as serialized back to API Gateway.
    let wire: Value = serde_json::to_value(&response).unwrap();
    assert_eq!(wire["statusCode"], 200, "{wire}");
    let body: Value = serde_json::from_str(wire["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(body["checks"]["store"]["status"], "ok");
    let headers = wire["multiValueHeaders"]
        .as_object()
        .or_else(|| wire["headers"].as_object())
        .unwrap();
    let request_id = headers["x-request-id"].to_string();
    assert!(request_id.contains("req_"), "{wire}");

    // Its log line joins Lambda's request ID, the trace, API Gateway's
    // request ID (the fixture's) and Lambent's own.
    let line = logs
        .iter()
        .find(|l| {
            l["request_id"]
                .as_str()
                .is_some_and(|r| request_id.contains(r))
        })
        .unwrap_or_else(|| panic!("no line of the request: {logs:#?}"));
    assert_eq!(
        line["requestId"], "8476a536-e9f4-11e8-9739-2dfe598c3fcd",
        "{line}"
    );
    assert_eq!(
        line["xrayTraceId"],
        "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Sampled=1"
    );
    assert_eq!(
        line["apigw_request_id"],
        "c6af9ac6-7b61-4e2a-9a41-93e8de0a0001"
    );
}

/// Every JSON line logged in this test binary since its first test began,
/// in the format of `lambent_boot::telemetry` (as on Lambda). A global
/// subscriber: a thread's own would miss events whose call sites another
/// test's thread registered first.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> &'static Captured {
    static LOGS: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(lambent_boot::telemetry::FlatJson)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        captured
    })
}

impl Captured {
    fn lines(&self) -> Vec<Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

/// The chat function as API Gateway invokes it for a streamed route
/// (`InvokeWithResponseStream`): the REST API event in, the metadata prelude
/// and then the body's chunks out, one by one as the turn produces them.
#[tokio::test]
async fn the_chat_function_streams_a_turn_from_a_rest_api_event() {
    as_the_template_sets_it();
    let dir = tempfile::tempdir().unwrap();
    lambent_embedded::write_secret_file(&dir.path().join("signing-key"), b"chat-glue-test-root")
        .unwrap();
    let config = lambent_app::config::Config {
        allow_private_provider_urls: true,
        ..Default::default()
    };
    let state = lambent_boot::embedded(dir.path(), config).unwrap();
    let world = ChatWorld::seed(
        lambent_testkit::app::spawn_app_on_state(state.clone()).await,
        "anthropic",
    )
    .await;
    let session = world.session(json!({})).await;
    world.fake.push(
        Reply::chunks(["Three ", "bullet ", "points."]).usage(FakeUsage {
            input: 40,
            output: 6,
            cache_read: 0,
            cache_write_5m: 0,
            cache_write_1h: 0,
        }),
    );

    let fixture = include_str!("../../events/chat-apigw-rest.json")
        .replace("ses_3q2mR8vT1xK9pL4nZ7wY6c", &session)
        .replace(
            "lmb_key0example0000_notarealsecretnotarealsecret00",
            &world.key,
        );
    let request: LambdaRequest = serde_json::from_str(&fixture).unwrap();
    let mut adapter =
        StreamAdapter::from(lambent_lambda::app(&lambent_fn_chat::GROUP, state).unwrap());
    let response = adapter
        .ready()
        .await
        .unwrap()
        .call(LambdaEvent::new(request, Context::default()))
        .await
        .unwrap();

    // The prelude API Gateway reads before the 8 NUL bytes and the body.
    let prelude = serde_json::to_value(&response.metadata_prelude).unwrap();
    assert_eq!(prelude["statusCode"], 200, "{prelude}");
    assert!(prelude["headers"]["content-type"]
        .as_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut chunks = Vec::new();
    let mut stream = response.stream;
    while let Some(chunk) = stream.next().await {
        chunks.push(chunk.unwrap());
    }
    // Streamed: the events came as they happened, not as one buffered body.
    assert!(chunks.len() > 2, "{} chunks", chunks.len());
    let body = String::from_utf8(chunks.concat()).unwrap();
    let events = parse_events(&body);
    let text: String = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("delta"))
        .map(|e| e.json()["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, "Three bullet points.", "{body}");
    let end = events
        .iter()
        .find(|e| e.event.as_deref() == Some("message_end"))
        .expect(&body);
    assert_eq!(end.json()["usage"]["output_tokens"], 6, "{body}");
    // The turn is stored whole, as the stream said.
    let reply = world
        .stored_reply(&session, std::time::Duration::from_secs(5))
        .await;
    assert_eq!(reply["content"], "Three bullet points.", "{reply}");
}

#[tokio::test]
async fn the_authorizer_decides_a_rest_api_request_event() {
    as_the_template_sets_it();
    use aws_lambda_events::apigw::ApiGatewayCustomAuthorizerRequestTypeRequest;
    use lambent_core::auth::Role;
    use lambent_core::secret::ExposeSecret;
    use lambent_embedded::write_secret_file;
    use lambent_fn_authorizer::Refusal;
    use lambent_store::{keys, users};

    let dir = tempfile::tempdir().unwrap();
    write_secret_file(&dir.path().join("signing-key"), b"authorizer-test-root").unwrap();
    let state = lambent_boot::embedded(dir.path(), Default::default()).unwrap();
    let user = users::create(
        state.store.as_ref(),
        users::NewUser {
            name: "ana".into(),
            role: Role::Member,
            monthly_budget_usd: None,
        },
    )
    .await
    .unwrap();
    let (info, key) = keys::create(state.store.as_ref(), &user.id, None)
        .await
        .unwrap();

    let fixture: Value =
        serde_json::from_str(include_str!("../../events/authorizer-apigw-rest.json")).unwrap();
    let placeholder = "lmb_key_0000000000000000000000000a_notarealsecret";
    let with_header = |name: &str, value: &str| -> ApiGatewayCustomAuthorizerRequestTypeRequest {
        let mut event = fixture.clone();
        for headers in ["headers", "multiValueHeaders"] {
            let headers = event[headers].as_object_mut().unwrap();
            headers.remove("Authorization");
            let value = if headers.values().next().is_some_and(Value::is_array) {
                json!([value])
            } else {
                json!(value)
            };
            headers.insert(name.to_owned(), value);
        }
        serde_json::from_value(event).unwrap()
    };
    let bearer = |k: &str| with_header("Authorization", &format!("Bearer {k}"));

    let allowed = lambent_fn_authorizer::authorize(&state, &bearer(key.expose_secret()))
        .await
        .unwrap();
    let wire = serde_json::to_value(&allowed).unwrap();
    assert_eq!(wire["principalId"], user.id.as_str(), "{wire}");
    assert_eq!(wire["context"]["user_id"], user.id.as_str());
    assert_eq!(wire["context"]["key_id"], info.id.as_str());
    assert_eq!(wire["context"]["role"], "member");
    // API Gateway caches the policy for the key and applies it to the next
    // route it calls: it allows the whole stage, and only invoking it.
    let statement = &wire["policyDocument"]["Statement"][0];
    assert_eq!(statement["Effect"], "Allow", "{wire}");
    assert_eq!(statement["Action"], json!(["execute-api:Invoke"]));
    assert_eq!(
        statement["Resource"],
        json!(["arn:aws:execute-api:us-east-1:123456789012:a1b2c3d4e5/api/*"])
    );

    // Anthropic's clients send the key alone in x-api-key.
    let allowed =
        lambent_fn_authorizer::authorize(&state, &with_header("x-api-key", key.expose_secret()))
            .await
            .unwrap();
    assert_eq!(allowed.principal_id.as_deref(), Some(user.id.as_str()));

    // The fixture's own fake key, the real key ID with a wrong secret, no
    // key at all: "Unauthorized", which API Gateway turns into a 401.
    let wrong = format!("lmb_{}_notthesecret", info.id);
    let mut no_key: Value = fixture.clone();
    no_key["headers"]
        .as_object_mut()
        .unwrap()
        .remove("Authorization");
    no_key["multiValueHeaders"]
        .as_object_mut()
        .unwrap()
        .remove("Authorization");
    let refused_events = [
        serde_json::from_value(fixture.clone()).unwrap(),
        bearer(&wrong),
        serde_json::from_value(no_key).unwrap(),
    ];
    assert!(fixture.to_string().contains(placeholder));
    for event in refused_events {
        let refused = lambent_fn_authorizer::authorize(&state, &event).await;
        match refused {
            Err(e @ Refusal::Unauthorized) => assert_eq!(e.to_string(), "Unauthorized"),
            other => panic!("not refused: {other:?}"),
        }
    }
    // Revoked: refused at once in this process.
    keys::revoke(state.store.as_ref(), None, &info.id)
        .await
        .unwrap();
    state.identity.cache().evict(&info.id);
    assert!(matches!(
        lambent_fn_authorizer::authorize(&state, &bearer(key.expose_secret())).await,
        Err(Refusal::Unauthorized)
    ));
}

#[tokio::test]
async fn the_worker_answers_an_sqs_batch_with_partial_failures() {
    as_the_template_sets_it();
    use aws_lambda_events::sqs::SqsEvent;
    use lambent_ports::QueueName;
    use lambent_store::runs::{self, RunStatus};
    use lambent_tests::workflow_storage::Flow;

    let flow = Flow::embedded().await;
    let workflow = flow
        .workflow(&[("done", "Hi", &[]), ("held", "Wait", &[])])
        .await;
    let run_id = flow.start(&workflow, serde_json::json!({}), None).await;
    // Another worker holds "held" under a live lease.
    let store = flow.state.store.as_ref();
    runs::claim(
        store,
        &run_id,
        "held",
        std::time::Duration::from_secs(60),
        3,
        flow.state.clock.now_millis(),
    )
    .await
    .unwrap()
    .unwrap();

    let fixture: Value = serde_json::from_str(include_str!("../../events/sqs-steps.json")).unwrap();
    let record = |id: &str, body: String| {
        let mut r = fixture["Records"][0].clone();
        r["messageId"] = id.into();
        r["body"] = body.into();
        r
    };
    let step = |s: &str| serde_json::json!({"run_id": run_id, "step_id": s}).to_string();
    let event: SqsEvent = serde_json::from_value(serde_json::json!({"Records": [
        record("m-done", step("done")),
        record("m-held", step("held")),
        record("m-poison", "{\"not\": \"a step\"}".to_owned()),
    ]}))
    .unwrap();

    let response = flow.worker.handle_batch(event).await;
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    // Only the step another worker holds comes back; the poison message was
    // dead-lettered and acknowledged, the other step ran.
    assert_eq!(failed, ["m-held"]);
    let run = flow.run(&run_id).await;
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(run.steps[0].output.as_deref(), Some("out:Hi"));
    assert_eq!(
        flow.dead_letters(QueueName::StepsDeadLetter).await,
        ["{\"not\": \"a step\"}"]
    );
    let wire: Value = serde_json::to_value(&response).unwrap();
    assert_eq!(
        wire["batchItemFailures"],
        serde_json::json!([{"itemIdentifier": "m-held"}])
    );
}

#[tokio::test]
async fn the_trigger_answers_an_sqs_batch_and_dead_letters_the_malformed() {
    as_the_template_sets_it();
    use aws_lambda_events::sqs::SqsEvent;
    use lambent_ports::QueueName;
    use lambent_tests::workflow_storage::Flow;

    let flow = Flow::embedded().await;
    let workflow = flow
        .workflow(&[("only", "About {{input.topic}}", &[])])
        .await;
    let mut event: Value =
        serde_json::from_str(include_str!("../../events/sqs-triggers.json")).unwrap();
    let good = event["Records"][0]["body"]
        .as_str()
        .unwrap()
        .replace("wf_2Kd7Ls9Pq1Wm4Rt6Yv8Xz0", &workflow.id);
    event["Records"][0]["body"] = good.into();
    let mut malformed = event["Records"][0].clone();
    malformed["messageId"] = "m-malformed".into();
    malformed["body"] = "{\"workflow_id\": 7}".into();
    event["Records"].as_array_mut().unwrap().push(malformed);
    let event: SqsEvent = serde_json::from_value(event).unwrap();

    let response = lambent_app::workflows::trigger::handle_batch(&flow.state, event.clone()).await;
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    assert_eq!(
        flow.dead_letters(QueueName::TriggersDeadLetter).await,
        ["{\"workflow_id\": 7}"]
    );
    // The fixture's event started one run, and delivering the batch again
    // (its idempotency key) starts no other.
    lambent_app::workflows::trigger::handle_batch(&flow.state, event).await;
    flow.drive(&flow.worker, &[], 1).await;
    assert_eq!(flow.provider_calls(), 1);
    let asked = flow.fake.requests()[0].body["messages"][0]["content"].clone();
    assert_eq!(asked, "About quarterly report");
}
