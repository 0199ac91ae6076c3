// bull-board at /queues over the queues tidegate works: QUEUES (comma-separated, default
// scoreCollect) under PREFIX (default bull) in the Redis at REDIS_URL. tidegate keeps its jobs in
// BullMQ's layout, so bull-board lists them and its retry/clean/promote buttons act on them.
import express from "express";
import { Queue } from "bullmq";
import { createBullBoard } from "@bull-board/api";
import { BullMQAdapter } from "@bull-board/api/bullMQAdapter";
import { ExpressAdapter } from "@bull-board/express";

const redisUrl = new URL(process.env.REDIS_URL ?? "redis://127.0.0.1:6379");
const connection = {
  host: redisUrl.hostname,
  port: Number(redisUrl.port || 6379),
  username: redisUrl.username || undefined,
  password: redisUrl.password || undefined,
};
const prefix = process.env.PREFIX ?? "bull";
const names = (process.env.QUEUES ?? "scoreCollect").split(",").map((q) => q.trim()).filter(Boolean);

const serverAdapter = new ExpressAdapter();
serverAdapter.setBasePath("/queues");
createBullBoard({
  queues: names.map((name) => new BullMQAdapter(new Queue(name, { connection, prefix }))),
  serverAdapter,
});

const app = express();
app.use("/queues", serverAdapter.getRouter());
app.get("/", (_req, res) => res.redirect("/queues"));
const port = Number(process.env.PORT ?? 3000);
app.listen(port, () => console.log(`bull-board on :${port}/queues for ${names.join(", ")} (prefix ${prefix})`));
