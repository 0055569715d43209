//! Holds not extended in time are posted at their reserved amount (R5): by the scheduled sweep,
//! and before an authorization or heartbeat on a workspace that has some.

use crate::row::{i, t, text};
use crate::storage::Storage;
use crate::{Result, tx};

use super::EXPIRY_BATCH_MAX;
use super::end::decide_post;
use super::read::{read_call, write_for_call};

/// Posts one workspace's holds whose timeout passed (at most [`EXPIRY_BATCH_MAX`]), at their
/// reserved amount (R5), at the workspace's time `now_secs`. Returns how many. Runs inside the
/// caller's write transaction: an authorization or a heartbeat that read overdue holds on its
/// workspace posts them first, so it is decided on what they leave.
pub async fn expire_overdue<S: Storage>(
    db: &S,
    workspace_id: &str,
    now_secs: i64,
) -> Result<usize> {
    post_overdue(db, Some(workspace_id), now_secs, EXPIRY_BATCH_MAX).await
}

/// The expiry sweep for the scheduler: posts up to `limit` overdue holds of every workspace in
/// one transaction.
pub async fn expire_holds<S: Storage>(db: &S, real_now_secs: i64, limit: i64) -> Result<usize> {
    tx::immediate(db, async |db| {
        post_overdue(db, None, real_now_secs, limit).await
    })
    .await
}

/// Posts holds whose timeout passed, at their reserved amount (R5): for one workspace or, with
/// `None`, for all, each at its workspace's time (test clock, else `now_secs`). Returns how many.
async fn post_overdue<S: Storage>(
    db: &S,
    workspace_id: Option<&str>,
    now_secs: i64,
    limit: i64,
) -> Result<usize> {
    // Two statements rather than `(?2 IS NULL OR workspace_id = ?2)`: SQLite cannot pick an
    // index for that, so one workspace's check (every call authorization) scanned every active
    // call of every workspace.
    let filter = if workspace_id.is_some() {
        "c.workspace_id = ?2"
    } else {
        "?2 IS NULL"
    };
    let sql = format!(
        "SELECT c.call_id FROM calls c WHERE c.status = 'active' AND {filter}
           AND c.expires_at <= COALESCE((SELECT test_clock_at FROM workspaces w WHERE w.id = c.workspace_id), ?1)
         ORDER BY c.expires_at LIMIT ?3"
    );
    let workspace_param = workspace_id.map_or(crate::SqlValue::Null, t);
    let rows = db
        .query(
            &sql,
            &[
                i(now_secs),
                workspace_param,
                i(limit.clamp(1, EXPIRY_BATCH_MAX)),
            ],
        )
        .await?;
    for row in &rows {
        // Each hold expires at its own workspace's time (a test clock, or the real time), as the
        // state left by the holds posted before it.
        let state = read_call(db, &text(row, 0)?, now_secs).await?;
        let (post, _) = decide_post(&state, state.call.reserved_secs, "expired")?;
        write_for_call(db, post, &state, now_secs, false).await?;
    }
    Ok(rows.len())
}
