// Loaded by every test process (package.json, tap's node-arg), after tap's own preload. tap turns
// on Node's source maps (--enable-source-maps, and @tapjs/processinfo calls
// process.setSourceMapsEnabled(true)) for coverage, which this project does not collect. With them
// on, every module that names a source map has it read and parsed when it loads (tap's own, the
// AWS SDK's), and stack traces are mapped when read. Our sources are TypeScript run with Node's
// type stripping, which keeps line and column numbers, so the maps add nothing to a failure's
// report. Measured on the 2-core VM (Intel Xeon, 2026-12-01), alternated runs: test/unit plus three
// server suites 44.9-49.9 -> 38.6-39.7 s user CPU; fuzz.test at 400 cases 29.1-29.7 -> 25.3-26.9 s.
process.setSourceMapsEnabled(false);
