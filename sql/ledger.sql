--
-- ledger: accounts, transfers, holds, reversals, batches, balances and verify,
-- as one story with fixed ids so that the output is exact.
--
SET search_path = fincore, public;
SELECT create_tenant('Ledger test', '0e7f3a52-2b1b-4f7e-8d1e-5a8e9c1d2f30') IS NOT NULL AS tenant;
-- A session-level tenant (superuser only): every statement below runs on its own,
-- so that an error does not abort the ones after it.
SET fincore.tenant = '0e7f3a52-2b1b-4f7e-8d1e-5a8e9c1d2f30';

-- Accounts: a bank (world) account, two customer wallets (no overdraft), one with an
-- overdraft of 50.00, a merchant with history, and a hot fee account.
SELECT create_account('USD', id => 'a0000000-0000-4000-8000-000000000001', code => 1) AS bank,
       create_account('USD', id => 'a0000000-0000-4000-8000-000000000002', flags => '{debits_must_not_exceed_credits}') AS alice,
       create_account('USD', id => 'a0000000-0000-4000-8000-000000000003', flags => '{debits_must_not_exceed_credits}',
                      credit_limit => 5000) AS bob,
       create_account('USD', id => 'a0000000-0000-4000-8000-000000000004', flags => '{history}', external_ref => 'merchant-42') AS merchant,
       create_account('USD', id => 'a0000000-0000-4000-8000-000000000005', flags => '{hot}') AS fees,
       create_account('EUR', id => 'a0000000-0000-4000-8000-000000000006') AS euro,
       create_account('EUR', id => 'a0000000-0000-4000-8000-000000000007') AS euro_bank;
-- Creating again with the same fields is a no-op; with other fields an error.
SELECT create_account('USD', id => 'a0000000-0000-4000-8000-000000000002', flags => '{debits_must_not_exceed_credits}') AS again;
SELECT create_account('EUR', id => 'a0000000-0000-4000-8000-000000000002', flags => '{debits_must_not_exceed_credits}');
SELECT create_account('USD', external_ref => 'merchant-42');
SELECT id, currency, code, flags, credit_limit, status, external_ref FROM account_balances ORDER BY id;

-- A top-up: the bank pays 100.00 into Alice's wallet.
SELECT result, kind, amount FROM transfer('a0000000-0000-4000-8000-000000000001', 'a0000000-0000-4000-8000-000000000002',
    10000, id => 'b0000000-0000-4000-8000-000000000001');
-- The same id again: nothing changes, the original comes back.
SELECT result, kind, amount FROM transfer('a0000000-0000-4000-8000-000000000001', 'a0000000-0000-4000-8000-000000000002',
    10000, id => 'b0000000-0000-4000-8000-000000000001');
SELECT transfer('a0000000-0000-4000-8000-000000000001', 'a0000000-0000-4000-8000-000000000002',
    9999, id => 'b0000000-0000-4000-8000-000000000001');
