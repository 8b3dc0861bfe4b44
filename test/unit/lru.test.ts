// The servers' key caches (src/util/lru.ts): least recently used out, and room made before a
// value loads, so the WebAssembly heap never holds one more than the capacity.
import t from 'tap';
import { LruCache } from '../../src/util/lru.ts';

t.test('the least recently used value is closed first, before the new one loads', async (t) => {
  const events: string[] = [];
  const live = new Set<string>();
  let most = 0;
  const cache = new LruCache<string>(2, (v) => (events.push(`close ${v}`), live.delete(v)));
  const load = (v: string) => () => {
    events.push(`load ${v}`);
    live.add(v);
    most = Math.max(most, live.size);
    return v;
  };
  t.equal(cache.get('a', load('a')), 'a');
  t.equal(cache.get('b', load('b')), 'b');
  t.equal(cache.get('a', load('a again')), 'a', 'a hit does not load');
  t.equal(cache.get('c', load('c')), 'c');
  t.same(events, ['load a', 'load b', 'close b', 'load c'], 'b, used least recently, closed before c loads');
  t.equal(most, 2, 'never more than two live');
  t.same(cache.recentFirst(), ['c', 'a'], 'most recent first');
  cache.clear();
  t.equal(cache.size, 0);
  t.same(events.slice(4).sort(), ['close a', 'close c'], 'clear closes every value');
});

t.test('a load that throws keeps nothing; a capacity below one keeps one', async (t) => {
  const closed: string[] = [];
  const cache = new LruCache<string>(0.4, (v) => closed.push(v));
  cache.get('a', () => 'a');
  t.equal(cache.size, 1, 'the newest stays even when it alone is over the budget');
  t.throws(
    () =>
      cache.get('b', () => {
        throw new Error('bad keys');
      }),
    /bad keys/,
  );
  t.same(closed, ['a'], 'room was made first');
  t.equal(cache.size, 0, 'nothing kept for the failed load');
  t.equal(
    cache.get('b', () => 'b2'),
    'b2',
    'the next request loads again',
  );
});
