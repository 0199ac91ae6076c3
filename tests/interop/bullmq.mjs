// BullMQ's own client on tidegate's queues, driven by tests/bullmq_interop.rs:
//   node bullmq.mjs add <queue> '<[{name, data, opts}]>'   prints the ids BullMQ assigned
//   node bullmq.mjs consume <queue> <n>                     a BullMQ Worker takes n jobs, prints each
//   node bullmq.mjs inspect <queue> <id>...                 counts and jobs as BullMQ reads them
//   node bullmq.mjs board <queue> <id>                      bull-board's adapter: counts, failed jobs,
//                                                           and its retry button on job <id>
//   node bullmq.mjs retry-all <queue>                       Queue.retryJobs of every failed job
//   node bullmq.mjs upsert-dates <queue> <iso>              an upsert whose document holds a JS Date,
//                                                           and Extended JSON's $date and $oid
//
// The jobs to add are read from standard input when not given. BULL_CLUSTER=1 connects to
// REDIS_URL as a Redis Cluster (ioredis' Cluster, as BullMQ's docs say), BULL_PREFIX sets
// the key prefix (`{bull}` there, BullMQ's cluster convention).
import { readFileSync } from 'node:fs';
import { Queue, Worker } from 'bullmq';
import { Cluster } from 'ioredis';

const url = new URL(process.env.REDIS_URL || 'redis://127.0.0.1:6379');
const node = { host: url.hostname, port: Number(url.port || 6379) };
const cluster = process.env.BULL_CLUSTER === '1';
const connection = cluster ? new Cluster([node]) : node;
const prefix = process.env.BULL_PREFIX || 'bull';
const [cmd, name, ...rest] = process.argv.slice(2);
const queue = new Queue(name, { connection, prefix });

if (cmd === 'add') {
  const jobs = await queue.addBulk(JSON.parse(rest[0] ?? readFileSync(0, 'utf8')));
  console.log(JSON.stringify(jobs.map((j) => j.id)));
} else if (cmd === 'consume') {
  const want = Number(rest[0]);
  const seen = [];
  await new Promise((resolve, reject) => {
    const worker = new Worker(name, async (job) => {
      seen.push({ id: job.id, name: job.name, data: job.data, attemptsMade: job.attemptsMade });
      return { consumedBy: 'bullmq' };
    }, { connection, prefix });
    worker.on('completed', async () => {
      if (seen.length >= want) { await worker.close(); resolve(); }
    });
    worker.on('error', reject);
    setTimeout(() => reject(new Error(`only ${seen.length} of ${want} jobs within 20 s`)), 20000).unref();
  });
  console.log(JSON.stringify(seen));
} else if (cmd === 'inspect') {
  const counts = await queue.getJobCounts();
  const jobs = [];
  for (const id of rest) {
    const job = await queue.getJob(id);
    jobs.push(job && {
      id: job.id, name: job.name, data: job.data, state: await job.getState(),
      returnvalue: job.returnvalue, failedReason: job.failedReason, attemptsMade: job.attemptsMade,
      finishedOn: job.finishedOn ?? null, processedOn: job.processedOn ?? null, opts: job.opts,
    });
  }
  console.log(JSON.stringify({ counts, isPaused: await queue.isPaused(), jobs }));
} else if (cmd === 'board') {
  const { BullMQAdapter } = await import('@bull-board/api/bullMQAdapter');
  const adapter = new BullMQAdapter(queue);
  const counts = await adapter.getJobCounts();
  const failed = await adapter.getJobs(['failed'], 0, 100);
  const target = failed.find((j) => j.id === rest[0]);
  // What bull-board's retry button does for a failed job.
  if (target) await target.retry('failed');
  console.log(JSON.stringify({
    counts, failed: failed.map((j) => ({ id: j.id, failedReason: j.failedReason })), retried: target ? target.id : null,
  }));
} else if (cmd === 'upsert-dates') {
  // What a NestJS service would add: a JavaScript Date, which BullMQ stores as JSON (a
  // string), and MongoDB Extended JSON for a date and an ObjectId.
  const at = rest[0];
  const job = await queue.add('upsert', {
    collection: 'typed', key: ['ref'],
    document: { ref: 'd1', jsDate: new Date(at), when: { $date: at }, owner: { $oid: '65a1b2c3d4e5f60718293a4b' } },
  });
  console.log(JSON.stringify([job.id]));
} else if (cmd === 'retry-all') {
  await queue.retryJobs({ state: 'failed' });
  console.log(JSON.stringify(await queue.getJobCounts()));
} else {
  console.error(`unknown command ${cmd}`);
  process.exit(2);
}
await queue.close();
if (cluster) await connection.quit();
process.exit(0);
