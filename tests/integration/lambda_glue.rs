//! A function driven through the real `lambda_http` adapter with an API
//! Gateway event, as the Lambda runtime would call it.

use lambda_http::request::LambdaRequest;
use lambda_http::{Adapter, Context, LambdaEvent, Service};
use serde_json::Value;
use tower::ServiceExt;

#[tokio::test]
async fn the_health_function_answers_an_api_gateway_event() {
    let dir = tempfile::tempdir().unwrap();
    let state = lambent_boot::embedded(dir.path(), Default::default()).unwrap();
    let mut adapter: Adapter<'_, _, _> =
        Adapter::from(lambent_fn_health::GROUP.router(state).unwrap());

    let fixture = include_str!("../../events/health-apigw-v2.json");
    let request: LambdaRequest = serde_json::from_str(fixture).unwrap();
    let event = LambdaEvent::new(request, Context::default());
    let response = adapter.ready().await.unwrap().call(event).await.unwrap();

    // The adapter's answer, as serialized back to API Gateway.
    let wire: Value = serde_json::to_value(&response).unwrap();
    assert_eq!(wire["statusCode"], 200, "{wire}");
    let body: Value = serde_json::from_str(wire["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(body["checks"]["store"]["status"], "ok");
    assert!(wire["headers"]["x-request-id"]
        .as_str()
        .unwrap()
        .starts_with("req_"));
}

#[tokio::test]
async fn the_authorizer_decides_an_api_gateway_authorization_event() {
    use aws_lambda_events::apigw::ApiGatewayV2CustomAuthorizerV2Request;
    use lambent_core::auth::Role;
    use lambent_core::secret::ExposeSecret;
    use lambent_embedded::write_secret_file;
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

    let fixture = include_str!("../../events/authorizer-apigw-v2.json");
    let placeholder = "lmb_key_0000000000000000000000000a_notarealsecret";
    let event = |presented: &str| -> ApiGatewayV2CustomAuthorizerV2Request {
        serde_json::from_str(&fixture.replace(placeholder, presented)).unwrap()
    };

    let allowed = lambent_fn_authorizer::authorize(&state, &event(key.expose_secret()))
        .await
        .unwrap();
    let wire = serde_json::to_value(&allowed).unwrap();
    assert_eq!(wire["isAuthorized"], true, "{wire}");
    assert_eq!(wire["context"]["user_id"], user.id.as_str());
    assert_eq!(wire["context"]["key_id"], info.id.as_str());
    assert_eq!(wire["context"]["role"], "member");

    // The fixture's own fake key, and the real key ID with a wrong secret.
    let wrong = format!("lmb_{}_notthesecret", info.id);
    for presented in [placeholder, wrong.as_str()] {
        let refused = lambent_fn_authorizer::authorize(&state, &event(presented))
            .await
            .unwrap();
        let wire = serde_json::to_value(&refused).unwrap();
        assert_eq!(wire["isAuthorized"], false, "{wire}");
    }
    // Revoked: refused at once in this process.
    keys::revoke(state.store.as_ref(), None, &info.id)
        .await
        .unwrap();
    state.identity.cache().evict(&info.id);
    let refused = lambent_fn_authorizer::authorize(&state, &event(key.expose_secret()))
        .await
        .unwrap();
    assert!(!refused.is_authorized);
}

#[tokio::test]
async fn the_worker_answers_an_sqs_batch_with_partial_failures() {
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
