//! Every port contract on the AWS adapters, against the emulator.

mod store {
    lambent_tests::contract_tests!(lambent_tests::contract::store, lambent_tests::emulator::store();
        round_trip_keeps_every_value_exactly,
        conditional_put_refuses_and_keeps_the_original,
        concurrent_adds_are_exact,
        conditional_update_and_delete,
        pages_by_prefix_in_both_orders_without_gaps,
        expired_items_read_as_absent,
        transactions_roll_back_whole,
        bad_requests_are_refused,
    );
}

mod cipher {
    lambent_tests::contract_tests!(lambent_tests::contract::cipher, lambent_tests::emulator::cipher();
        round_trip_with_its_context,
        another_context_is_refused,
        tampered_or_foreign_ciphertext_is_refused,
        an_empty_context_is_refused,
    );
}

mod queue {
    lambent_tests::contract_tests!(lambent_tests::contract::queue, lambent_tests::emulator::queue();
        delivers_and_deletes,
        hides_a_received_message_until_its_visibility_ends,
        delays_a_message,
        redrives_to_the_dead_letter_queue_after_max_receives,
        refuses_an_unknown_receipt,
    );
}

mod secrets {
    lambent_tests::contract_tests!(lambent_tests::contract::secrets, lambent_tests::emulator::secrets();
        reads_a_set_secret_and_none_for_an_unset_one,
    );
}

mod identity_storage {
    use lambent_tests::identity_storage::{self as suite, Storage};

    #[tokio::test]
    async fn provider_keys_are_ciphertext_bound_to_owner_and_provider() {
        suite::provider_keys_are_ciphertext_bound_to_owner_and_provider(&Storage::emulator().await)
            .await;
    }
    #[tokio::test]
    async fn deleting_a_user_leaves_nothing_of_theirs() {
        suite::deleting_a_user_leaves_nothing_of_theirs(&Storage::emulator().await).await;
    }
    #[tokio::test]
    async fn a_role_change_reaches_every_key() {
        suite::a_role_change_reaches_every_key(&Storage::emulator().await).await;
    }
    #[tokio::test]
    async fn rate_limits_hold_across_processes() {
        suite::rate_limits_hold_across_processes(&Storage::emulator().await).await;
    }
}

mod chat_storage {
    use lambent_tests::chat_storage as suite;
    use lambent_tests::identity_storage::Storage;

    #[tokio::test]
    async fn a_call_settled_again_and_again_counts_once() {
        suite::a_call_settled_again_and_again_counts_once(&Storage::emulator().await).await;
    }
    #[tokio::test]
    async fn reservations_never_pass_a_limit_under_concurrency() {
        suite::reservations_never_pass_a_limit_under_concurrency(&Storage::emulator().await).await;
    }
    #[tokio::test]
    async fn usage_reports_cover_exactly_their_days() {
        suite::usage_reports_cover_exactly_their_days(&Storage::emulator().await).await;
    }
}

mod workflow_storage {
    //! The worker and the run repository on this backend (see the suite).
    use lambent_tests::workflow_storage::{self as suite, Flow};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn data_flows_between_steps() {
        suite::data_flows_between_steps(&Flow::emulator().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_message_delivered_twice_changes_nothing() {
        suite::every_message_delivered_twice_changes_nothing(&Flow::emulator().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crash_at_each_point_of_a_step_bills_it_once() {
        suite::a_crash_at_each_point_of_a_step_bills_it_once(&Flow::emulator().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn poison_messages_go_to_the_dead_letter_queue() {
        suite::poison_messages_go_to_the_dead_letter_queue(&Flow::emulator().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_step_that_keeps_failing_fails_the_run_after_n_attempts() {
        suite::a_step_that_keeps_failing_fails_the_run_after_n_attempts(&Flow::emulator().await)
            .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deleted_agent_fails_its_step_clearly() {
        suite::a_deleted_agent_fails_its_step_clearly(&Flow::emulator().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_run_starts_no_further_step() {
        suite::a_cancelled_run_starts_no_further_step(&Flow::emulator().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn triggers_start_runs_once_and_dead_letter_the_malformed() {
        suite::triggers_start_runs_once_and_dead_letter_the_malformed(&Flow::emulator().await)
            .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idempotency_key_starts_one_run() {
        suite::an_idempotency_key_starts_one_run(&Flow::emulator().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_costs_count_against_the_monthly_budget() {
        suite::run_costs_count_against_the_monthly_budget(&Flow::emulator().await).await;
    }
}
