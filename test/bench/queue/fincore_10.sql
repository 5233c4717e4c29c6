SELECT count(*) FROM fincore.enqueue_many('bench', array_fill('{"n": 1}'::jsonb, ARRAY[10]));
SELECT coalesce(array_agg(id), '{}') AS ids FROM fincore.dequeue('bench', 10) \gset
SELECT fincore.complete_many(:ids::bigint[]);
