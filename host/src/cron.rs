//! Cron triggers as the spin-trigger-plugins cron trigger defines them: six or seven fields
//! (seconds first, optional year), and a component export
//! `handle-cron-event: async func(metadata: metadata) -> result<_, error>`.
//!
//! The export is looked up by name, not by package, so components built against either
//! `fermyon:spin-cron@2.0.0` or `spin:cron@3.0.0` work (the types are structurally identical).

use crate::ctx::{LoadedComponent, new_store};
use anyhow::{Context as _, Result, bail};
use croner::parser::{CronParser, Seconds, Year};
use wasmtime::Engine;
use wasmtime::component::{ComponentType, Lift, Lower};

/// One cron schedule of the application.
pub struct CronSchedule {
    /// Component to run.
    pub component: String,
    /// The parsed expression.
    pub cron: croner::Cron,
    /// The expression as written.
    pub expression: String,
}

/// `cron-types.metadata`.
#[derive(ComponentType, Lower, Clone, Copy, Debug)]
#[component(record)]
struct Metadata {
    timestamp: u64,
}

/// `cron-types.error`.
#[derive(ComponentType, Lift, Debug)]
#[component(variant)]
enum CronError {
    #[component(name = "other")]
    Other(String),
}

/// Parses a cron expression of six or seven fields (seconds first, optional year).
pub fn parse(expression: &str) -> Result<croner::Cron> {
    let fields = expression.split_whitespace().count();
    if !(6..=7).contains(&fields) {
        bail!(
            "cron_expression {expression:?} has {fields} fields; \
             expected 6 or 7 (sec min hour day month weekday [year])"
        );
    }
    CronParser::builder()
        .seconds(Seconds::Required)
        .year(Year::Optional)
        .build()
        .parse(expression)
        .with_context(|| format!("invalid cron_expression {expression:?}"))
}

/// Runs `comp`'s cron export once in a fresh instance. `Ok(Err(msg))` is the guest's error.
pub async fn fire(
    engine: &Engine,
    comp: &LoadedComponent,
    timestamp_secs: u64,
) -> Result<std::result::Result<(), String>> {
    let mut store = new_store(engine, comp);
    let instance = comp.pre.instantiate_async(&mut store).await?;
    let func = instance
        .get_typed_func::<(Metadata,), (std::result::Result<(), CronError>,)>(
            &mut store,
            "handle-cron-event",
        )
        .map_err(anyhow::Error::from)
        .with_context(|| {
            format!(
                "component `{}` does not export handle-cron-event",
                comp.env.name
            )
        })?;
    let meta = Metadata {
        timestamp: timestamp_secs,
    };
    let (result,) = store
        .run_concurrent(async move |accessor| func.call_concurrent(accessor, (meta,)).await)
        .await??;
    Ok(result.map_err(|CronError::Other(msg)| msg))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Fires `comp` on `schedule` until the task is dropped; a late event is skipped, not queued.
pub async fn run_schedule(engine: &Engine, comp: &LoadedComponent, schedule: &CronSchedule) {
    loop {
        let now = chrono::Utc::now();
        let next = match schedule.cron.find_next_occurrence(&now, false) {
            Ok(next) => next,
            Err(e) => {
                eprintln!(
                    "cron `{}` ({}): no next occurrence: {e}",
                    schedule.component, schedule.expression
                );
                return;
            }
        };
        let wait = (next - now).to_std().unwrap_or_default();
        tokio::time::sleep(wait).await;
        match fire(engine, comp, now_secs()).await {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => eprintln!("cron `{}` returned an error: {msg}", schedule.component),
            Err(e) => eprintln!("cron `{}` failed: {e:#}", schedule.component),
        }
    }
}

/// Current time in seconds since the epoch (the `timestamp` an on-demand fire passes).
pub fn timestamp_now() -> u64 {
    now_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_and_seven_fields() {
        assert!(parse("0 * * * * *").is_ok());
        assert!(parse("* * * * * * 2030").is_ok());
        assert!(parse("* * * * *").is_err());
        assert!(parse("nonsense a b c d e").is_err());
    }
}
