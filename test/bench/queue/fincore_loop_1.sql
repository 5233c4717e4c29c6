SELECT fincore.enqueue('bench', '{"n": 1}');
SELECT coalesce(j.id, 0) AS prev, coalesce(j.attempt, 0) AS att
  FROM (SELECT 1) AS one
  LEFT JOIN LATERAL fincore.complete_and_dequeue(NULLIF(:prev::bigint, 0), 'bench', attempt => NULLIF(:att::integer, 0)) AS j ON true \gset
