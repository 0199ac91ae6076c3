// A team's BullMQ workers, unchanged, on a queue tidegate governs (tests/govern.rs,
// scripts/bench-govern):
//   node governed.mjs <queue> <concurrency> sleep:<ms>   each job waits <ms>
//   node governed.mjs <queue> <concurrency> score        each job is the original team's: read one
//                                                        user's events of the day, upsert a score
// LIMITER=5/1000 gives the workers their own limiter (the seed's `{ max: 5, duration: 1000 }`).
// For `score`: MONGODB_URI, SCORE_DATABASE, and job data {userId, date, from, to} (ms). Runs until
// SIGTERM or SIGINT, then closes the worker (its jobs finish) and exits 0; prints "ready" once
// the worker runs.
import { Worker } from 'bullmq';

const url = new URL(process.env.REDIS_URL || 'redis://127.0.0.1:6379');
const connection = { host: url.hostname, port: Number(url.port || 6379) };
const prefix = process.env.BULL_PREFIX || 'bull';
const [name, concurrency, work] = process.argv.slice(2);

let processor;
let client;
if (work.startsWith('sleep:')) {
  const ms = Number(work.slice('sleep:'.length));
  processor = () => new Promise((resolve) => setTimeout(resolve, ms));
} else if (work === 'score') {
  const { MongoClient } = await import('mongodb');
  client = new MongoClient(process.env.MONGODB_URI, { maxPoolSize: Number(concurrency) });
  await client.connect();
  const db = client.db(process.env.SCORE_DATABASE);
  // The score's rule (apps/score/src/lib.rs, `weight`), and its key: one document per (date, user).
  const weight = { view: 1, click: 3, purchase: 10 };
  processor = async (job) => {
    const { userId, date, from, to } = job.data;
    const events = await db.collection('events')
      .find({ userId, ts: { $gte: new Date(from), $lt: new Date(to) } })
      .project({ _id: 0, kind: 1, value: 1 })
      .toArray();
    const score = events.reduce((sum, e) => sum + (weight[e.kind] ?? 0) * (e.value ?? 0), 0);
    await db.collection('daily_scores').updateOne(
      { _id: `${date}:${userId}` },
      { $set: { userId, date, score, events: events.length, computedAt: new Date() } },
      { upsert: true },
    );
  };
} else {
  throw new Error(`unknown work ${work}`);
}

const limiter = process.env.LIMITER
  ? (([max, duration]) => ({ max: Number(max), duration: Number(duration) }))(process.env.LIMITER.split('/'))
  : undefined;
const worker = new Worker(name, processor, {
  connection,
  prefix,
  concurrency: Number(concurrency),
  limiter,
  removeOnComplete: { count: 1000 },
});
worker.on('error', (e) => console.error(`worker error: ${e.message}`));
await worker.waitUntilReady();
console.log('ready');

const stop = async () => {
  await worker.close();
  if (client) await client.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
