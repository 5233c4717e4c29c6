-- test/bench/fees: one schedule - 2.9% + 0.30, three graduated tiers, a 50.00 cap - defined
-- in fincore, and the same schedule hand-written in PL/pgSQL (numeric arithmetic, banker's
-- rounding once per component, like fincore's half_even).
SET client_min_messages = warning;
SELECT fincore.create_tenant('bench', 'bbbbbbbb-fee5-4000-8000-000000000001');
BEGIN;
SELECT fincore.set_tenant('bbbbbbbb-fee5-4000-8000-000000000001');
SELECT fincore.define_fee_schedule('bench', 'USD', '{"components": [
    {"type": "percentage", "rate": 0.029},
    {"type": "flat", "amount": 30},
    {"type": "graduated", "name": "volume_discount", "tiers": [
        {"up_to": 100000, "rate": 0.01},
        {"up_to": 1000000, "rate": 0.005, "flat": 100},
        {"rate": 0.0025, "flat": 500}]}],
    "maximum": 5000}', '-infinity');
COMMIT;

-- Round half to even: numeric round() rounds half away from zero.
CREATE FUNCTION public.round_half_even(x numeric) RETURNS bigint LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    f numeric := floor(x);
    d numeric := x - f;
BEGIN
    IF d > 0.5 OR (d = 0.5 AND mod(f, 2) <> 0) THEN
        RETURN (f + 1)::bigint;
    END IF;
    RETURN f::bigint;
END $$;

CREATE FUNCTION public.plpgsql_fee(amount bigint) RETURNS bigint LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    pct  bigint;
    grad numeric := 0;
    fee  bigint;
BEGIN
    IF amount < 0 THEN
        RAISE EXCEPTION 'negative amount %', amount;
    END IF;
    pct := public.round_half_even(amount * 0.029);
    -- tier 1: (0, 100000] at 1%
    grad := least(amount, 100000) * 0.01;
    -- tier 2: (100000, 1000000] at 0.5% + 1.00
    IF amount > 100000 THEN
        grad := grad + (least(amount, 1000000) - 100000) * 0.005 + 100;
    END IF;
    -- tier 3: above 1000000 at 0.25% + 5.00
    IF amount > 1000000 THEN
        grad := grad + (amount - 1000000) * 0.0025 + 500;
    END IF;
    fee := pct + 30 + public.round_half_even(grad);
    RETURN least(fee, 5000);
END $$;
ALTER DATABASE fincore_bench_fees SET request.jwt.claims TO '{"tenant_id": "bbbbbbbb-fee5-4000-8000-000000000001"}';
