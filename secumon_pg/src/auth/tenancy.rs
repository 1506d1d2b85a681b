//! Which agents belong to the session's tenant, for the row-level security policies of the
//! metric tables. A policy written as `agent_key IN (SELECT ... FROM agents WHERE tenant_id =
//! ...)` becomes a hashed SubPlan whose build cost the planner charges to every partition on
//! every rescan; it then avoids the per-agent index scans the superuser gets (a dashboard's
//! "latest sample of every agent" ran ~80x slower). These functions make the same check a
//! lookup in a backend-local set, which the planner costs like any cheap function. The same
//! holds for the layouts and series a tenant's agents use (`_layout_id_visible`,
//! `_series_id_visible`, the policies of metric_layouts and metric_series).

use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;

use super::{cache, identity};

/// The agents of the session's tenant in one statement.
struct TenantAgents {
    statement: (i64, u32, u64, u64),
    generation: u64,
    tenant: Option<Rc<str>>,
    /// Indexed by agent_key (a small dense identity).
    keys: Vec<bool>,
    ids: HashSet<String>,
}

thread_local! {
    static VISIBLE: RefCell<Option<TenantAgents>> = const { RefCell::new(None) };
}

fn load(tenant: &str) -> Vec<(i32, String)> {
    cache::watch_tables();
    cache::as_extension_owner(|| {
        Spi::connect(|client| {
            let mut rows = Vec::new();
            let agents = client.select(
                "SELECT agent_key, agent_id FROM secumon.agents WHERE tenant_id OPERATOR(pg_catalog.=) $1",
                None,
                &[tenant.into()],
            )?;
            for row in agents {
                if let (Some(key), Some(id)) = (row.get::<i32>(1)?, row.get::<String>(2)?) {
                    rows.push((key, id));
                }
            }
            Ok::<_, pgrx::spi::Error>(rows)
        })
    })
    .unwrap_or_default()
}

/// Runs `f` on the agents of the session's tenant (none without a tenant). The set is rebuilt
/// when the statement, the identity or secumon.agents changed; the usual path is a comparison.
fn visible(f: impl FnOnce(&TenantAgents) -> bool) -> bool {
    let statement = identity::statement_key();
    let generation = cache::generation(cache::Table::Agents);
    let fresh = VISIBLE.with(|v| {
        v.borrow()
            .as_ref()
            .is_some_and(|v| v.statement == statement && v.generation == generation)
    });
    if !fresh {
        let tenant = identity::statement_tenant();
        let reusable = VISIBLE.with(|v| {
            v.borrow()
                .as_ref()
                .is_some_and(|v| v.generation == generation && v.tenant == tenant)
        });
        if reusable {
            VISIBLE.with(|v| {
                if let Some(v) = v.borrow_mut().as_mut() {
                    v.statement = statement;
                }
            });
        } else {
            // Queried outside any borrow: the SPI query may deliver invalidations.
            let rows = tenant.as_deref().map(load).unwrap_or_default();
            let mut agents = TenantAgents {
                statement,
                generation,
                tenant,
                keys: Vec::new(),
                ids: HashSet::new(),
            };
            for (key, id) in rows {
                if let Ok(index) = usize::try_from(key) {
                    if index >= agents.keys.len() {
                        agents.keys.resize(index + 1, false);
                    }
                    agents.keys[index] = true;
                }
                agents.ids.insert(id);
            }
            VISIBLE.with(|v| *v.borrow_mut() = Some(agents));
        }
    }
    VISIBLE.with(|v| v.borrow().as_ref().is_some_and(f))
}

/// For policies: whether agent `agent_key` belongs to the session's tenant. (It answers only
/// for the caller's own tenant, so it tells nobody anything about other tenants' agents.)
#[pg_extern(stable, parallel_restricted)]
fn _agent_key_visible(agent_key: Option<i32>) -> bool {
    let Some(index) = agent_key.and_then(|k| usize::try_from(k).ok()) else {
        return false;
    };
    visible(|agents| agents.keys.get(index).copied().unwrap_or(false))
}

