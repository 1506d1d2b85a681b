-- Least privilege: nothing is granted to PUBLIC; each SecuMon role gets exactly what it needs.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA secumon FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA secumon FROM PUBLIC;
REVOKE ALL ON SCHEMA secumon_partitions FROM PUBLIC;

GRANT USAGE ON SCHEMA secumon TO secumon_admin, secumon_reader, secumon_agent;

-- Agents: two functions, no table access at all.
GRANT EXECUTE ON FUNCTION secumon.register_agent(text, text, text, text, jsonb) TO secumon_agent;
GRANT EXECUTE ON FUNCTION secumon.ingest(text, timestamptz, text[], float8[], jsonb, jsonb, jsonb) TO secumon_agent;

-- Readers: the public relations and read-only helpers.
GRANT USAGE ON SCHEMA secumon_partitions TO secumon_reader, secumon_admin;
GRANT SELECT ON secumon.agents, secumon.tenants, secumon.metric_layouts, secumon.metric_samples,
                secumon.metrics, secumon.disk_metrics, secumon.network_metrics, secumon.process_metrics,
                secumon.partitions, secumon.jobs, secumon.storage_policies
   TO secumon_reader, secumon_admin;
GRANT EXECUTE ON FUNCTION secumon.health() TO secumon_reader, secumon_admin;

-- Admins: manage agents, tenants, storage policies and jobs, back-fill metrics.
GRANT INSERT, UPDATE, DELETE ON secumon.agents, secumon.tenants, secumon.storage_policies TO secumon_admin;
GRANT INSERT ON secumon.metrics TO secumon_admin;
GRANT EXECUTE ON FUNCTION secumon.register_agent(text, text, text, text, jsonb),
                          secumon.ingest(text, timestamptz, text[], float8[], jsonb, jsonb, jsonb),
                          secumon.run_job(text),
                          secumon.alter_job(text, interval, boolean, timestamptz)
   TO secumon_admin;
