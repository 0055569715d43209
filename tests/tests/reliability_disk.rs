//! Reliability: the disk fills up or fails under load, end to end (issue 26, item 4).
//!
//! The local host serves the app while clients send debits, batches, calls and Stripe webhooks;
//! then its disk stops taking writes, and later takes them again, without a restart:
//!
//! - **Full**: the state directory is a small file system (a tmpfs the test mounts: root only;
//!   elsewhere the case prints one line saying it was skipped), filled to the last byte by a
//!   ballast file; SQLite itself answers `SQLITE_FULL`. Deleting the ballast is space returning.
//! - **Failing writes**: the host's file-size limit (`RLIMIT_FSIZE`) is lowered to 0 while it
//!   runs (`prlimit --pid`), with `SIGXFSZ` ignored, so every `write()` SQLite makes fails with
//!   `EFBIG`: SQLite answers `SQLITE_IOERR_WRITE`, as for a disk that fails. Raising the limit
//!   back is the disk healing.
//!
//! While the disk refuses writes, every request is either served in full or refused 503
//! `temporarily_unavailable` with `Retry-After` (never a 500, never a partial write), and reads
//! still answer. When the disk is back, the same host serves the refused requests on their
//! retry. In the end every operation took effect exactly once (balances equal the serial total
//! to the micro-credit), replaying everything moves nothing, and the ledger's invariants hold,
//! also on the files as the faulted host left them.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use e2e::HostOptions;
use e2e::api::{App, expect, json_of};
use e2e::reliability::load::{self, Op, PLAN_CREDITS, Request, TOPUP_MICROS};
use e2e::reliability::{Scenario, micros, webhooks::signature_header};
use serde_json::Value;

const WEBHOOK_SECRET: &str = "whsec_reliability_disk";
const WS: &str = "ws-disk";
/// Names the webhooks' objects (`evt_disk_N`, `tp-disk-N`).
const TAG: &str = "disk";
/// Operations before the fault, during it (at most), and after it.
const OPS_BEFORE: usize = 40;
const OPS_DURING_MAX: usize = 400;
const OPS_AFTER: usize = 40;
/// Refusals the fault must cause before it is lifted (the test proves nothing without them).
const REFUSALS_MIN: u64 = 12;
/// Of which refusals of calls: requests without an `Idempotency-Key`, so that nothing but the
/// ledger's own write meets the disk (a keyed request's first write is its key-value record, and
/// a webhook answers 503 for any failure), and the ledger's error is what the client sees.
const CALL_REFUSALS_MIN: u64 = 3;
const CLIENTS: usize = 4;
/// Reads of the billing summary sent while the disk refuses writes.
const READS_DURING: usize = 5;
/// The tmpfs of the full-disk case: the app's two SQLite files and their WALs fit with room to
/// spare until the ballast takes the rest.
const TMPFS_SIZE: &str = "24m";

/// An operation and how many of its requests were answered.
#[derive(Debug, Clone)]
struct Pending {
    op: Op,
    step: usize,
}

/// How one request ended.
enum Answer {
    Done,
    /// 503 `temporarily_unavailable` with `Retry-After`: nothing was done.
    Refused,
}

struct Clients<'a> {
    app: &'a App,
    requests: AtomicU64,
    refusals: AtomicU64,
    call_refusals: AtomicU64,
}

