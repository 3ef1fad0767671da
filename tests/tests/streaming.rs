//! The scenarios every streaming transport must pass (tests/src/scenario.rs),
//! run per transport: `name::sse`, `name::ws`, and `name::longpoll` where
//! a run of polls following its cursor can be put through the same; those
//! about the transport rather than Redis also against the in-process broker
//! (`name::sse::redis`, `name::sse::memory`). What belongs to one
//! transport (headers, framing, close codes, error frames) is in its own
//! file.

use chat_client::{Resume, Transport};
use chat_tests::Backend;
use chat_tests::scenario::{
    a_client_that_falls_behind_further_than_history_is_ended,
    a_client_that_falls_behind_is_caught_up_from_history,
    a_client_that_never_reads_is_cut_off_without_slowing_others_or_growing_memory,
    a_cursor_older_than_history_gets_a_gap_first,
    a_thousand_clients_each_receive_a_burst_of_100_in_order,
    redis_restarted_mid_stream_clients_keep_going_without_a_gap,
    resume_gets_exactly_the_missed_messages,
    resume_while_a_poster_keeps_posting_has_no_gap_and_no_duplicate,
};
use chat_tests::transport_tests;

transport_tests! {
    resume_with_after_gets_exactly_the_missed_messages: [sse, ws] on every broker;
    resume_while_a_poster_keeps_posting_has_no_gap_and_no_duplicate:
        [longpoll, sse, ws] on every broker;
    a_cursor_older_than_history_gets_a_gap_first: [sse, ws] on every broker;
    a_client_that_never_reads_is_cut_off_without_slowing_others_or_growing_memory: [sse, ws];
    a_client_that_falls_behind_is_caught_up_from_history: [sse, ws];
    a_client_that_falls_behind_further_than_history_is_ended: [sse, ws];
    a_thousand_clients_each_receive_a_burst_of_100_in_order: [sse, ws];
    redis_restarted_mid_stream_clients_keep_going_without_a_gap: [longpoll, sse, ws];
}

async fn resume_with_after_gets_exactly_the_missed_messages(
    transport: Transport,
    backend: Backend,
) {
    resume_gets_exactly_the_missed_messages(transport, backend, Resume::After).await;
}
