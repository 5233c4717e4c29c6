SELECT fincore.enqueue('bench', '{"n": 1}');
SELECT coalesce(array_agg(id), '{}') AS ids, coalesce(array_agg(attempt), '{}') AS atts FROM fincore.dequeue('bench', 1) \gset
SELECT count(*) FROM unnest(:ids::bigint[], :atts::integer[]) AS c(id, attempt), LATERAL fincore.complete(c.id, attempt => c.attempt);
