//! What a warm turn waits for from DynamoDB (in the emulator) before its
//! provider request: one round trip, counted through the port, as on the
//! embedded store (`tests/integration/first_token.rs`).

use std::time::Duration;

use lambent_app::config::Config;
use lambent_app::state::State;
use lambent_boot::AwsResources;
use lambent_testkit::app::spawn_app_on_state;
use lambent_testkit::chat::ChatWorld;
use lambent_testkit::counting::Meter;
use lambent_testkit::emulator;
use lambent_testkit::first_token::{assert_one_round_trip_before_the_provider, slow_and_counted};

#[tokio::test]
async fn a_warm_turn_waits_for_one_dynamodb_round_trip_before_its_provider_request() {
    let sdk = emulator::sdk().await;
    let made = emulator::provision(&sdk).await;
    // Default settings (the rate limit is on), but caches that stay warm
    // through the slow writes of the turns, and a provider on loopback.
    let config = Config {
        auth_cache: Duration::from_secs(600),
        allow_private_provider_urls: true,
        ..Config::default()
    };
    let state = lambent_boot::aws(&sdk, config, AwsResources::from(made))
        .await
        .unwrap();
    let meter = Meter::new();
    let ports = lambent_ports::Ports {
        store: slow_and_counted(state.store.clone(), &meter),
        cipher: state.cipher.clone(),
        queue: state.queue.clone(),
        secrets: state.secrets.clone(),
        clock: state.clock.clone(),
    };
    let state = State::from_ports((*state.config).clone(), ports);
    let w = ChatWorld::seed(spawn_app_on_state(state).await, "anthropic").await;
    assert_one_round_trip_before_the_provider(&w, &meter).await;
}
