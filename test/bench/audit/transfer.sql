\set a random(1, 1000)
\set b random(1, 999)
BEGIN;
SELECT fincore.set_tenant('00000000-0000-4000-8000-00000000a0d1');
SELECT result FROM fincore.transfer(('00000000-0000-4000-8000-' || lpad(:a::text, 12, '0'))::uuid, ('00000000-0000-4000-8000-' || lpad((1 + (:a + :b - 1) % 1000)::text, 12, '0'))::uuid, 1);
COMMIT;
