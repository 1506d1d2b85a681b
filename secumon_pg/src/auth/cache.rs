//! Backend-local caches of the signing keys, of users' token state, of which tenant each
//! agent belongs to and of which layouts its agents use, so that verifying a token and checking
//! a row's tenant cost no query.
//! A trigger on each cached table sends a relcache invalidation when it changes; PostgreSQL
//! delivers it to every backend at its next transaction (and to this backend at once, also
//! when it rolls back), and the callback below makes that table's caches stale.

use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::Cell;

/// The cached tables.
#[derive(Clone, Copy)]
pub enum Table {
    Users = 0,
    Keys = 1,
    Agents = 2,
    /// secumon._agent_layouts: which layouts (and so series) a tenant's agents use.
    AgentLayouts = 3,
}

const TABLES: usize = 4;

const NAMES: &str = "SELECT pg_catalog.to_regclass('secumon.users')::pg_catalog.oid, \
                            pg_catalog.to_regclass('secumon._jwt_keys')::pg_catalog.oid, \
                            pg_catalog.to_regclass('secumon.agents')::pg_catalog.oid, \
                            pg_catalog.to_regclass('secumon._agent_layouts')::pg_catalog.oid";

thread_local! {
    static GENERATIONS: [Cell<u64>; TABLES] = const { [Cell::new(1), Cell::new(1), Cell::new(1), Cell::new(1)] };
    /// OIDs of the cached tables; InvalidOid until known (then every invalidation counts).
    static WATCHED: Cell<[pg_sys::Oid; TABLES]> = const { Cell::new([pg_sys::InvalidOid; TABLES]) };
    static REGISTERED: Cell<bool> = const { Cell::new(false) };
}

/// Changes whenever `table` may have changed; caches compare it with the value they were
/// filled at. Read it *before* filling, so a change during the fill is not missed.
pub fn generation(table: Table) -> u64 {
    if !REGISTERED.get() {
        // SAFETY: called on the backend's main thread; the callback below only touches Cells.
        unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(on_relcache_invalidation), pg_sys::Datum::from(0)) };
        REGISTERED.set(true);
        bump_all();
    }
    GENERATIONS.with(|g| g[table as usize].get())
}

fn bump_all() {
    GENERATIONS.with(|g| g.iter().for_each(|c| c.set(c.get().wrapping_add(1))));
}

unsafe extern "C-unwind" fn on_relcache_invalidation(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    // Must not allocate, error or touch a RefCell: this runs in the middle of whatever the
    // backend was doing when it accepted invalidation messages (possibly our own SPI call).
    let watched = WATCHED.get();
    if relid == pg_sys::InvalidOid || watched.contains(&pg_sys::InvalidOid) {
        bump_all();
    } else if let Some(i) = watched.iter().position(|w| *w == relid) {
        GENERATIONS.with(|g| g[i].set(g[i].get().wrapping_add(1)));
    }
}

/// Learns the OIDs of the cached tables (they change when the extension is re-created).
pub fn watch_tables() {
    let oids = as_extension_owner(|| {
        Spi::connect(|client| {
            let row = client.select(NAMES, Some(1), &[])?.first();
            Ok::<_, pgrx::spi::Error>([
                row.get::<pg_sys::Oid>(1)?,
                row.get::<pg_sys::Oid>(2)?,
                row.get::<pg_sys::Oid>(3)?,
                row.get::<pg_sys::Oid>(4)?,
            ])
        })
    });
    WATCHED.set(match oids {
        Ok([Some(users), Some(keys), Some(agents), Some(agent_layouts)]) => [users, keys, agents, agent_layouts],
        // Not installed yet (or 0.1.0's SQL during an update): every invalidation counts.
        _ => [pg_sys::InvalidOid; TABLES],
    });
}

/// Sends a relcache invalidation for `relation` (at commit to other backends, at once here).
#[pg_extern(volatile, parallel_unsafe)]
fn _invalidate_auth_cache(relation: pg_sys::Oid) {
    // SAFETY: PostgreSQL raises an ordinary ERROR if the relation does not exist.
    unsafe { pg_sys::CacheInvalidateRelcacheByRelid(relation) };
}

/// Runs `f` with the privileges of the bootstrap superuser, like a SECURITY DEFINER function
/// owned by it, so the caches can read tables their callers may not (keys, password-less user
/// state) without row-level security recursing into the functions that fill them. Queries run
/// this way name every object and operator schema-qualified: the caller's search_path is live.
pub fn as_extension_owner<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(pg_sys::Oid, i32);
    impl Drop for Restore {
        fn drop(&mut self) {
            // Also on unwinding from an ERROR; PostgreSQL's (sub)transaction abort would
            // restore the user as well.
            // SAFETY: restores the user and security context saved by GetUserIdAndSecContext below,
            // in the backend that saved them.
            unsafe { pg_sys::SetUserIdAndSecContext(self.0, self.1) };
        }
    }
    let mut user = pg_sys::InvalidOid;
    let mut context = 0;
    // SAFETY: both calls only read or set the backend's current-user globals; the guard above puts
    // the saved values back, also when an ERROR unwinds.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        pg_sys::SetUserIdAndSecContext(
            pg_sys::Oid::from(pg_sys::BOOTSTRAP_SUPERUSERID),
            context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32 | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
        );
    }
    let _restore = Restore(user, context);
    f()
}
