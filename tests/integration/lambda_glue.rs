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