impl Clients<'_> {
    fn send(
        &self,
        method: &str,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Result<Answer> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let reply = e2e::request(method, &self.app.host.url(path), Some(body), headers)
            .with_context(|| format!("{method} {path}: no answer"))?;
        match reply.status {
            // A webhook answered 200 is never sent again by Stripe: it must have been applied
            // (now or before).
            200 if path == "/webhooks/stripe" => {
                let body = json_of(&reply);
                ensure!(
                    body["outcome"] == "applied" || body["outcome"] == "duplicate",
                    "{path}: answered 200 without applying the event: {body}"
                );
                Ok(Answer::Done)
            }
            200 | 201 => Ok(Answer::Done),
            503 => {
                let error = &json_of(&reply)["error"];
                ensure!(
                    error["code"] == "temporarily_unavailable"
                        && error["message"].as_str().is_some_and(|m| !m.is_empty())
                        && reply.header("retry-after").is_some(),
                    "{method} {path}: a refusal without its reason or Retry-After: {reply:?}"
                );
                self.refusals.fetch_add(1, Ordering::Relaxed);
                if path.starts_with("/v1/calls") {
                    self.call_refusals.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Answer::Refused)
            }
            _ => bail!("{method} {path}: {} {}", reply.status, reply.body),
        }
    }

    /// Sends one request (a webhook signed now).
    fn send_request(&self, request: &Request) -> Result<Answer> {
        let mut headers = request.headers.clone();
        if request.is_webhook() {
            headers.push((
                "stripe-signature",
                signature_header(WEBHOOK_SECRET, &request.body),
            ));
        }
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.send("POST", &request.path, &request.body, &headers)
    }

    /// Sends the operation's requests from its current step; stops at the first refusal.
    fn advance(&self, pending: &mut Pending) -> Result<Answer> {
        let requests = pending.op.requests(WS, TAG)?;
        while let Some(request) = requests.get(pending.step) {
            match self.send_request(request)? {
                Answer::Done => pending.step += 1,
                Answer::Refused => return Ok(Answer::Refused),
            }
        }
        Ok(Answer::Done)
    }

    /// Runs every operation of `queue` on CLIENTS threads. `retry`: refused requests are sent
    /// again (after the `Retry-After` the host asks) until done; else an operation refused is
    /// handed back, at the step it stopped at, for later. `stop` ends the run early. Returns
    /// the operations refused and those not started.
    fn run(
        &self,
        queue: Vec<Pending>,
        retry: bool,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<(Vec<Pending>, Vec<Pending>)> {
        let queue = Mutex::new(VecDeque::from(queue));
        let refused = Mutex::new(Vec::new());
        let deadline = Instant::now() + Duration::from_secs(120);
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..CLIENTS)
                .map(|_| {
                    scope.spawn(|| -> Result<()> {
                        while !stop() {
                            let Some(mut pending) =
                                queue.lock().ok().and_then(|mut q| q.pop_front())
                            else {
                                return Ok(());
                            };
                            loop {
                                match self.advance(&mut pending)? {
                                    Answer::Done => break,
                                    Answer::Refused if retry => {
                                        ensure!(
                                            Instant::now() < deadline,
                                            "{pending:?} still refused at the deadline"
                                        );
                                        std::thread::sleep(Duration::from_millis(100));
                                    }
                                    Answer::Refused => {
                                        if let Ok(mut refused) = refused.lock() {
                                            refused.push(pending);
                                        }
                                        break;
                                    }
                                }
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            for worker in workers {
                worker
                    .join()
                    .map_err(|_| anyhow::anyhow!("a client panicked"))??;
            }
            Ok::<_, anyhow::Error>(())
        })?;
        Ok((
            refused.into_inner().unwrap_or_default(),
            queue.into_inner().unwrap_or_default().into(),
        ))
    }
}

/// How the disk is made to refuse writes, and to take them again.
trait DiskFault {
    fn name(&self) -> &'static str;
    fn start(&self, app: &App) -> Result<()>;
    fn stop(&self, app: &App) -> Result<()>;
}

/// A tmpfs of the host's own, filled by a ballast file.
struct FullDisk;

impl FullDisk {
    fn ballast(app: &App) -> PathBuf {
        app.host.state_dir().join("ballast")
    }
}

impl DiskFault for FullDisk {
    fn name(&self) -> &'static str {
        "disk full (tmpfs), SQLITE_FULL"
    }

    fn start(&self, app: &App) -> Result<()> {
        let mut ballast = std::fs::File::create(Self::ballast(app))?;
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match ballast.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(error) if error.raw_os_error() == Some(28) => break, // ENOSPC
                Err(error) => return Err(error).context("filling the disk"),
            }
        }
        // The last bytes a 64 KiB write could not take.
        while ballast.write(&[0u8; 512]).is_ok_and(|n| n > 0) {}
        Ok(())
    }

    fn stop(&self, app: &App) -> Result<()> {
        std::fs::remove_file(Self::ballast(app)).context("removing the ballast")
    }
}

/// `RLIMIT_FSIZE` of the running host set to 0: every write fails with EFBIG.
struct FailingWrites;

/// Sets the file-size limit of every process of the host (on real Spin, its trigger process
/// too: limits are inherited at a fork, not changed in children afterwards).
fn prlimit(app: &App, fsize: &str) -> Result<()> {
    for pid in app.host.pids()? {
        let status = Command::new("prlimit")
            .arg("--pid")
            .arg(pid.to_string())
            .arg(format!("--fsize={fsize}"))
            .status()
            .context("prlimit")?;
        ensure!(
            status.success(),
            "prlimit --pid {pid} --fsize={fsize}: {status}"
        );
    }
    Ok(())
}

