// Package bench holds choreo's benchmarks: the producer and the consumer
// measured against raw franz-go in the same run, on the same embedded
// broker, plus the slow-handler speed-up of per-key ordering, the peak
// resident memory of a consumer working through a large backlog, and the
// cost of tracing. It has no API: everything is in its _test.go files.
//
// The project's benchmark command is
//
//	bench/run.sh
//
// which runs every benchmark at full size (a 1,000,000-event backlog),
// interleaving choreo and raw franz-go rounds, and prints a summary table
// of medians, ranges and ratios. Results and how to read them are in
// docs/PERFORMANCE.md.
//
// The benchmarks also run on their own, at smaller sizes:
//
//	go test -run '^$' -bench . -benchtime 1x ./bench
//
// Environment variables scale and instrument them:
//
//	BENCH_EVENTS          backlog of the consume and peak-RSS benchmarks
//	                      (default 100000; run.sh: 1000000)
//	BENCH_ROUNDS          alternating rounds of the variants of
//	                      BenchmarkConsume, BenchmarkSlowHandler (per-key) and
//	                      BenchmarkPeakRSS (default 1)
//	BENCH_SLOW_FULL       1: run per-partition over all 20,000 slow events
//	                      instead of a 2,000-event prefix
//	BENCH_RSS_SECONDS     how long each peak-RSS child consumes (default 5)
//	BENCH_CPUPROFILE      directory: write a CPU profile of each consume
//	                      variant's measured window there
//	BENCH_RSS_HEAPPROFILE path prefix: each peak-RSS child writes a heap
//	                      profile half-way through, to <prefix>.<variant>.pprof
//	BENCH_RSS_DEBUG       1: log each peak-RSS child's standard error (with
//	                      GODEBUG=gctrace=1, its garbage collections)
//
// Benchmarks measure; they never assert speed. They do fail on incorrect
// behaviour: a record lost, dead-lettered, or handled out of key order.
package bench
