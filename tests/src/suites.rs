//! The list of every suite a backend must pass (the port contracts of
//! `lambent_ports::contract` and the identity, chat and workflow storage
//! suites here), written once for both backends.

/// `each_case!(suite_module, async_factory_expr; case, case, ...)`: one test
/// per case, each calling `suite_module::case(&factory.await)` on a fresh
/// storage; `each_case!(adapter suite_module, ...)` lends the adapter inside
/// its holder (`&*held`) instead.
#[macro_export]
macro_rules! each_case {
    (adapter $suite:path, $make:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                use $suite as suite;
                let adapter = $make.await;
                suite::$case(&*adapter).await;
            }
        )+
    };
    ($suite:path, $make:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                use $suite as suite;
                let subject = $make.await;
                suite::$case(&subject).await;
            }
        )+
    };
}

/// Every suite that each backend must pass, listed once:
/// `backend_suites!(embedded)` or `backend_suites!(emulator)` names the
/// module of adapter factories and the `Storage`/`Flow` constructor.
#[macro_export]
macro_rules! backend_suites {
    ($backend:ident) => {
        mod store {
            $crate::each_case!(adapter lambent_ports::contract::store, lambent_testkit::$backend::store();
                round_trip_keeps_every_value_exactly,
                conditional_put_refuses_and_keeps_the_original,
                concurrent_adds_are_exact,
                conditional_update_and_delete,
                pages_by_prefix_in_both_orders_without_gaps,
                expired_items_read_as_absent,
                transactions_roll_back_whole,
                bad_requests_are_refused,
                an_item_over_400_kb_is_refused_and_leaves_nothing,
                an_item_just_under_400_kb_is_stored_and_reads_back,
                an_update_past_400_kb_is_refused_and_keeps_the_old_item,
                a_transaction_with_two_operations_on_one_item_is_refused,
                a_transaction_over_4_mb_is_refused_and_writes_nothing,
            );
        }

        mod cipher {
            $crate::each_case!(adapter lambent_ports::contract::cipher, lambent_testkit::$backend::cipher();
                round_trip_with_its_context,
                another_context_is_refused,
                tampered_or_foreign_ciphertext_is_refused,
                an_empty_context_is_refused,
            );
        }

        mod queue {
            $crate::each_case!(adapter lambent_ports::contract::queue, lambent_testkit::$backend::queue();
                delivers_and_deletes,
                hides_a_received_message_until_its_visibility_ends,
                delays_a_message,
                redrives_to_the_dead_letter_queue_after_max_receives,
                refuses_an_unknown_receipt,
                refuses_what_sqs_refuses,
            );
        }

        mod secrets {
            $crate::each_case!(adapter lambent_ports::contract::secrets, lambent_testkit::$backend::secrets();
                reads_a_set_secret_and_none_for_an_unset_one,
            );
        }

        mod identity_storage {
            $crate::each_case!($crate::identity_storage,
                $crate::identity_storage::Storage::$backend();
                provider_keys_are_ciphertext_bound_to_owner_and_provider,
                deleting_a_user_leaves_nothing_of_theirs,
                rate_limits_hold_across_processes,
            );
        }

        mod chat_storage {
            $crate::each_case!($crate::chat_storage,
                $crate::identity_storage::Storage::$backend();
                a_call_settled_again_and_again_counts_once,
                reservations_never_pass_a_limit_under_concurrency,
                usage_reports_cover_exactly_their_days,
                a_deployment_report_sums_every_shard_and_the_unsharded_partition,
                pending_usage_counts_the_same_before_and_after_its_fold,
                a_report_that_meets_a_fold_stays_exact,
                a_deleted_users_pending_usage_is_folded_for_the_deployment_only,
                a_tool_conversation_is_stored_and_read_back_as_turns,
                a_large_image_is_stored_across_items,
            );
        }

        mod turn_storage {
            //! Agent turns' records and events on this backend (see the suite).
            $crate::each_case!($crate::turn_storage,
                $crate::identity_storage::Storage::$backend();
                one_runner_holds_a_turn_until_its_lease_runs_out,
                a_turn_ends_once_and_a_cancel_is_seen_by_its_runner,
                a_waiting_turn_is_answered_once,
                events_read_back_in_order_from_any_point,
            );
        }

        mod workflow_storage {
            //! The worker and the run repository on this backend (see the suite).
            $crate::each_case!($crate::workflow_storage,
                $crate::workflow_storage::Flow::$backend();
                data_flows_between_steps,
                every_message_delivered_twice_changes_nothing,
                a_crash_at_each_point_of_a_step_bills_it_once,
                a_step_running_the_agent_loop_goes_on_from_its_journal_after_a_crash,
                poison_messages_go_to_the_dead_letter_queue,
                a_step_that_keeps_failing_fails_the_run_after_n_attempts,
                a_step_may_use_what_is_left_of_its_invocation,
                a_deleted_agent_fails_its_step_clearly,
                a_cancelled_run_starts_no_further_step,
                triggers_start_runs_once_and_dead_letter_the_malformed,
                an_idempotency_key_starts_one_run,
                run_costs_count_against_the_monthly_budget,
                store_round_trips_stay_as_designed,
            );
        }

        mod sweeper_storage {
            //! The sweeper's repairs on this backend (see the suite).
            $crate::each_case!($crate::sweeper_storage,
                $crate::workflow_storage::Flow::$backend();
                a_settle_left_by_an_outage_is_finished_once_by_the_sweeper,
                a_settle_whose_answer_is_lost_counts_once,
                a_settle_that_conflicts_on_contention_is_retried_and_counts_once,
                an_abandoned_reservation_is_released_after_the_stale_time,
                a_call_that_outlives_its_release_is_still_counted_once,
                a_run_whose_messages_were_lost_is_finished_after_the_sweeper_requeues_it,
                a_run_whose_step_used_up_its_attempts_is_failed_by_the_sweeper,
                a_failed_checkpoint_bills_each_provider_call_once,
            );
        }
    };
}
