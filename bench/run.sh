#!/usr/bin/env bash
# bench/run.sh — choreo's benchmark command.
#
# Runs every benchmark of package bench at full size, choreo and raw
# franz-go in the same process and in alternating rounds, and prints the
# raw benchmark output followed by a summary table: medians, ranges, and
# the ratios against raw franz-go with their targets. It writes nothing
# into the repository (the test binary and logs live in a temporary
# directory, removed on exit). It takes about 5 minutes on 2 cores.
#
# Usage: bench/run.sh
#
# Sizes can be changed through the environment:
#   BENCH_ROUNDS          rounds of the consume and slow-handler comparisons (3)
#   BENCH_PRODUCE_ROUNDS  rounds of the producer comparison                  (5)
#   BENCH_PRODUCE_N       records per producer benchmark run            (300000)
#   BENCH_EVENTS          consume and peak-RSS backlog                 (1000000)
#   BENCH_RSS_SECONDS     how long each peak-RSS child consumes             (20)
#   BENCH_RSS_ROUNDS      rounds of the peak-RSS children                    (2)
#   BENCH_SLOW_FULL       0: per-partition slow run on a 2,000-event prefix,
#                         extrapolated (1: all 20,000 events)                (1)
#   BENCH_CPUPROFILE      directory: CPU profiles of the consume variants
set -euo pipefail

cd "$(dirname "$0")/.."

rounds=${BENCH_ROUNDS:-3}
produce_rounds=${BENCH_PRODUCE_ROUNDS:-5}
events=${BENCH_EVENTS:-1000000}
produce_n=${BENCH_PRODUCE_N:-300000}
rss_seconds=${BENCH_RSS_SECONDS:-20}
rss_rounds=${BENCH_RSS_ROUNDS:-2}
slow_full=${BENCH_SLOW_FULL:-1}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
out="$tmp/bench.out"

load() { cut -d' ' -f1-3 /proc/loadavg; }
phase() { printf '\n=== %s (load average %s)\n' "$1" "$(load)" | tee -a "$out"; }

start=$(date +%s)
echo "choreo benchmarks — $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(free -g | awk '/^Mem:/ {print $2 " GiB RAM"}')"
echo "$(go version); load average $(load)"
echo "rounds=$rounds produce_rounds=$produce_rounds events=$events produce_n=$produce_n rss_seconds=$rss_seconds rss_rounds=$rss_rounds"

go test -c -o "$tmp/bench.test" ./bench
bench() { "$tmp/bench.test" -test.run '^$' -test.v "$@" 2>&1 | tee -a "$out"; }

phase "producer: PublishAsync vs raw franz-go Produce, $produce_n records, $produce_rounds rounds"
for _ in $(seq "$produce_rounds"); do
	bench -test.bench '^Benchmark(PublishAsync|RawFranzGoProduce)$' -test.benchtime "${produce_n}x" -test.benchmem
done

phase "consumer: $events-event backlog, raw / choreo / choreo-otel, $rounds rounds"
BENCH_EVENTS=$events BENCH_ROUNDS=$rounds bench -test.bench '^BenchmarkConsume$' -test.benchtime 1x

phase "slow handler: 20000 events, 2 ms, per-key (Concurrency 64) x $rounds vs per-partition (full)"
BENCH_SLOW_FULL=$slow_full BENCH_ROUNDS=$rounds bench -test.bench '^BenchmarkSlowHandler$' -test.benchtime 1x

phase "peak RSS: child consumers on a $events-event backlog, 1 ms handler, ${rss_seconds}s each, $rss_rounds rounds"
BENCH_EVENTS=$events BENCH_ROUNDS=$rss_rounds BENCH_RSS_SECONDS=$rss_seconds bench -test.bench '^BenchmarkPeakRSS$' -test.benchtime 1x

phase "done in $(($(date +%s) - start)) s"

