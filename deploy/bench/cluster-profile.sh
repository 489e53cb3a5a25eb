#!/usr/bin/env bash
# Throughput of a three-node cluster (or one single node) under `troupe bench`,
# with an optional CPU profile of one node taken by perf while the load runs.
# Issue 12's benchmarks (docs/benchmarks.md, "Cluster: forwarding, scale-out
# and the peer") use cmd/runtime/cluster_bench_test.go; this script is the
# same load from the command line, for looking inside a node.
#
#   deploy/bench/cluster-profile.sh [cluster|single] [seconds]
#
# Environment: BIN (default bin/troupe), CONC (callers, default 64), SHARDS
# (default 8), SETTLE (seconds between every shard served and the load,
# default 0), PERF=1 to record node 1 with `perf record -g` for the middle
# third of the run (needs perf and root), PPROF=1 to start every node with
# --debug-addr 127.0.0.1:606i and save node 1's goroutines, blocking
# profile (for the middle of the run) and a 5 s execution trace, OUT (default a new temp dir: node
# data, logs, bench report, perf.data and perf-report.txt).
# Ports: API 1808i, NATS 1422i, gossip 1794i, routes 1622i (i = 1..3).
set -euo pipefail
mode=${1:-cluster}
secs=${2:-30}
bin=${BIN:-bin/troupe}
conc=${CONC:-64}
shards=${SHARDS:-8}
out=${OUT:-$(mktemp -d -t troupe-profile-XXXXXX)}
mkdir -p "$out"
pids=()
stop() {
	trap - INT TERM EXIT
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap stop INT TERM EXIT

n=3
[ "$mode" = single ] && n=1
for i in $(seq 1 "$n"); do
	if [ "$mode" = single ]; then
		"$bin" dev --data-dir "$out/n$i" --http "127.0.0.1:1808$i" --nats-port "1422$i" >"$out/n$i.log" 2>&1 &
	else
		join=()
		debug=()
		[ "${PPROF:-0}" = 1 ] && debug=(--debug-addr "127.0.0.1:606$i")
		[ "$i" -ne 1 ] && join=(--join 127.0.0.1:17941)
		"$bin" dev --node-id "n$i" --data-dir "$out/n$i" --http "127.0.0.1:1808$i" \
			--nats-port "1422$i" --gossip "127.0.0.1:1794$i" --cluster-port "1622$i" \
			--shards "$shards" "${join[@]}" "${debug[@]}" >"$out/n$i.log" 2>&1 &
	fi
	pids+=($!)
done
nodes=()
for i in $(seq 1 "$n"); do
	for _ in $(seq 1 600); do # bounded: 2 minutes
		curl -fsS "http://127.0.0.1:1808$i/readyz" >/dev/null 2>&1 && break
		if ! kill -0 "${pids[$((i - 1))]}" 2>/dev/null; then
			echo "node n$i exited; its log:" >&2
			tail -n 20 "$out/n$i.log" >&2
			exit 1
		fi
		sleep 0.2
	done
	nodes+=("http://127.0.0.1:1808$i")
done
if [ "$mode" != single ]; then
	# every shard served before the load starts (bounded: 2 minutes); a
	# node lists as serving only the shards it serves itself
	for _ in $(seq 1 600); do
		served=0
		for u in "${nodes[@]}"; do
			c=$("$bin" cluster shards --node "$u" 2>/dev/null | grep -c ' serving ' || true)
			served=$((served + c))
		done
		[ "$served" -ge "$shards" ] && break
		sleep 0.2
	done
fi
sleep "${SETTLE:-0}" # seconds to let the cluster settle before the load
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
list=$(
	IFS=,
	echo "${nodes[*]}"
)
"$bin" bench --node "$list" --concurrency "$conc" --duration "${secs}s" --mix deposit=100 --entities 1536 \
	>"$out/bench.txt" 2>"$out/bench.err" &
bp=$!
if [ "${PERF:-0}" = 1 ]; then
	sleep $((secs / 2)) # past the setup (opening the accounts), into the load
	perf record -F 499 -g -o "$out/perf.data" -p "${pids[0]}" -- sleep $((secs / 3)) >/dev/null 2>&1 || true
	perf report -i "$out/perf.data" --no-children --sort symbol --stdio 2>/dev/null | grep -v '^$' | head -200 >"$out/perf-report.txt" || true
fi
if [ "${PPROF:-0}" = 1 ] && [ "$mode" != single ]; then
	sleep $((secs / 3))
	d=http://127.0.0.1:6061/debug/pprof
	curl -fsS -o "$out/block-0.pb.gz" "$d/block" || true
	curl -fsS -o "$out/goroutines.txt" "$d/goroutine?debug=1" || true
	curl -fsS -o "$out/trace.out" "$d/trace?seconds=5" || true
	curl -fsS -o "$out/block-1.pb.gz" "$d/block" || true
fi
wait "$bp"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
cat "$out/bench.txt"
echo "output in $out"
