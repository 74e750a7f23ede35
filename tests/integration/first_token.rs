//! What a warm turn waits for from the embedded store before its provider
//! request: one round trip, the session's history page (and for a stream,
//! its stream slot, taken at the same time), counted through the port. The
//! rate-limit count and the turn's input are written beside the provider
//! call, the audit entry and the settle after it. The same check on
//! DynamoDB in the emulator is in `tests/aws/first_token.rs`.

use std::time::Duration;

use lambent_testkit::app::spawn_app_layered;
use lambent_testkit::chat::ChatWorld;
use lambent_testkit::counting::Meter;
use lambent_testkit::first_token::{assert_one_round_trip_before_the_provider, slow_and_counted};

#[tokio::test]
async fn a_warm_turn_waits_for_one_store_round_trip_before_its_provider_request() {
    let meter = Meter::new();
    let layer = {
        let meter = meter.clone();
        lambent_local::serve::StoreLayer::new(move |inner| slow_and_counted(inner, &meter))
    };
    // Default settings (the rate limit is on), but caches that stay warm
    // through the slow writes of the turns.
    let app = spawn_app_layered(lambent_core::clock::system(), Some(layer), |c| {
        c.auth_cache = Duration::from_secs(600)
    })
    .await;
    let w = ChatWorld::seed(app, "anthropic").await;
    assert_one_round_trip_before_the_provider(&w, &meter).await;
}
