//! Test harness: the app's API as its clients use it, localstripe, faults, and the checks the
//! end-to-end tests share. Running the host, the stores and the credentials is `local-run`'s
//! (shared with the bench), re-exported here under the names the tests use.

#![warn(missing_docs)]

pub mod api;
pub mod faults;
pub mod receiver;
pub mod reliability;
pub mod stripe;

pub use local_run::{
    HostOptions, Reply, START_TIMEOUT, TestHost, get, host_binary, hrana, post_json, request,
    shared_cache_dir, spin, stores, workspace_root,
};

use std::time::{Duration, Instant};

/// Polls `check` every 50 ms until it returns `Some` or `timeout` elapses.
pub fn wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
