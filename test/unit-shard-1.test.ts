// Unit tests, shard 1 of 2: every other file of test/unit/ by name (test/helpers/shard.ts says why).
import { runShard } from './helpers/shard.ts';

await runShard('unit', 0, 2);
