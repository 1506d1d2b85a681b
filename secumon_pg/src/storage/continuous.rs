//! Refreshing TimescaleDB continuous aggregates (the rollups of the timescaledb backend, see
//! sql/rollups.sql). TimescaleDB refreshes one only at the top level of a transaction of its
//! own (`CALL refresh_continuous_aggregate(...)`, which commits as it goes), while SecuMon's
//! `secumon.refresh_rollup()` is a function its job runs inside a transaction. So a short-lived
//! worker runs the refresh, as a procedure called from psql would run it, and the function waits
//! for it and reports how it ended (through `secumon._refresh_outcomes`).

use std::ffi::CString;

use pgrx::bgworkers::BackgroundWorker;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgTryBuilder;

use crate::background;
use crate::errors::raise;

const REFRESHER: &str = "secumon rollup refresher";

/// How long the refresh waits for a lock before it gives up: never forever, as whoever waits
/// for the worker may hold it.
const REFRESH_LOCK_TIMEOUT: &std::ffi::CStr = c"60s";

/// Refreshes continuous aggregate `cagg` for the buckets in [`window_start`, `window_end`)
/// (NULL start: from the first) in a worker of its own, and waits for it. NULL when it
/// succeeded, else why it failed.
#[pg_extern(volatile, parallel_unsafe)]
fn _refresh_continuous_aggregate(
    cagg: pg_sys::Oid,
    window_start: Option<TimestampWithTimeZone>,
    window_end: TimestampWithTimeZone,
) -> Option<String> {
    let start = window_start.map_or("-".to_string(), |t| pg_sys::TimestampTz::from(t).to_string());
    let end = pg_sys::TimestampTz::from(window_end);
    let args = format!("{} {start} {end}", u32::from(cagg));
    let worker = background::start_short_lived(REFRESHER, "secumon_refresh_continuous_main", &args, true)
        .unwrap_or_else(|e| {
            raise(
                PgSqlErrorCode::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
                format!("cannot start a worker to refresh a continuous aggregate: {e:?}"),
                Some("Raise max_worker_processes: the refresh needs one worker slot while it runs."),
            )
        });
    let pid = worker.wait_for_startup().ok();
    let _ = worker.wait_for_shutdown();
    let Some(pid) = pid else {
        return Some("its worker did not start".into());
    };
    Spi::get_one_with_args::<String>(
        "WITH o AS (DELETE FROM secumon._refresh_outcomes WHERE worker_pid = $1 RETURNING problem)
         SELECT coalesce((SELECT problem FROM o), CASE WHEN NOT EXISTS (SELECT 1 FROM o)
                                                       THEN 'its worker ended without a result (see the server log)' END)",
        &[pid.into()],
    )
    .unwrap_or_else(|e| Some(format!("cannot read its result: {e}")))
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn secumon_refresh_continuous_main(_arg: pg_sys::Datum) {
    let Some(args) = background::connect_short_lived() else {
        return;
    };
    let parts: Vec<&str> = args.split(' ').collect();
    let number = |i: usize| parts.get(i).and_then(|p| p.parse::<i64>().ok());
    let (Some(cagg), Some(end)) = (number(0), number(2)) else {
        log!("{REFRESHER}: bad arguments {args:?}");
        return;
    };
    let start = number(1).and_then(|t| TimestampWithTimeZone::try_from(t).ok());
    let statement = BackgroundWorker::transaction(|| {
        Spi::get_one_with_args::<String>(
            "SELECT format('CALL %I.refresh_continuous_aggregate(%L::regclass, %L::timestamptz, %L::timestamptz)',
                           (SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                             WHERE e.extname = 'timescaledb'),
                           $1::regclass::text, $2, $3)",
            &[pg_sys::Oid::from(cagg as u32).into(), start.into(), TimestampWithTimeZone::try_from(end).ok().into()],
        )
    });
    let problem = match statement {
        Ok(Some(statement)) => call_at_top_level(&statement).err(),
        Ok(None) => Some("timescaledb is not installed".into()),
        Err(e) => Some(e.to_string()),
    };
    if let Some(problem) = &problem {
        log!("{REFRESHER}: {problem}");
    }
    // SAFETY: MyProcPid is set for the life of this process.
    let me = unsafe { pg_sys::MyProcPid };
    BackgroundWorker::transaction(|| {
        if let Err(e) = Spi::run_with_args(
            "INSERT INTO secumon._refresh_outcomes (worker_pid, problem) VALUES ($1, $2)
             ON CONFLICT (worker_pid) DO UPDATE SET problem = EXCLUDED.problem",
            &[me.into(), problem.as_deref().into()],
        ) {
            log!("{REFRESHER}: cannot record the outcome: {e}");
        }
    });
}