impl DiskFault for FailingWrites {
    fn name(&self) -> &'static str {
        "failing writes (EFBIG), SQLITE_IOERR"
    }

    fn start(&self, app: &App) -> Result<()> {
        prlimit(app, "0:unlimited")
    }

    fn stop(&self, app: &App) -> Result<()> {
        prlimit(app, "unlimited:unlimited")
    }
}

/// Where the app runs: the local host, or real Spin (`spin up`, the binary `SPIN_BIN` names).
#[derive(Clone, Copy)]
enum Runtime<'a> {
    LocalHost,
    Spin(&'a std::path::Path),
}

/// The app started on `runtime` (on Spin with an empty runtime-config file: its default stores,
/// files in the state directory, as the local host's); the guard keeps that file.
fn start_app(runtime: Runtime, options: HostOptions) -> Result<(App, tempfile::TempDir)> {
    let options = options.env("SPIN_VARIABLE_STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET);
    let dir = tempfile::tempdir()?;
    let app = match runtime {
        Runtime::LocalHost => App::start_with(options)?,
        Runtime::Spin(bin) => {
            let config = e2e::stores::write_runtime_config(dir.path(), "")?;
            App::start_spin_on(bin, &config, options)?
        }
    };
    Ok((app, dir))
}

fn summary(app: &App) -> Result<Value> {
    expect(&app.owner(WS, "GET", "/billing", None)?, 200, "billing")
}

/// The load, the fault, the recovery, and the books checked at the end.
fn run_disk_fault(app: &App, fault: &dyn DiskFault, scenario: &Scenario) -> Result<()> {
    let total = OPS_BEFORE + OPS_DURING_MAX + OPS_AFTER;
    let ops: Vec<Op> = (0..total).map(|n| Op::of(n, false)).collect();
    load::prepare(app, WS, TAG, &ops)?;
    let pending = |range: std::ops::Range<usize>| -> Vec<Pending> {
        ops[range]
            .iter()
            .map(|op| Pending {
                op: op.clone(),
                step: 0,
            })
            .collect()
    };
    let clients = Clients {
        app,
        requests: AtomicU64::new(0),
        refusals: AtomicU64::new(0),
        call_refusals: AtomicU64::new(0),
    };
    let pid = app.host.pid();

    // Healthy.
    clients.run(pending(0..OPS_BEFORE), true, &|| false)?;

    // The disk refuses writes: every operation is served or refused cleanly, until enough were
    // refused; reads still answer.
    fault.start(app)?;
    let during = OPS_BEFORE..OPS_BEFORE + OPS_DURING_MAX;
    let refused_before = clients.refusals.load(Ordering::Relaxed);
    let enough = || {
        clients.refusals.load(Ordering::Relaxed) >= refused_before + REFUSALS_MIN
            && clients.call_refusals.load(Ordering::Relaxed) >= CALL_REFUSALS_MIN
    };
    let (mut refused, unstarted) = clients.run(pending(during.clone()), false, &enough)?;
    let attempted = OPS_DURING_MAX - unstarted.len();
    let served_during = attempted - refused.len();
    let refusals = clients.refusals.load(Ordering::Relaxed) - refused_before;
    let owner = format!(
        "Bearer {}",
        e2e::api::token(WS, e2e::api::Role::Owner, e2e::api::now_secs() + 3600)
    );
    let call_refusals = clients.call_refusals.load(Ordering::Relaxed);
    ensure!(
        refusals >= REFUSALS_MIN && call_refusals >= CALL_REFUSALS_MIN,
        "{}: only {refusals} refusals ({call_refusals} of calls) in {} operations",
        fault.name(),
        OPS_DURING_MAX
    );
    // Reads need no write, but SQLite may (growing its WAL index, a new connection's first
    // look): a read is answered, or refused as cleanly as a write.
    let mut reads_served = 0;
    for _ in 0..READS_DURING {
        match clients.send(
            "GET",
            "/v1/workspaces/ws-disk/billing",
            "",
            &[("authorization", &owner)],
        )? {
            Answer::Done => reads_served += 1,
            Answer::Refused => {}
        }
    }
    // The files as the faulted host leaves them keep every invariant.
    app.check_invariants()
        .context("the ledger's files while the disk refuses writes")?;
    scenario.invariants_checked();
    scenario.faults(refusals);

    // Space returns; the same host serves the refused requests on their retry, then more.
    fault.stop(app)?;
    refused.extend(unstarted);
    refused.extend(pending(during.end..total));
    clients.run(refused, true, &|| false)?;
    ensure!(
        app.host.pid() == pid && app.host.state_dir().exists(),
        "the host was restarted"
    );

    // Every operation took effect exactly once; replaying them all moves nothing.
    let expected_cost: i64 = ops.iter().map(Op::cost_micros).sum();
    let topups = ops
        .iter()
        .filter(|op| matches!(op, Op::Webhook { .. }))
        .count() as i64;
    let check = || -> Result<()> {
        let summary = summary(app)?;
        let plan = micros(summary["plan_credits_remaining"].as_str().unwrap_or(""))?;
        let wallet = micros(summary["wallet_balance"].as_str().unwrap_or(""))?;
        ensure!(
            plan == PLAN_CREDITS * 1_000_000 - expected_cost,
            "plan credits {plan}, expected {} ({summary})",
            PLAN_CREDITS * 1_000_000 - expected_cost
        );
        ensure!(
            wallet == topups * TOPUP_MICROS,
            "wallet {wallet}, expected {} ({summary})",
            topups * TOPUP_MICROS
        );
        ensure!(summary["held"] == "0", "holds left: {summary}");
        app.check_invariants()
    };
    check()?;
    scenario.invariants_checked();
    let again: Vec<Pending> = pending(0..total);
    clients.run(again, true, &|| false)?;
    check()?;
    scenario.invariants_checked();
    let requests = clients.requests.load(Ordering::Relaxed);
    scenario.requests(requests);
    eprintln!(
        "{}: {total} operations, {requests} requests, while the disk refused writes {attempted} operations were sent: {served_during} served, {} refused ({refusals} requests, {call_refusals} of calls), and {reads_served} of {READS_DURING} reads served; 0 lost, 0 doubled",
        fault.name(),
        attempted - served_during
    );
    Ok(())
}

/// A tmpfs of TMPFS_SIZE mounted on a fresh directory, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` where this machine lets no test mount a file system (not root, no
    /// `CAP_SYS_ADMIN`): the one line printed says so.
    fn mount() -> Result<Option<Self>> {
        let dir = tempfile::tempdir()?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={TMPFS_SIZE}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !mounted {
            println!(
                "skipped: the full-disk case mounts a small tmpfs, which needs root (CAP_SYS_ADMIN) on this machine"
            );
            return Ok(None);
        }
        Ok(Some(Self { dir }))
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// The full-disk case on `runtime`; `false` where no tmpfs can be mounted.
fn full_disk_on(runtime: Runtime, scenario: &str) -> Result<bool> {
    let Some(disk) = SmallDisk::mount()? else {
        return Ok(false);
    };
    let scenario = Scenario::new(scenario);
    let (app, _config) = start_app(
        runtime,
        HostOptions {
            state_dir: Some(disk.state_dir()),
            ..HostOptions::default()
        },
    )?;
    run_disk_fault(&app, &FullDisk, &scenario)?;
    drop(app);
    scenario.passed();
    Ok(true)
}

/// The failing-writes case on `runtime`.
fn failing_writes_on(runtime: Runtime, scenario: &str) -> Result<()> {
    let scenario = Scenario::new(scenario);
    // `trap '' XFSZ`: the host inherits SIGXFSZ ignored (so do the processes it starts), so a
    // write past the limit fails with EFBIG instead of killing it.
    let (app, _config) = start_app(
        runtime,
        HostOptions::default().wrapped(&["sh", "-c", "trap '' XFSZ; exec \"$@\"", "sh"]),
    )?;
    run_disk_fault(&app, &FailingWrites, &scenario)?;
    scenario.passed();
    Ok(())
}

#[test]
fn a_full_disk_refuses_writes_cleanly_and_service_resumes_when_space_returns() -> Result<()> {
    full_disk_on(Runtime::LocalHost, "disk full under load (tmpfs)").map(|_| ())
}

#[test]
fn failing_writes_are_refused_cleanly_and_service_resumes_when_the_disk_heals() -> Result<()> {
    failing_writes_on(Runtime::LocalHost, "write errors under load (EFBIG)")
}

/// Production runs on Spin: both cases again on real `spin up`, where `SPIN_BIN` names one.
#[test]
fn on_real_spin_a_full_disk_and_failing_writes_are_refused_cleanly_and_service_resumes()
-> Result<()> {
    let Some(bin) = e2e::spin::spin_bin() else {
        println!("skipped: SPIN_BIN not set (a full disk and failing writes on real spin up)");
        return Ok(());
    };
    full_disk_on(Runtime::Spin(&bin), "disk full under load (Spin)")?;
    failing_writes_on(Runtime::Spin(&bin), "write errors under load (Spin)")
}
