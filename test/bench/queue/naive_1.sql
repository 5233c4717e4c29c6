INSERT INTO public.naive_jobs (queue, payload) VALUES ('bench', '{"n": 1}');
WITH c AS (UPDATE public.naive_jobs SET state = 'running', attempts = attempts + 1, lease_until = now() + interval '30 seconds'
            WHERE id IN (SELECT id FROM public.naive_jobs
                          WHERE queue = 'bench' AND state = 'ready' AND run_at <= now()
                          ORDER BY priority DESC, run_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
           RETURNING id)
SELECT coalesce(array_agg(id), '{}') AS ids FROM c \gset
DELETE FROM public.naive_jobs WHERE id = ANY (:ids::bigint[]);
