//! A function driven through the real `lambda_http` adapter with an API
//! Gateway event, as the Lambda runtime would call it.

use lambda_http::request::LambdaRequest;
use lambda_http::{Adapter, Context, LambdaEvent, Service};
use serde_json::Value;
use tower::ServiceExt;

#[tokio::test]
async fn the_health_function_answers_an_api_gateway_event() {
    let dir = tempfile::tempdir().unwrap();
    let state = lambent::backend::embedded(dir.path(), Default::default()).unwrap();
    let mut adapter: Adapter<'_, _, _> = Adapter::from(lambent_fn_health::router(state));

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
    use lambent::adapters::embedded::write_secret_file;
    use lambent::identity::Role;
    use lambent::repos::{keys, users};
    use lambent::secret::ExposeSecret;

    let dir = tempfile::tempdir().unwrap();
    write_secret_file(&dir.path().join("signing-key"), b"authorizer-test-root").unwrap();
    let state = lambent::backend::embedded(dir.path(), Default::default()).unwrap();
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
    let hash_key = state.identity.keys().await.unwrap().api_key_hash;
    let (info, key) = keys::create(state.store.as_ref(), &hash_key, &user.id, None)
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
