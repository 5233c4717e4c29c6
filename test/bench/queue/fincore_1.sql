SELECT fincore.enqueue('bench', '{"n": 1}');
SELECT coalesce(array_agg(id), '{}') AS ids FROM fincore.dequeue('bench', 1) \gset
SELECT count(*) FROM unnest(:ids::bigint[]) AS id, LATERAL fincore.complete(id);