-- With a fincore.amount (its currency must be the accounts').
SELECT result, amount FROM transfer('a0000000-0000-4000-8000-000000000001', 'a0000000-0000-4000-8000-000000000004',
    '12.50 USD'::amount, id => 'b0000000-0000-4000-8000-000000000002');
SELECT transfer('a0000000-0000-4000-8000-000000000001', 'a0000000-0000-4000-8000-000000000004', '12.50 EUR'::amount);

-- Alice cannot overdraw; Bob can, down to -50.00.
SELECT transfer('a0000000-0000-4000-8000-000000000002', 'a0000000-0000-4000-8000-000000000004', 10001);
SELECT result, amount FROM transfer('a0000000-0000-4000-8000-000000000003', 'a0000000-0000-4000-8000-000000000004',
    5000, id => 'b0000000-0000-4000-8000-000000000003');
SELECT transfer('a0000000-0000-4000-8000-000000000003', 'a0000000-0000-4000-8000-000000000004', 1);

-- A card hold of 40.00 on Alice's wallet, captured for 25.00: the rest is released.
SELECT result, kind, amount FROM transfer('a0000000-0000-4000-8000-000000000002', 'a0000000-0000-4000-8000-000000000004',
    4000, id => 'b0000000-0000-4000-8000-000000000004', pending => true);
SELECT debits_pending, debits_posted, credits_posted, posted, available FROM balance('a0000000-0000-4000-8000-000000000002');
-- The hold counts against the limit: only 60.00 are left to spend.
SELECT transfer('a0000000-0000-4000-8000-000000000002', 'a0000000-0000-4000-8000-000000000004', 6001);
SELECT result, kind, amount, pending_id FROM post_pending('b0000000-0000-4000-8000-000000000004', 2500,
    id => 'b0000000-0000-4000-8000-000000000005');
SELECT debits_pending, debits_posted, credits_posted, posted, available FROM balance('a0000000-0000-4000-8000-000000000002');
-- A hold resolves once.
SELECT post_pending('b0000000-0000-4000-8000-000000000004');
SELECT void_pending('b0000000-0000-4000-8000-000000000004');
-- Post more than the hold, post what is not a hold, post nothing.
SELECT result FROM transfer('a0000000-0000-4000-8000-000000000002', 'a0000000-0000-4000-8000-000000000004',
    1000, id => 'b0000000-0000-4000-8000-000000000006', pending => true);
SELECT post_pending('b0000000-0000-4000-8000-000000000006', 1001);
SELECT post_pending('b0000000-0000-4000-8000-000000000001');
SELECT post_pending('b0000000-0000-4000-8000-0000000000ff');
SELECT result, kind, amount FROM void_pending('b0000000-0000-4000-8000-000000000006', id => 'b0000000-0000-4000-8000-000000000007');
SELECT result, kind FROM void_pending('b0000000-0000-4000-8000-000000000006', id => 'b0000000-0000-4000-8000-000000000007');

-- A P2P transfer, with a fee to the hot fee account, then a partial refund.
SELECT result FROM transfer('a0000000-0000-4000-8000-000000000002', 'a0000000-0000-4000-8000-000000000003',
    2000, id => 'b0000000-0000-4000-8000-000000000008', metadata => '{"memo": "dinner"}');
SELECT result FROM transfer('a0000000-0000-4000-8000-000000000002', 'a0000000-0000-4000-8000-000000000005',
    30, id => 'b0000000-0000-4000-8000-000000000009');
SELECT result, kind, amount, reversal_of FROM reverse('b0000000-0000-4000-8000-000000000008', 500,
    id => 'b0000000-0000-4000-8000-00000000000a');
SELECT result, kind, amount FROM reverse('b0000000-0000-4000-8000-000000000008', id => 'b0000000-0000-4000-8000-00000000000b');
-- (Schema-qualified: an untyped literal would pick pg_catalog.reverse(text).)
SELECT fincore.reverse('b0000000-0000-4000-8000-000000000008', 1);
SELECT fincore.reverse('b0000000-0000-4000-8000-000000000006');

-- Wrong requests.
SELECT transfer('a0000000-0000-4000-8000-000000000002', 'a0000000-0000-4000-8000-000000000002', 1);
SELECT transfer('a0000000-0000-4000-8000-000000000002', 'a0000000-0000-4000-8000-000000000003', -1);
SELECT transfer('a0000000-0000-4000-8000-000000000002', 'a0000000-0000-4000-8000-000000000006', 1);
SELECT transfer('a0000000-0000-4000-8000-000000000002', 'a0000000-0000-4000-8000-0000000000ff', 1);
SELECT transfer('a0000000-0000-4000-8000-000000000002', 'a0000000-0000-4000-8000-000000000003', 1, timeout => '1 hour');
SELECT transfer('a0000000-0000-4000-8000-000000000002', 'a0000000-0000-4000-8000-000000000003', 1, pending => true,
    timeout => '-1 second');

-- Frozen and closed accounts.
SELECT freeze_account('a0000000-0000-4000-8000-000000000003');
SELECT transfer('a0000000-0000-4000-8000-000000000002', 'a0000000-0000-4000-8000-000000000003', 1);
SELECT unfreeze_account('a0000000-0000-4000-8000-000000000003');
SELECT result FROM transfer('a0000000-0000-4000-8000-000000000007', 'a0000000-0000-4000-8000-000000000006', 100, pending => true,
    id => 'b0000000-0000-4000-8000-00000000000c');
SELECT close_account('a0000000-0000-4000-8000-000000000006');
SELECT result, kind FROM void_pending('b0000000-0000-4000-8000-00000000000c');
SELECT close_account('a0000000-0000-4000-8000-000000000006');
SELECT close_account('a0000000-0000-4000-8000-000000000006');
SELECT unfreeze_account('a0000000-0000-4000-8000-000000000006');
SELECT transfer('a0000000-0000-4000-8000-000000000007', 'a0000000-0000-4000-8000-000000000006', 1);
SELECT freeze_account('a0000000-0000-4000-8000-0000000000ff');

-- A batch: independent items, a linked chain that fails as a whole, and an open chain.
SELECT index, id, result FROM create_transfers(ARRAY[
    ROW('c0000000-0000-4000-8000-000000000001', 'a0000000-0000-4000-8000-000000000001', 'a0000000-0000-4000-8000-000000000002',
        100, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
    ROW('c0000000-0000-4000-8000-000000000002', 'a0000000-0000-4000-8000-000000000002', 'a0000000-0000-4000-8000-000000000004',
        100, NULL, NULL, NULL, NULL, NULL, NULL, true, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
    ROW('c0000000-0000-4000-8000-000000000003', 'a0000000-0000-4000-8000-000000000002', 'a0000000-0000-4000-8000-000000000004',
        99999999, NULL, NULL, NULL, NULL, NULL, NULL, false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
    ROW('b0000000-0000-4000-8000-000000000001', 'a0000000-0000-4000-8000-000000000001', 'a0000000-0000-4000-8000-000000000002',
        10000, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
    ROW('b0000000-0000-4000-8000-000000000002', 'a0000000-0000-4000-8000-000000000001', 'a0000000-0000-4000-8000-000000000002',
        1250, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
    ROW('c0000000-0000-4000-8000-000000000004', 'a0000000-0000-4000-8000-000000000001', 'a0000000-0000-4000-8000-000000000003',
        300, NULL, true, NULL, NULL, NULL, NULL, true, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
    ROW('c0000000-0000-4000-8000-000000000005', NULL, NULL, 200, NULL, NULL, NULL,
        'c0000000-0000-4000-8000-000000000004', NULL, NULL, false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
    ROW('c0000000-0000-4000-8000-000000000006', 'a0000000-0000-4000-8000-000000000001', 'a0000000-0000-4000-8000-000000000002',
        1, NULL, NULL, NULL, NULL, NULL, NULL, true, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
]::transfer_request[]);

-- Balances, the merchant's history, and the books.
SELECT id, debits_pending, debits_posted, credits_pending, credits_posted FROM account_balances ORDER BY id;
SELECT rollup_hot_accounts() AS rolled_up;
SELECT count(*) AS deltas_left FROM account_deltas;
SELECT (SELECT count(*) FROM account_history WHERE account_id = 'a0000000-0000-4000-8000-000000000004') AS history_rows,
       (SELECT count(*) FROM transfers WHERE 'a0000000-0000-4000-8000-000000000004' IN (debit_account_id, credit_account_id)) AS transfers;
SELECT posted FROM balance('a0000000-0000-4000-8000-000000000004',
    (SELECT created_at FROM transfers WHERE id = 'b0000000-0000-4000-8000-000000000003')) AS merchant_after_bob;
SELECT posted FROM balance('a0000000-0000-4000-8000-000000000002',
    (SELECT created_at FROM transfers WHERE id = 'b0000000-0000-4000-8000-000000000005')) AS alice_after_capture;
SELECT posted, available FROM balance('a0000000-0000-4000-8000-000000000002', '2000-01-01') AS alice_in_2000;
SELECT kind, amount FROM account_transfers('a0000000-0000-4000-8000-000000000002') ORDER BY created_at, id;
SELECT * FROM verify();

-- Fees: posted as a linked transfer from the payer to the (hot) fee account, in the same call.
SELECT define_fee_schedule('p2p', 'USD', '{"components": [{"type": "percentage", "rate": "0.01"},
                                                          {"type": "flat", "amount": 10}]}',
                           effective_from => '2000-01-01') IS NOT NULL AS defined;
-- On top: Alice pays 10.00 + 0.20 fee; Bob gets 10.00.
SELECT result, amount, fee, fee_transfer_id IS NOT NULL AS has_fee_leg
  FROM transfer('a0000000-0000-4000-8000-000000000002', 'a0000000-0000-4000-8000-000000000003', 1000,
                id => 'd0000000-0000-4000-8000-000000000001', fee_schedule => 'p2p',
                fee_account => 'a0000000-0000-4000-8000-000000000005', metadata => '{"memo": "rent share"}');
SELECT kind, amount, metadata->>'memo' AS memo, metadata->'fee'->>'fee' AS fee, metadata->'fee'->>'mode' AS mode,
       metadata->'fee'->'components' AS components
  FROM transfers WHERE id = 'd0000000-0000-4000-8000-000000000001';
SELECT t.amount, t.debit_account_id = 'a0000000-0000-4000-8000-000000000002' AS from_alice,
       t.credit_account_id = 'a0000000-0000-4000-8000-000000000005' AS to_fees, t.metadata->>'schedule' AS schedule
  FROM transfers t WHERE t.metadata->>'fee_for' = 'd0000000-0000-4000-8000-000000000001';
-- Deducted: Bob receives 20.00 - 0.30.
SELECT result, amount, fee FROM transfer('a0000000-0000-4000-8000-000000000002', 'a0000000-0000-4000-8000-000000000003', 2000,
    id => 'd0000000-0000-4000-8000-000000000002', fee_schedule => 'p2p',
    fee_account => 'a0000000-0000-4000-8000-000000000005', fee_mode => 'deducted');
-- A replay: exists, no second fee.
SELECT result, amount, fee FROM transfer('a0000000-0000-4000-8000-000000000002', 'a0000000-0000-4000-8000-000000000003', 2000,
    id => 'd0000000-0000-4000-8000-000000000002', fee_schedule => 'p2p',
    fee_account => 'a0000000-0000-4000-8000-000000000005', fee_mode => 'deducted');
SELECT transfer('a0000000-0000-4000-8000-000000000002', 'a0000000-0000-4000-8000-000000000003', 1999,
    id => 'd0000000-0000-4000-8000-000000000002', fee_schedule => 'p2p',
    fee_account => 'a0000000-0000-4000-8000-000000000005', fee_mode => 'deducted');
SELECT count(*) AS fee_legs FROM transfers WHERE metadata->>'fee_for' = 'd0000000-0000-4000-8000-000000000002';
-- The fee is refused with the transfer: Alice can pay the amount but not the fee on top.
SELECT posted FROM balance('a0000000-0000-4000-8000-000000000002') AS alice_before;
SELECT transfer('a0000000-0000-4000-8000-000000000002', 'a0000000-0000-4000-8000-000000000003',
    (SELECT posted FROM balance('a0000000-0000-4000-8000-000000000002')), fee_schedule => 'p2p',
    fee_account => 'a0000000-0000-4000-8000-000000000005');
SELECT posted FROM balance('a0000000-0000-4000-8000-000000000002') AS alice_after;
-- A fee that eats the whole amount, a fee on a hold, a fee without a fee account.
SELECT transfer('a0000000-0000-4000-8000-000000000002', 'a0000000-0000-4000-8000-000000000003', 10,
    fee_schedule => 'p2p', fee_account => 'a0000000-0000-4000-8000-000000000005', fee_mode => 'deducted');
SELECT transfer('a0000000-0000-4000-8000-000000000002', 'a0000000-0000-4000-8000-000000000003', 100, pending => true,
    fee_schedule => 'p2p', fee_account => 'a0000000-0000-4000-8000-000000000005');
SELECT transfer('a0000000-0000-4000-8000-000000000002', 'a0000000-0000-4000-8000-000000000003', 100, fee_schedule => 'p2p');
SELECT transfer('a0000000-0000-4000-8000-000000000002', 'a0000000-0000-4000-8000-000000000003', 100, fee_schedule => 'nope',
    fee_account => 'a0000000-0000-4000-8000-000000000005');
SELECT transfer('a0000000-0000-4000-8000-000000000002', 'a0000000-0000-4000-8000-000000000003', 100, fee_schedule => 'p2p',
    fee_account => 'a0000000-0000-4000-8000-000000000005', fee_mode => 'sometimes');
-- In a batch: one row per request; a request whose fee cannot be paid fails with the fee's reason.
SELECT index, result FROM create_transfers(ARRAY[
    ROW('d0000000-0000-4000-8000-000000000003', 'a0000000-0000-4000-8000-000000000001', 'a0000000-0000-4000-8000-000000000002',
        500, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'p2p', 'a0000000-0000-4000-8000-000000000005', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
    ROW('d0000000-0000-4000-8000-000000000004', 'a0000000-0000-4000-8000-000000000003', 'a0000000-0000-4000-8000-000000000001',
        (SELECT posted + 5000 FROM balance('a0000000-0000-4000-8000-000000000003')), NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
        'p2p', 'a0000000-0000-4000-8000-000000000005', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
    ROW('d0000000-0000-4000-8000-000000000005', 'a0000000-0000-4000-8000-000000000001', 'a0000000-0000-4000-8000-000000000002',
        700, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
]::transfer_request[]);
SELECT rollup_hot_accounts() >= 0 AS rolled_up;
SELECT credits_posted AS fee_account FROM account_balances WHERE id = 'a0000000-0000-4000-8000-000000000005';
SELECT * FROM verify();

-- Append-only, for the owner too.
UPDATE fincore.transfers SET amount = 1 WHERE id = 'b0000000-0000-4000-8000-000000000001';
DELETE FROM fincore.transfers WHERE id = 'b0000000-0000-4000-8000-000000000001';
TRUNCATE fincore.transfers;
DELETE FROM fincore.account_history;
DELETE FROM fincore.accounts WHERE id = 'a0000000-0000-4000-8000-000000000001';
UPDATE fincore.accounts SET currency = 'EUR' WHERE id = 'a0000000-0000-4000-8000-000000000001';
SET session_replication_role = replica;
UPDATE fincore.transfers SET amount = 1 WHERE id = 'b0000000-0000-4000-8000-000000000001';
RESET session_replication_role;
-- verify() finds a tampered balance (the owner bypasses the engine here on purpose).
BEGIN;
UPDATE fincore.accounts SET credits_posted = credits_posted + 1 WHERE id = 'a0000000-0000-4000-8000-000000000002';
SELECT invariant, subject FROM verify() ORDER BY 1, 2;
ROLLBACK;
-- Without a tenant nothing can be written.
RESET fincore.tenant;
SELECT transfer('a0000000-0000-4000-8000-000000000001', 'a0000000-0000-4000-8000-000000000002', 1);
SELECT create_account('USD');
