#!/usr/bin/env node
// A thin fincore worker in Node.js (pg): the job loop, or an outbox consumer.
//
//   npm ci --prefix examples/node
//   node examples/node/worker.js jobs   --queue emails       (connection: the PG* environment)
//   node examples/node/worker.js events --consumer mailer
//
// The same protocol as examples/worker.py, which says why each step is there:
// jobs    one transaction a job: the handler's writes, then fincore.complete_and_dequeue, which
//         completes the job and claims the next in one round trip; a handler that throws fails
//         the attempt (fincore.fail: the queue's backoff); a long job's lease is renewed from a
//         second connection (fincore.heartbeat); idle, fincore.wait_for_jobs sleeps in the
//         database until an enqueue commits.
// events  fincore.poll, the handler and fincore.ack (or fincore.nack) in one transaction; idle,
//         fincore.wait_for_events sleeps in the database until an emitting transaction commits.
// SIGTERM or SIGINT: finish the current job or batch, give back a claimed job, exit 0.
// The statements run at every job or event are named, so pg prepares each once a connection
// (psycopg prepares a repeated statement by itself; pg parses and plans it at every call).
//
// The demonstration handler: {"sleep": seconds} works that long, {"fail": true} throws, and each
// handled job or event is a row of public.example_runs in the transaction that completes it.
'use strict';

const { Client } = require('pg');

function parseArgs(argv) {
  const args = { mode: argv[0], queue: 'default', consumer: 'worker', name: `node-${process.pid}`,
                 lease: 30, batch: 100, idle: 30, maxJobs: 0, exitWhenIdle: false };
  for (let i = 1; i < argv.length; i++) {
    const key = argv[i].replace(/^--/, '').replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (key === 'exitWhenIdle') { args.exitWhenIdle = true; continue; }
    const value = argv[++i];
    args[key] = ['lease', 'batch', 'idle', 'maxJobs'].includes(key) ? Number(value) : value;
  }
  if (!['jobs', 'events'].includes(args.mode)) {
    console.error('usage: worker.js jobs|events [--queue Q] [--consumer C] [--name N] [--lease S] ' +
                  '[--idle S] [--max-jobs N] [--exit-when-idle]');
    process.exit(2);
  }
  return args;
}

let stopping = false;
let waiting = null;   // the connection while it waits for work: a stop cancels the wait

function onSignal() {
  stopping = true;
  if (waiting) waiting.cancel();
}

async function connect() {
  const client = new Client();
  await client.connect();
  return client;
}

