#!/usr/bin/env bash
# A first conversation with a running paygate: onboard a merchant, open accounts,
# move money, read a balance and the account's statement. scripts/run.sh prints
# these lines to copy and paste; a test runs this file against a real server so
# that they keep working.
set -euo pipefail
URL=${PAYGATE_URL:-http://127.0.0.1:8080}; DATA=${PAYGATE_DATA_DIR:-paygate-data}

H="Authorization: Bearer $(cat "$DATA/admin_token")"; J='Content-Type: application/json'
id() { sed -E 's/.*"id":"([^"]+)".*/\1/'; }
MER=$(curl -sf "$URL/v1/merchants" -H "$H" -H "$J" -d '{"name":"Coffee Shop"}' | id)
BANK=$(curl -sf "$URL/v1/accounts" -H "$H" -H "$J" -d '{"currency":"USD","kind":"system"}' | id)
SHOP=$(curl -sf "$URL/v1/accounts" -H "$H" -H "$J" -d "{\"currency\":\"USD\",\"owner\":\"$MER\"}" | id)
curl -sf "$URL/v1/transfers" -H "$H" -H "$J" -H 'Idempotency-Key: first-transfer' \
  -d "{\"debit_account\":\"$BANK\",\"credit_account\":\"$SHOP\",\"amount\":1250,\"currency\":\"USD\"}"; echo
curl -sf "$URL/v1/accounts/$SHOP" -H "$H"; echo
curl -sf "$URL/v1/accounts/$SHOP/entries" -H "$H"; echo