# Summary: medians and ranges of each metric, and per-round ratios.
awk '
function median(arr, n,   i, j, t, s) {
	for (i = 1; i <= n; i++) s[i] = arr[i]
	for (i = 2; i <= n; i++) { t = s[i]; for (j = i - 1; j >= 1 && s[j] > t; j--) s[j + 1] = s[j]; s[j + 1] = t }
	return n % 2 ? s[(n + 1) / 2] : (s[n / 2] + s[n / 2 + 1]) / 2
}
function minmax(arr, n,   i, lo, hi) {
	lo = hi = arr[1]
	for (i = 2; i <= n; i++) { if (arr[i] < lo) lo = arr[i]; if (arr[i] > hi) hi = arr[i] }
	return sprintf("%s–%s", fmt(lo), fmt(hi))
}
function fmt(v) { return v >= 1000 ? sprintf("%.0f", v) : sprintf("%.3g", v) }
/^Benchmark/ && / ns\/op/ {
	name = $1; sub(/-[0-9]+$/, "", name); sub(/#[0-9]+$/, "", name); sub(/^Benchmark/, "", name)
	for (i = 3; i <= NF; i++) {
		unit = $i
		if (unit != "records/s" && unit != "peak-MB" && unit != "max-concurrent" && unit != "handled") continue
		k = name SUBSEP unit
		if (!(k in cnt)) order[++nk] = k
		v[k, ++cnt[k]] = $(i - 1)
	}
}
function values(name, unit, dst,   k, i) {
	k = name SUBSEP unit
	for (i = 1; i <= cnt[k]; i++) dst[i] = v[k, i]
	return cnt[k] + 0
}
function verdict(m, cmp, target) {
	if (target == "") return ""
	return sprintf("   target %s %s: %s", cmp, target, (cmp == ">=" ? m >= target : m <= target) ? "MET" : "NOT MET")
}
# ratio prints the per-round ratios a/b (paired by run order) with their
# median and range, and whether the median meets the target.
function ratio(label, an, bn, unit, target, cmp,   a, b, r, na, nb, n, i, m, met) {
	na = values(an, unit, a); nb = values(bn, unit, b)
	n = na < nb ? na : nb
	if (n == 0) { printf "  %-44s  (no data)\n", label; return }
	for (i = 1; i <= n; i++) r[i] = a[i] / b[i]
	m = median(r, n)
	printf "  %-44s  %8.3g   (%s, n=%d)%s\n", label, m, minmax(r, n), n, verdict(m, cmp, target)
}
# speedup compares medians when the two sides have different run counts.
function speedup(label, an, bn, unit, target,   a, b, na, nb, m) {
	na = values(an, unit, a); nb = values(bn, unit, b)
	if (na == 0 || nb == 0) { printf "  %-44s  (no data)\n", label; return }
	m = median(a, na) / median(b, nb)
	printf "  %-44s  %8.3g   (median over median; n=%d, %d)%s\n", label, m, na, nb, verdict(m, ">=", target)
}
function limit(label, an, unit, target,   a, na, m) {
	na = values(an, unit, a)
	if (na == 0) { printf "  %-44s  (no data)\n", label; return }
	m = median(a, na)
	printf "  %-44s  %8.4g   (%s, n=%d)%s\n", label, m, minmax(a, na), na, verdict(m, "<=", target)
}
END {
	print ""
	print "=== summary (medians; ranges in parentheses)"
	printf "  %-44s  %12s  %-22s  %s\n", "benchmark", "median", "range", "n"
	for (j = 1; j <= nk; j++) {
		split(order[j], p, SUBSEP)
		n = values(p[1], p[2], a)
		printf "  %-44s  %12s  %-22s  %d\n", p[1] " [" p[2] "]", fmt(median(a, n)), minmax(a, n), n
	}
	print ""
	print "=== ratios"
	ratio("producer: PublishAsync / raw Produce", "PublishAsync", "RawFranzGoProduce", "records/s", 0.9, ">=")
	ratio("consumer: choreo / raw", "Consume/choreo", "Consume/raw", "records/s", 0.85, ">=")
	ratio("tracing: choreo-otel / choreo (no target)", "Consume/choreo-otel", "Consume/choreo", "records/s", "", ">=")
	speedup("slow handler: per-key / per-partition", "SlowHandler/per-key", "SlowHandler/per-partition", "records/s", 40)
	limit("peak RSS, choreo (MB)", "PeakRSS/choreo", "peak-MB", 200)
	limit("peak RSS, choreo-bounded (MB, no target)", "PeakRSS/choreo-bounded", "peak-MB", "")
	limit("peak RSS, raw franz-go (MB, no target)", "PeakRSS/raw", "peak-MB", "")
}' "$out"
