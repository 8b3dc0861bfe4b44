// Unit tests, shard 1 of 2: every other file of test/unit/ by name (test/helpers/unit-shard.ts says why).
import { runUnitShard } from './helpers/unit-shard.ts';

await runUnitShard(0, 2);
