#!/usr/bin/env bash
# Debian packages the test suite and benchmarks use: chromium (browser tests through Playwright),
# oathtool (an independent TOTP implementation), wrk and nginx (bench/), promtool, systemd-analyze
# and logrotate (checks of the operator's kit in deploy/), caddy (forward-auth tests; nginx-light
# has the auth_request module they need too), postfix (its smtp-sink test server: notification
# tests against a second SMTP implementation; installed as "No configuration", so no mail
# system is set up or started). Installed only when missing.
set -euo pipefail
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v oathtool >/dev/null || need+=(oathtool)
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
command -v caddy >/dev/null || need+=(caddy)
command -v promtool >/dev/null || need+=(prometheus)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v logrotate >/dev/null || need+=(logrotate)
[ -x /usr/sbin/smtp-sink ] || need+=(postfix)
# scripts/cluster.sh and tests/cluster: Redis and PostgreSQL servers and clients, runuser.
command -v redis-server >/dev/null || need+=(redis-server)
command -v psql >/dev/null || need+=(postgresql-client)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v ss >/dev/null || need+=(iproute2)   # which instance holds an SMTP connection
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
