//! Test harness for the chat services: a real Redis per test, services
//! started in-process on free ports (or as real processes, see
//! [`process`]), and the clients of the `chat-client` library (see
//! [`client`]), which behave like real ones because they are.
//!
//! Nothing here skips a test: without `redis-server` on the machine the
//! tests that need it fail, saying what to install.

pub mod app;
pub mod browser;
pub mod client;
pub mod cluster;
pub mod compose;
pub mod gateway;
pub mod process;
pub mod raw;
pub mod redis;
pub mod redis_cluster;
pub mod scenario;
pub mod slow;
pub mod subscriber;
pub mod token;
pub mod wait;

pub use app::{AppBuilder, TestApp};
pub use chat_client::Transport;
pub use redis::RedisServer;
pub use wait::eventually;

/// Settings every service a test starts gets unless the test says
/// otherwise: loopback only, and no per-client limits, since a test's
/// clients all come from one address (the limits have tests of their own,
/// which set them).
pub const TEST_DEFAULTS: [(&str, &str); 4] = [
    ("HOST", "127.0.0.1"),
    ("PUBLISH_RATE_PER_SEC", "0"),
    ("MAX_CONNECTIONS", "0"),
    ("MAX_CONNECTIONS_PER_CLIENT", "0"),
];

/// The ids of `messages`, in their order.
pub fn ids(messages: &[common::Message]) -> Vec<u64> {
    messages.iter().map(|message| message.id).collect()
}

/// Asserts `messages` are exactly ids `1..=count`, in order, without
/// printing thousands of ids when they are not.
pub fn assert_ids_1_to(messages: &[common::Message], count: u64, what: &str) {
    let got = ids(messages);
    let first_wrong = got.iter().zip(1..).find(|(id, expected)| **id != *expected);
    assert!(
        got.len() as u64 == count && first_wrong.is_none(),
        "{what}: got {} messages (first {:?}, last {:?}), first out of place: {first_wrong:?}",
        got.len(),
        got.first(),
        got.last()
    );
}

/// Lets this test process hold thousands of sockets (the soft limit is
/// often 1024).
pub fn raise_fd_limit() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
}

/// Which broker a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Redis,
    /// The in-process broker (`REDIS_URL` unset).
    Memory,
}

/// Runs a test body once per backend: `broker_tests!(name1, name2)` turns
/// `async fn name1(backend: Backend)` into the tests `name1::redis` and
/// `name1::memory`.
#[macro_export]
macro_rules! broker_tests {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis() {
                    super::$name($crate::Backend::Redis).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn memory() {
                    super::$name($crate::Backend::Memory).await;
                }
            }
        )+
    };
}

/// Runs scenarios once per transport (and, where they take a [`Backend`],
/// once per broker too):
///
/// ```ignore
/// transport_tests! {
///     name1: [sse, ws];
///     name2: [longpoll, sse, ws] on every broker;
/// }
/// ```
///
/// turns `async fn name1(transport: Transport)` into the tests `name1::sse`
/// and `name1::ws`, and `async fn name2(transport: Transport, backend:
/// Backend)` into `name2::longpoll::redis`, `name2::longpoll::memory`, and
/// so on.
#[macro_export]
macro_rules! transport_tests {
    (@transport longpoll) => { $crate::Transport::LongPoll };
    (@transport sse) => { $crate::Transport::Sse };
    (@transport ws) => { $crate::Transport::Ws };
    () => {};
    ($name:ident: [$($transport:ident),+ $(,)?] on every broker; $($rest:tt)*) => {
        mod $name {
            $(
                mod $transport {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn redis() {
                        super::super::$name(
                            $crate::transport_tests!(@transport $transport),
                            $crate::Backend::Redis,
                        )
                        .await;
                    }

                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn memory() {
                        super::super::$name(
                            $crate::transport_tests!(@transport $transport),
                            $crate::Backend::Memory,
                        )
                        .await;
                    }
                }
            )+
        }
        $crate::transport_tests!($($rest)*);
    };
    ($name:ident: [$($transport:ident),+ $(,)?]; $($rest:tt)*) => {
        mod $name {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $transport() {
                    super::$name($crate::transport_tests!(@transport $transport)).await;
                }
            )+
        }
        $crate::transport_tests!($($rest)*);
    };
}
