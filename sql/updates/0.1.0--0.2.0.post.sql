-- 0.1.0 -> 0.2.0, after the 0.2.0 definitions exist: build every partition's own indexes.
-- metric_samples' partitions had their unique (agent_key, time) index already and keep it.
-- This rebuilds the other indexes of every day kept, under an exclusive lock on each table.
DO $indexes$
DECLARE
    p record;
    ix record;
BEGIN
    FOR p IN SELECT parent.relname AS parent, child.relname AS child
               FROM pg_catalog.pg_inherits i
               JOIN pg_catalog.pg_class parent ON parent.oid = i.inhparent
               JOIN pg_catalog.pg_class child ON child.oid = i.inhrelid
              WHERE parent.relnamespace = 'secumon'::regnamespace AND child.relkind = 'r' LOOP
        FOR ix IN SELECT * FROM secumon._partition_indexes(p.parent) LOOP
            IF to_regclass(format('secumon_partitions.%I', p.child || '_' || ix.suffix)) IS NULL THEN
                EXECUTE format(ix.ddl, p.child || '_' || ix.suffix, format('secumon_partitions.%I', p.child));
            END IF;
        END LOOP;
    END LOOP;
END
$indexes$;