// pg's Client has no cancel(): a second connection sends pg_cancel_backend for it.
async function addCancel(client) {
  const pid = (await client.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
  client.cancel = () => {
    connect().then(async (other) => {
      try { await other.query('SELECT pg_cancel_backend($1)', [pid]); } finally { await other.end(); }
    }).catch(() => {});
  };
  return client;
}

async function ensureRunsTable(client) {
  await client.query('CREATE TABLE IF NOT EXISTS public.example_runs (kind text NOT NULL, id text NOT NULL, ' +
                     'attempt integer NOT NULL, worker text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())');
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function handleJob(client, job, worker) {
  const payload = job.payload || {};
  const seconds = Number(payload.sleep || 0);
  if (seconds > 0) await sleep(1000 * seconds);   // a timer, even of 0 ms, waits at least 1 ms
  if (payload.fail) throw new Error(`job ${job.id} asked to fail`);
  await client.query({ name: 'job_run',
                       text: "INSERT INTO public.example_runs (kind, id, attempt, worker) VALUES ('job', $1, $2, $3)",
                       values: [String(job.id), job.attempt, worker] });
  return { done_by: worker };
}

async function handleEvent(client, event, worker) {
  if ((event.payload || {}).fail) throw new Error(`event ${event.id} asked to fail`);
  await client.query({ name: 'event_run',
                       text: "INSERT INTO public.example_runs (kind, id, attempt, worker) VALUES ('event', $1, $2, $3)",
                       values: [event.id, event.retries + 1, worker] });
}

// Renews a job's lease every third of it from a connection of its own, while the job runs.
function heartbeat(job, leaseS) {
  let timer = null;
  let client = null;
  const ready = connect().then((c) => {
    client = c;
    timer = setInterval(() => {
      client.query('SELECT fincore.heartbeat($1, make_interval(secs => $2), $3)', [job.id, leaseS, job.attempt])
        .catch(() => {});
    }, (leaseS / 3) * 1000);
  });
  return async () => {
    await ready;
    clearInterval(timer);
    await client.end();
  };
}

// Sleep in the database until there is work (a commit wakes the call); a stop signal cancels it.
async function waitInDatabase(client, sql, params) {
  waiting = client;
  try {
    if (!stopping) await client.query(sql, params);
  } catch (e) {
    if (e.code !== '57014') throw e;   // query_canceled: a stop signal cancelled the wait
  } finally {
    waiting = null;
  }
}

async function runJobs(args) {
  const client = await addCancel(await connect());
  await ensureRunsTable(client);
  const started = Date.now();
  let job = null;
  let handled = 0;
  for (;;) {
    let rows = [];
    const stopBeat = job && Number((job.payload || {}).sleep || 0) > args.lease / 3 ? heartbeat(job, args.lease) : null;
    try {
      // One transaction: the job's work, its completion and the claim of the next job.
      await client.query('BEGIN');
      const result = job ? await handleJob(client, job, args.name) : null;
      rows = (await client.query({
        name: 'complete_and_dequeue',
        text: 'SELECT id, tenant_id, attempt, payload FROM fincore.complete_and_dequeue($1, $2, $3, $4, 1, make_interval(secs => $5), $6)',
        values: [job && job.id, args.queue, job ? JSON.stringify(result) : null, job && job.attempt, args.lease, args.name] })).rows;
      await client.query('COMMIT');
      if (job) handled++;
    } catch (e) {
      await client.query('ROLLBACK');
      if (!['ZF602', 'ZF607'].includes(e.code)) {   // else: the lease passed on, or the job was cancelled
        await client.query('SELECT fincore.fail($1, $2, NULL, $3)', [job.id, String(e.message), job.attempt]);
      }
      rows = [];
    } finally {
      if (stopBeat) await stopBeat();
    }
    job = rows.length ? rows[0] : null;
    if (stopping || (args.maxJobs && handled >= args.maxJobs)) {
      if (job) {   // claimed but not started: give it back now, not at its lease's end
        await client.query("SELECT fincore.fail($1, 'worker stopping', clock_timestamp(), $2)", [job.id, job.attempt]);
      }
      break;
    }
    if (!job) {
      if (args.exitWhenIdle) break;
      await waitInDatabase(client, 'SELECT fincore.wait_for_jobs($1, make_interval(secs => $2))', [args.queue, args.idle]);
    }
  }
  const seconds = (Date.now() - started) / 1000;
  console.log(JSON.stringify({ worker: args.name, jobs: handled, seconds,
                               jobs_per_second: seconds > 0 ? Math.round(10 * handled / seconds) / 10 : null }));
  await client.end();
}

async function runEvents(args) {
  const client = await addCancel(await connect());
  await ensureRunsTable(client);
  let handled = 0;
  while (!stopping) {
    await client.query('BEGIN');
    const events = (await client.query({
      name: 'poll',
      text: 'SELECT id, topic, type, aggregateid, payload, retries FROM fincore.poll($1, $2)',
      values: [args.consumer, args.batch] })).rows;
    for (const event of events) {
      try {
        await client.query('SAVEPOINT handler');   // a failed handler's writes go, the batch stays
        await handleEvent(client, event, args.name);
        await client.query('RELEASE SAVEPOINT handler');
        await client.query({ name: 'ack', text: 'SELECT fincore.ack($1, $2)', values: [args.consumer, event.id] });
      } catch (e) {
        await client.query('ROLLBACK TO SAVEPOINT handler');
        await client.query('SELECT fincore.nack($1, $2, $3)', [args.consumer, event.id, String(e.message)]);
      }
      handled++;
    }
    await client.query('COMMIT');
    if (!events.length) {
      if (args.exitWhenIdle) break;
      await waitInDatabase(client, 'SELECT fincore.wait_for_events($1, make_interval(secs => $2))', [args.consumer, args.idle]);
    }
  }
  console.log(JSON.stringify({ worker: args.name, events: handled }));
  await client.end();
}

const args = parseArgs(process.argv.slice(2));
process.on('SIGTERM', onSignal);
process.on('SIGINT', onSignal);
(args.mode === 'jobs' ? runJobs : runEvents)(args).catch((e) => {
  console.error(e);
  process.exit(1);
});
