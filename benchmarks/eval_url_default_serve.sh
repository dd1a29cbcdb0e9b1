#!/bin/bash
# rag eval --url on CMRC trial against a default `rag serve` (no rate-limit overrides), then in-process on the same index.
cd "$(dirname "$0")/.."
IDX=${IDX:?set IDX to a CMRC trial index, e.g. the cache dir rag eval --build-index prints}
CMRC=../shared/data/cmrc2018/cmrc2018_trial.json
env -u RAG_IP_RATE_PER_MINUTE -u RAG_KEY_RATE_PER_MINUTE .venv/bin/rag --index $IDX serve --port 8765 > /tmp/serve_default.log 2>&1 &
SERVER=$!
for i in $(seq 1 120); do curl -sf http://127.0.0.1:8765/ready >/dev/null && break; sleep 1; done
start=$(date +%s)
.venv/bin/rag eval $CMRC --url http://127.0.0.1:8765 --out benchmarks/results/eval_url_default_serve/http --no-progress --no-reader-alone
echo "http wall $(( $(date +%s) - start )) s"
kill $SERVER; wait $SERVER 2>/dev/null
start=$(date +%s)
.venv/bin/rag eval $CMRC --index $IDX --out benchmarks/results/eval_url_default_serve/inprocess --no-progress --no-reader-alone
echo "inprocess wall $(( $(date +%s) - start )) s"