/// For policies: whether agent `agent_id` belongs to the session's tenant.
#[pg_extern(stable, parallel_restricted)]
fn _agent_id_visible(agent_id: Option<&str>) -> bool {
    let Some(agent_id) = agent_id else { return false };
    visible(|agents| agents.ids.contains(agent_id))
}

/// The layouts, and the series in them, that the agents of the session's tenant stored samples
/// with (secumon._agent_layouts), for one statement.
struct TenantLayouts {
    statement: (i64, u32, u64, u64),
    generations: (u64, u64),
    tenant: Option<Rc<str>>,
    layouts: HashSet<i32>,
    series: HashSet<i64>,
}

thread_local! {
    static LAYOUTS: RefCell<Option<TenantLayouts>> = const { RefCell::new(None) };
}

fn load_layouts(tenant: &str) -> (HashSet<i32>, HashSet<i64>) {
    cache::watch_tables();
    let rows = cache::as_extension_owner(|| {
        Spi::connect(|client| {
            let mut layouts = HashSet::new();
            let mut series = HashSet::new();
            let rows = client.select(
                "SELECT l.layout_id, l.series_ids FROM secumon._agent_layouts u \
                   JOIN secumon.agents a ON a.agent_key OPERATOR(pg_catalog.=) u.agent_key \
                   JOIN secumon.metric_layouts l ON l.layout_id OPERATOR(pg_catalog.=) u.layout_id \
                  WHERE a.tenant_id OPERATOR(pg_catalog.=) $1",
                None,
                &[tenant.into()],
            )?;
            for row in rows {
                if let Some(layout) = row.get::<i32>(1)? {
                    layouts.insert(layout);
                }
                if let Some(ids) = row.get::<Vec<Option<i64>>>(2)? {
                    series.extend(ids.into_iter().flatten());
                }
            }
            Ok::<_, pgrx::spi::Error>((layouts, series))
        })
    });
    rows.unwrap_or_default()
}

/// Runs `f` on the layouts of the session's tenant (none without a tenant); rebuilt like
/// [`visible`]'s set when the statement, the identity, the agents or the pairs changed.
fn layouts_visible(f: impl FnOnce(&TenantLayouts) -> bool) -> bool {
    let statement = identity::statement_key();
    let generations = (cache::generation(cache::Table::Agents), cache::generation(cache::Table::AgentLayouts));
    let fresh = LAYOUTS.with(|v| {
        v.borrow().as_ref().is_some_and(|v| v.statement == statement && v.generations == generations)
    });
    if !fresh {
        let tenant = identity::statement_tenant();
        let reusable = LAYOUTS.with(|v| {
            v.borrow().as_ref().is_some_and(|v| v.generations == generations && v.tenant == tenant)
        });
        if reusable {
            LAYOUTS.with(|v| {
                if let Some(v) = v.borrow_mut().as_mut() {
                    v.statement = statement;
                }
            });
        } else {
            // Queried outside any borrow: the SPI query may deliver invalidations.
            let (layouts, series) = tenant.as_deref().map(load_layouts).unwrap_or_default();
            LAYOUTS.with(|v| *v.borrow_mut() = Some(TenantLayouts { statement, generations, tenant, layouts, series }));
        }
    }
    LAYOUTS.with(|v| v.borrow().as_ref().is_some_and(f))
}

/// For policies: whether an agent of the session's tenant stored samples with layout
/// `layout_id`.
#[pg_extern(stable, parallel_restricted)]
fn _layout_id_visible(layout_id: Option<i32>) -> bool {
    let Some(layout_id) = layout_id else { return false };
    layouts_visible(|tenant| tenant.layouts.contains(&layout_id))
}

/// For policies: whether an agent of the session's tenant reports series `series_id`.
#[pg_extern(stable, parallel_restricted)]
fn _series_id_visible(series_id: Option<i64>) -> bool {
    let Some(series_id) = series_id else { return false };
    layouts_visible(|tenant| tenant.series.contains(&series_id))
}
