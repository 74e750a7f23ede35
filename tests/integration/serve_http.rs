//! The HTTP API of `lambent serve` on embedded defaults.

use lambent_testkit::app::spawn_app;
use serde_json::Value;

#[tokio::test]
async fn health_reports_three_green_checks() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    for check in ["store", "cipher", "queue"] {
        assert_eq!(body["checks"][check]["status"], "ok", "{check}: {body}");
    }
    app.stop().await;
}

#[tokio::test]
async fn every_error_is_an_envelope_with_the_request_id() {
    let app = spawn_app().await;
    let cases = [
        (reqwest::Method::GET, "/no/such/route", 404, "not_found"),
        (
            reqwest::Method::DELETE,
            "/health",
            405,
            "method_not_allowed",
        ),
        (reqwest::Method::GET, "/v1/users", 401, "unauthenticated"),
        (
            reqwest::Method::POST,
            "/v1/sessions/ses_1/messages",
            401,
            "unauthenticated",
        ),
    ];
    for (method, path, status, code) in cases {
        let response = app
            .client
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{method} {path}");
        let header_id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{method} {path}: {body}");
        assert_eq!(body["error"]["request_id"], header_id.as_str());
        assert!(header_id.starts_with("req_"));
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }
    app.stop().await;
}

#[tokio::test]
async fn routes_of_two_functions_share_a_path() {
    // The sessions function reads history and the chat function posts to the
    // same path; merged, both methods answer (neither is 405).
    let app = spawn_app().await;
    let admin = app.admin_key();
    for method in [reqwest::Method::GET, reqwest::Method::POST] {
        let (status, body) = app
            .call(
                method.clone(),
                "/v1/sessions/ses_1/messages",
                &admin,
                (method == reqwest::Method::POST).then(|| serde_json::json!({"content": "hi"})),
            )
            .await;
        // Each function's handler answers: the session is unknown.
        assert_eq!(status, 404, "{method}: {body}");
        assert_eq!(body["error"]["message"], "session not found", "{method}");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_committed_openapi_document_is_what_the_code_generates() {
    let generated = lambent_local::openapi::document_json().unwrap();
    let committed = include_str!("../../docs/openapi.json");
    assert!(
        generated == committed,
        "docs/openapi.json is stale: run `cargo run --bin lambent -- openapi > docs/openapi.json`"
    );
    // Served as committed, and it covers every identity route.
    let app = spawn_app().await;
    let served: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served["openapi"], "3.1.0");
    for path in [
        "/health",
        "/v1/users",
        "/v1/users/{id}",
        "/v1/audit",
        "/v1/keys",
        "/v1/keys/{id}",
        "/v1/providers",
        "/v1/providers/{id}",
        "/v1/models",
        "/v1/agents",
        "/v1/agents/{id}",
    ] {
        assert!(
            served["paths"][path].is_object(),
            "{path} is not documented"
        );
    }
    app.stop().await;
}
