#!/usr/bin/env bash
# Runs the whole system on this machine under honcho: PostgreSQL+TimescaleDB and NATS on private
# ports with data in $ANALYTICS_DATA_DIR, the four services and the Envoy edge. Ctrl+C stops it all.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

export ANALYTICS_DATA_DIR=${ANALYTICS_DATA_DIR:-$root/.data}
export ANALYTICS_PG_PORT=${ANALYTICS_PG_PORT:-25432}
export ANALYTICS_NATS_PORT=${ANALYTICS_NATS_PORT:-24222}
export ANALYTICS_HTTP_HOST=${ANALYTICS_HTTP_HOST:-127.0.0.1}
export ANALYTICS_HTTP_PORT=${ANALYTICS_HTTP_PORT:-8080}
export ANALYTICS_AUTH_ADDR=${ANALYTICS_AUTH_ADDR:-127.0.0.1:25151}
export ANALYTICS_INGEST_ADDR=${ANALYTICS_INGEST_ADDR:-127.0.0.1:25152}
export ANALYTICS_QUERY_ADDR=${ANALYTICS_QUERY_ADDR:-127.0.0.1:25153}
export ANALYTICS_PROCESSOR_ADDR=${ANALYTICS_PROCESSOR_ADDR:-127.0.0.1:25154}
export ANALYTICS_QUERY_WS_ADDR=${ANALYTICS_QUERY_WS_ADDR:-127.0.0.1:25156}
export ANALYTICS_EDGE_ADMIN_ADDR=${ANALYTICS_EDGE_ADMIN_ADDR:-127.0.0.1:25155}
# Prometheus endpoints, one per process: ingest process N serves on the ingest port + N - 1.
export ANALYTICS_AUTH_METRICS_ADDR=${ANALYTICS_AUTH_METRICS_ADDR:-127.0.0.1:25161}
export ANALYTICS_PROCESSOR_METRICS_ADDR=${ANALYTICS_PROCESSOR_METRICS_ADDR:-127.0.0.1:25162}
export ANALYTICS_QUERY_METRICS_ADDR=${ANALYTICS_QUERY_METRICS_ADDR:-127.0.0.1:25163}
export ANALYTICS_INGEST_METRICS_ADDR=${ANALYTICS_INGEST_METRICS_ADDR:-127.0.0.1:25170}
export ANALYTICS_DATABASE_URL=${ANALYTICS_DATABASE_URL:-postgresql://analytics@127.0.0.1:$ANALYTICS_PG_PORT/analytics}
export ANALYTICS_NATS_URL=${ANALYTICS_NATS_URL:-nats://127.0.0.1:$ANALYTICS_NATS_PORT}
export PATH="$root/.venv/bin:$PATH"

mkdir -p "$ANALYTICS_DATA_DIR"
chmod 700 "$ANALYTICS_DATA_DIR"
# Secrets generated on first start and kept (mode 600) in the data directory, unless given.
secret() {
  local file="$ANALYTICS_DATA_DIR/$1"
  if [ ! -s "$file" ]; then
    (umask 077 && python -c 'import secrets; print(secrets.token_urlsafe(32))' > "$file")
    echo "==> run: generated $1 in $file" >&2
  fi
  cat "$file"
}
token_file="$ANALYTICS_DATA_DIR/admin-token"
export ANALYTICS_ADMIN_TOKEN=${ANALYTICS_ADMIN_TOKEN:-$(secret admin-token)}
export ANALYTICS_INTERNAL_TOKEN=${ANALYTICS_INTERNAL_TOKEN:-$(secret internal-token)}

# Several ingest processes may share their port (SO_REUSEPORT) on multi-core hosts; Envoy runs a
# worker thread per core by itself.
export ANALYTICS_INGEST_PROCESSES=${ANALYTICS_INGEST_PROCESSES:-1}
if [ "$ANALYTICS_INGEST_PROCESSES" -gt 1 ]; then export ANALYTICS_GRPC_REUSE_PORT=true; fi
ingest_metrics_port=${ANALYTICS_INGEST_METRICS_ADDR##*:}
ingest_metrics_ports=$(seq "$ingest_metrics_port" $((ingest_metrics_port + ANALYTICS_INGEST_PROCESSES - 1)))

for port in "$ANALYTICS_PG_PORT" "$ANALYTICS_NATS_PORT" "$ANALYTICS_HTTP_PORT" \
    "${ANALYTICS_AUTH_ADDR##*:}" "${ANALYTICS_INGEST_ADDR##*:}" "${ANALYTICS_QUERY_ADDR##*:}" "${ANALYTICS_PROCESSOR_ADDR##*:}" \
    "${ANALYTICS_EDGE_ADMIN_ADDR##*:}" "${ANALYTICS_AUTH_METRICS_ADDR##*:}" "${ANALYTICS_PROCESSOR_METRICS_ADDR##*:}" \
    "${ANALYTICS_QUERY_METRICS_ADDR##*:}" "${ANALYTICS_QUERY_WS_ADDR##*:}" $ingest_metrics_ports; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "==> run: port $port is already in use; is another 'make run' running? (ports are set by ANALYTICS_*_PORT / *_ADDR)" >&2
    exit 1
  fi
done

echo "==> run: starting PostgreSQL+TimescaleDB (:$ANALYTICS_PG_PORT), NATS (:$ANALYTICS_NATS_PORT), auth, processor, ingest, query, Envoy"
honcho -f deploy/local/Procfile -d "$root" start -c "ingest=$ANALYTICS_INGEST_PROCESSES" &
honcho_pid=$!
stop() {
  trap - INT TERM
  echo "==> run: stopping"
  kill -TERM "$honcho_pid" 2>/dev/null || true
  wait "$honcho_pid" 2>/dev/null || true
  exit "${1:-0}"
}
trap stop INT TERM

http="http://$ANALYTICS_HTTP_HOST:$ANALYTICS_HTTP_PORT"
if ! python -m analytics_testing.stack wait --timeout 180 --http "$http" \
    --grpc "auth=$ANALYTICS_AUTH_ADDR" --grpc "processor=$ANALYTICS_PROCESSOR_ADDR" \
    --grpc "ingest=$ANALYTICS_INGEST_ADDR" --grpc "query=$ANALYTICS_QUERY_ADDR"; then
  echo "==> run: the system did not come up; see the messages above" >&2
  stop 1
fi

cat <<BANNER

  Analytics is running.
    HTTP API     $http   (OpenAPI: $http/openapi.json, docs: $http/docs)
    Envoy admin  http://$ANALYTICS_EDGE_ADMIN_ADDR   (stats, readiness; loopback only)
    Metrics      auth http://$ANALYTICS_AUTH_METRICS_ADDR/metrics  processor http://$ANALYTICS_PROCESSOR_METRICS_ADDR/metrics
                 query http://$ANALYTICS_QUERY_METRICS_ADDR/metrics  Envoy http://$ANALYTICS_EDGE_ADMIN_ADDR/stats/prometheus
                 ingest $(for p in $ingest_metrics_ports; do printf 'http://%s:%s/metrics ' "${ANALYTICS_INGEST_METRICS_ADDR%:*}" "$p"; done)
    gRPC         auth $ANALYTICS_AUTH_ADDR  ingest $ANALYTICS_INGEST_ADDR  query $ANALYTICS_QUERY_ADDR
    Admin token  $ANALYTICS_ADMIN_TOKEN   (kept in $token_file)
    Data         $ANALYTICS_DATA_DIR

  Try it (in another terminal):
    curl -s -X POST $http/api/site/create -H "Authorization: Bearer $ANALYTICS_ADMIN_TOKEN" -d '{"name": "My site"}'
    # then, with the site_id and api_key it returned:
    curl -s -X POST $http/api/event -H "x-api-key: \$API_KEY" \\
      -d '{"site_id": "'\$SITE_ID'", "event_type": "pageview", "path": "/", "user_id": "alice"}'
    curl -s "$http/api/stats?site_id=\$SITE_ID" -H "x-api-key: \$API_KEY"
    curl -sN "$http/v1/sites/\$SITE_ID/live" -H "x-api-key: \$API_KEY"   # live events (SSE); WebSocket: ws://$ANALYTICS_HTTP_HOST:$ANALYTICS_HTTP_PORT/ws?api_key=…

  Press Ctrl+C to stop.

BANNER
wait "$honcho_pid"
