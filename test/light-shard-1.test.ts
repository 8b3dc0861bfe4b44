// Light integration tests, shard 1 of 2: every other file of test/light/ by name (test/helpers/shard.ts says why).
import { runShard } from './helpers/shard.ts';

await runShard('light', 0, 2);
