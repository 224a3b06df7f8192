#!/usr/bin/env bash
# Generates the Python code and the descriptor set for proto/ into libs/analytics-proto.
# The proto package analytics.v1 is also the Python import path, so no import rewriting is needed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-"$root/.venv/bin/python"}
out="$root/libs/analytics-proto/src"
pkg="$out/analytics/v1"

# googleapis-common-protos ships google/api and google/rpc sources next to its generated modules.
common=$("$python" -c 'import google.api, os; print(os.path.dirname(os.path.dirname(google.api.__path__[0])))')
wkt=$("$python" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')

mkdir -p "$pkg"
find "$pkg" -name '*_pb2*' -delete
rm -f "$pkg/descriptor_set.binpb"

mapfile -t protos < <(cd "$root/proto" && find analytics -name '*.proto' | sort)
cd "$root/proto"
"$python" -m grpc_tools.protoc -I . -I "$common" -I "$wkt" \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" "${protos[@]}"
# The descriptor set feeds the HTTP edge (Envoy's transcoder), the OpenAPI document and buf. It carries
# google.rpc.Status and its details so the edge can render error details as JSON.
"$python" -m grpc_tools.protoc -I . -I "$common" -I "$wkt" --include_imports --include_source_info \
  --descriptor_set_out="$pkg/descriptor_set.binpb" \
  "${protos[@]}" google/rpc/status.proto google/rpc/error_details.proto
touch "$out/analytics/__init__.py" "$pkg/__init__.py" "$out/analytics/py.typed"
echo "proto: generated $(ls "$pkg"/*_pb2.py | wc -l) modules and $(basename "$pkg/descriptor_set.binpb")"
