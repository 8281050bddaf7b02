#!/bin/sh
# Moves an amount between two accounts on two databases, atomically, with curl.
#   TPC_URL (default http://127.0.0.1:8080) and TPC_TOKEN from the environment.
#   usage: transfer.sh FROM_BANK FROM_ACCOUNT TO_BANK TO_ACCOUNT AMOUNT [IDEMPOTENCY_KEY]
set -eu
[ $# -ge 5 ] || { echo "usage: $0 FROM_BANK FROM_ACCOUNT TO_BANK TO_ACCOUNT AMOUNT [IDEMPOTENCY_KEY]" >&2; exit 2; }
url=${TPC_URL:-http://127.0.0.1:8080}
key=${6:-transfer-$(date +%s)-$$}
curl -s -X POST "$url/v1/transactions" \
  -H 'content-type: application/json' \
  -H "idempotency-key: $key" \
  ${TPC_TOKEN:+-H "authorization: Bearer $TPC_TOKEN"} \
  -d '{
    "branches": [
      { "resource": "'"$1"'", "statements": [
        { "sql": "UPDATE accounts SET balance = balance - $1 WHERE id = $2 AND balance >= $1",
          "params": ['"$5"', '"$2"'], "expect": { "rowCount": 1 } } ] },
      { "resource": "'"$3"'", "statements": [
        { "sql": "UPDATE accounts SET balance = balance + $1 WHERE id = $2",
          "params": ['"$5"', '"$4"'], "expect": { "rowCount": 1 } } ] }
    ],
    "timeoutMs": 10000
  }'
echo
