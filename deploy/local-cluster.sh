#!/usr/bin/env bash
# Start a three-node Troupe cluster on this machine (the demo bank domain on
# every node), print its members, and stop every node on Ctrl-C.
#   deploy/local-cluster.sh [bin/troupe] [data dir]      (make cluster runs it)
# Node i: API 127.0.0.1:808i, NATS 422i, gossip 794i, routes 622i; data and
# logs in DATA/n1..n3. Extra flags for every node: TROUPE_CLUSTER_FLAGS.
set -euo pipefail
bin=${1:-bin/troupe}
data=${2:-data/cluster}
mkdir -p "$data"
pids=()
stop() {
	trap - INT TERM EXIT
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	echo "cluster stopped"
}
trap stop INT TERM EXIT
for i in 1 2 3; do
	join=()
	[ "$i" -ne 1 ] && join=(--join 127.0.0.1:7941)
	# shellcheck disable=SC2086
	"$bin" dev --node-id "n$i" --data-dir "$data/n$i" --http "127.0.0.1:808$i" \
		--nats-port "422$i" --gossip "127.0.0.1:794$i" --cluster-port "622$i" \
		"${join[@]}" ${TROUPE_CLUSTER_FLAGS:-} >"$data/n$i.log" 2>&1 &
	pids+=($!)
done
for i in 1 2 3; do
	for _ in $(seq 1 600); do # up to 2 minutes: the first start creates a stream per shard
		curl -fsS "http://127.0.0.1:808$i/readyz" >/dev/null 2>&1 && break
		if ! kill -0 "${pids[$((i - 1))]}" 2>/dev/null; then
			echo "node n$i exited; its log:" >&2
			tail -n 20 "$data/n$i.log" >&2
			exit 1
		fi
		sleep 0.2
	done
done
"$bin" cluster members --node http://127.0.0.1:8081
echo
echo "APIs on 127.0.0.1:8081, :8082, :8083; logs in $data/n*.log. Ctrl-C stops the cluster."
wait
