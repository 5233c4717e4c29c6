SELECT fincore.enqueue('bench', '{"n": 1}');
SELECT coalesce((SELECT max(id) FROM fincore.complete_and_dequeue(NULLIF(:prev::bigint, 0), 'bench')), 0) AS prev \gset
