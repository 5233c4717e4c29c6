-- test/bench/audit: a tenant with 1,000 accounts; bulk_transfers(n) posts n transfers in batches of
-- 1,000 (a transaction each) to give the log records to verify.
SELECT fincore.create_tenant('audit bench', '00000000-0000-4000-8000-00000000a0d1');
BEGIN;
SELECT fincore.set_tenant('00000000-0000-4000-8000-00000000a0d1');
SELECT fincore.create_account('USD', id => ('00000000-0000-4000-8000-' || lpad(g::text, 12, '0'))::uuid)
  FROM generate_series(1, 1000) g;
COMMIT;

CREATE PROCEDURE public.bulk_transfers(n integer)
    LANGUAGE plpgsql AS $$
BEGIN
    FOR b IN 0 .. n / 1000 - 1 LOOP
        PERFORM fincore._use_tenant('00000000-0000-4000-8000-00000000a0d1');   -- no warning inside a procedure
        PERFORM fincore.create_transfers(ARRAY(
            SELECT ROW(NULL, ('00000000-0000-4000-8000-' || lpad((1 + g % 1000)::text, 12, '0'))::uuid,
                       ('00000000-0000-4000-8000-' || lpad((1 + (g + 1 + b) % 1000)::text, 12, '0'))::uuid, 1,
                       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                       NULL, NULL, NULL)::fincore.transfer_request
              FROM generate_series(1, 1000) g));
        COMMIT;
    END LOOP;
END $$;

CREATE PROCEDURE public.seal_all()
    LANGUAGE plpgsql AS $$
BEGIN
    WHILE fincore.audit_seal('00000000-0000-4000-8000-00000000a0d1', 20000) > 0 LOOP
        COMMIT;
    END LOOP;
END $$;
