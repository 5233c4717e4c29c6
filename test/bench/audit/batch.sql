\set b random(0, 999)
BEGIN;
SELECT fincore.set_tenant('00000000-0000-4000-8000-00000000a0d1');
SELECT count(*) FROM fincore.create_transfers(ARRAY(
    SELECT ROW(NULL, ('00000000-0000-4000-8000-' || lpad((1 + (g + :b) % 1000)::text, 12, '0'))::uuid,
               ('00000000-0000-4000-8000-' || lpad((1 + (g + :b + 1 + g % 7) % 1000)::text, 12, '0'))::uuid, 1,
               NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
               NULL, NULL, NULL)::fincore.transfer_request
      FROM generate_series(1, 100) g));
COMMIT;
