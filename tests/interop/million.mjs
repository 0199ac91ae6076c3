// BullMQ's side of `scripts/bench-million` (benches/million.rs is tidegate's): the same jobs, the
// same Redis, the same measures, in two processes so the drain's peak RSS is the worker's alone.
//   MODE=add|drain QUEUE=<name> N=1000000 BASE_MEMORY=<bytes> REDIS_PORT=<port> node million.mjs
// The worker runs BullMQ's default way for throughput: one Worker, concurrency 50, a no-op
// processor; jobs are kept after completion (removeOnComplete: false).
import { Queue, Worker } from 'bullmq';
import IORedis from 'ioredis';

const connection = { host: '127.0.0.1', port: Number(process.env.REDIS_PORT || 6390) };
const N = Number(process.env.N || 1000000);
const mode = process.env.MODE;
const name = process.env.QUEUE;
const base = Number(process.env.BASE_MEMORY || 0);
const redis = new IORedis(connection);

async function usage() {
  const info = await redis.info('everything');
  const fields = Object.fromEntries(info.split('\r\n').filter((l) => l.includes(':')).map((l) => {
    const i = l.indexOf(':');
    return [l.slice(0, i), l.slice(i + 1)];
  }));
  let commandsUs = 0;
  for (const [k, v] of Object.entries(fields)) {
    if (k.startsWith('cmdstat_')) commandsUs += Number(/usec=(\d+)/.exec(v)[1]);
  }
  return {
    memory: Number(fields.used_memory),
    cpu: Number(fields.used_cpu_user) + Number(fields.used_cpu_sys),
    commandsUs,
  };
}

let peak = 0;
const sample = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss); }, 50);
await redis.config('RESETSTAT');
const before = await usage();
const queue = new Queue(name, { connection });
const t0 = performance.now();
let what;
if (mode === 'add') {
  for (let i = 0; i < N; i += 1000) {
    const jobs = [];
    for (let j = i; j < Math.min(N, i + 1000); j++)
      jobs.push({ name: 'collect', data: { userId: 'u' + j, collectDate: '2026-11-24' }, opts: { removeOnComplete: false } });
    await queue.addBulk(jobs);
  }
  what = 'queued';
} else if (mode === 'drain') {
  let done = 0;
  const worker = await new Promise((resolve) => {
    const w = new Worker(name, async () => {}, { connection, concurrency: 50 });
    w.on('completed', () => { if (++done === N) resolve(w); });
  });
  await worker.close();
  what = 'retained';
} else {
  console.error('MODE must be add or drain');
  process.exit(2);
}
const seconds = (performance.now() - t0) / 1000;
const after = await usage();
clearInterval(sample);
peak = Math.max(peak, process.memoryUsage().rss);
const perJob = (x) => x / N;
const mib = (b) => (b / 1048576).toFixed(1);
console.log(
  `bullmq ${mode}: ${N} jobs in ${seconds.toFixed(1)} s (${(N / seconds).toFixed(0)} jobs/s); ` +
  `Redis memory ${perJob(after.memory - base).toFixed(0)} B/job ${what}; ` +
  `Redis CPU ${perJob((after.cpu - before.cpu) * 1e6).toFixed(1)} us/job (in commands ${perJob(after.commandsUs).toFixed(1)} us/job); ` +
  `process RSS ${mib(process.memoryUsage().rss)} MiB, peak ${mib(peak)} MiB`);
await queue.close();
await redis.quit();
process.exit(0);