/// Runs `statement` (one CALL) as postgres.c runs a simple query outside any transaction
/// block: in a transaction of its own, through an unnamed portal run at the top level, so the
/// procedure may commit (the portal's snapshot is the one its commits release).
fn call_at_top_level(statement: &str) -> Result<(), String> {
    let sql = CString::new(statement).map_err(|e| e.to_string())?;
    // SAFETY: a background worker between transactions starts one, as postgres.c does for each
    // query, and sets a GUC of its own session.
    unsafe {
        pg_sys::SetConfigOption(c"lock_timeout".as_ptr(), REFRESH_LOCK_TIMEOUT.as_ptr(), pg_sys::GucContext::PGC_SUSET,
                                pg_sys::GucSource::PGC_S_SESSION);
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
    }
    let outcome = PgTryBuilder::new(|| {
        // SAFETY: exec_simple_query's steps for one statement, inside the transaction started
        // above: parse, analyse and plan under a snapshot, then run the plan in a portal at the
        // top level and drop the portal. Every pointer comes from the call before it, and the
        // query text outlives the portal.
        unsafe {
            let parsed = pg_sys::pg_parse_query(sql.as_ptr());
            if pg_sys::list_length(parsed) != 1 {
                return Err("expected exactly one statement".to_string());
            }
            let raw = pg_sys::list_nth(parsed, 0) as *mut pg_sys::RawStmt;
            pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
            let queries = pg_sys::pg_analyze_and_rewrite_fixedparams(raw, sql.as_ptr(), std::ptr::null(), 0, std::ptr::null_mut());
            let plans = pg_sys::pg_plan_queries(queries, sql.as_ptr(), pg_sys::CURSOR_OPT_PARALLEL_OK as i32, std::ptr::null_mut());
            pg_sys::PopActiveSnapshot();
            let portal = pg_sys::CreatePortal(c"".as_ptr(), true, true);
            (*portal).visible = false;
            pg_sys::PortalDefineQuery(portal, std::ptr::null(), sql.as_ptr(), pg_sys::CreateCommandTag((*raw).stmt),
                                      plans, std::ptr::null_mut());
            pg_sys::PortalStart(portal, std::ptr::null_mut(), 0, std::ptr::null_mut());
            let receiver = pg_sys::CreateDestReceiver(pg_sys::CommandDest::DestNone);
            let mut completion: pg_sys::QueryCompletion = std::mem::zeroed();
            pg_sys::PortalRun(portal, std::ffi::c_long::MAX, true, true, receiver, receiver, &mut completion);
            if let Some(destroy) = (*receiver).rDestroy {
                destroy(receiver);
            }
            pg_sys::PortalDrop(portal, false);
        }
        Ok(())
    })
    .catch_others(|error| Err(background::error_message(error)))
    .execute();
    // SAFETY: ends the transaction the procedure left open (it may have committed and begun
    // others), or aborts it after an error, as postgres.c does.
    unsafe {
        if outcome.is_ok() {
            pg_sys::CommitTransactionCommand();
        } else {
            pg_sys::AbortCurrentTransaction();
        }
    }
    outcome
}
