//! Which tenant each agent belongs to, for the row-level security policies of the metric
//! tables. A policy written as `agent_key IN (SELECT ... FROM agents WHERE tenant_id = ...)`
//! becomes a hashed SubPlan whose build cost the planner charges to every partition on every
//! rescan; it then avoids the per-agent index scans the superuser gets (a dashboard's "latest
//! sample of every agent" ran ~80x slower). These functions make the same check a hash lookup
//! in a backend-local map, which the planner costs like any cheap function.

use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;

use super::{cache, identity};

struct AgentTenants {
    generation: u64,
    by_key: HashMap<i32, String>,
    by_id: HashMap<String, String>,
}

thread_local! {
    static AGENTS: RefCell<Option<AgentTenants>> = const { RefCell::new(None) };
}

fn load() -> AgentTenants {
    let generation = cache::generation(cache::Table::Agents);
    cache::watch_tables();
    let rows = cache::as_extension_owner(|| {
        Spi::connect(|client| {
            let mut rows = Vec::new();
            for row in client.select("SELECT agent_key, agent_id, tenant_id FROM secumon.agents", None, &[])? {
                if let (Some(key), Some(id), Some(tenant)) =
                    (row.get::<i32>(1)?, row.get::<String>(2)?, row.get::<String>(3)?)
                {
                    rows.push((key, id, tenant));
                }
            }
            Ok::<_, pgrx::spi::Error>(rows)
        })
    })
    .unwrap_or_default();
    let mut map = AgentTenants { generation, by_key: HashMap::new(), by_id: HashMap::new() };
    for (key, id, tenant) in rows {
        map.by_key.insert(key, tenant.clone());
        map.by_id.insert(id, tenant);
    }
    map
}

fn with_agents<R>(f: impl FnOnce(&AgentTenants) -> R) -> R {
    let fresh = AGENTS.with(|a| {
        a.borrow().as_ref().is_some_and(|m| m.generation == cache::generation(cache::Table::Agents))
    });
    if !fresh {
        // Filled outside the borrow: the SPI query may deliver invalidations.
        let map = load();
        AGENTS.with(|a| *a.borrow_mut() = Some(map));
    }
    AGENTS.with(|a| f(a.borrow().as_ref().expect("agent map filled above")))
}

/// For policies: whether agent `agent_key` belongs to the session's tenant. (It answers only
/// for the caller's own tenant, so it tells nobody anything about other tenants' agents.)
#[pg_extern(stable, parallel_restricted)]
fn _agent_key_visible(agent_key: Option<i32>) -> bool {
    let Some(agent_key) = agent_key else { return false };
    identity::with_statement_tenant(|tenant| {
        tenant.is_some_and(|tenant| with_agents(|m| m.by_key.get(&agent_key).is_some_and(|t| t == tenant)))
    })
}

/// For policies: whether agent `agent_id` belongs to the session's tenant.
#[pg_extern(stable, parallel_restricted)]
fn _agent_id_visible(agent_id: Option<&str>) -> bool {
    let Some(agent_id) = agent_id else { return false };
    identity::with_statement_tenant(|tenant| {
        tenant.is_some_and(|tenant| with_agents(|m| m.by_id.get(agent_id).is_some_and(|t| t == tenant)))
    })
}
