#!/usr/bin/env bash
# Installs the real nats-server and nats CLI binaries into $(go env GOPATH)/bin
# from the Go module proxy. Tests that drive separate processes find them
# there (or on PATH); they fail, never skip, when CI=true and one is missing.
set -euo pipefail
bin="$(go env GOPATH)/bin"
want_server=v2.15.2
want_cli=v0.5.0
if ! "$bin/nats-server" --version 2>/dev/null | grep -q "${want_server}"; then
	go install "github.com/nats-io/nats-server/v2@${want_server}"
fi
if ! "$bin/nats" --version 2>/dev/null | grep -q "${want_cli#v}"; then
	go install "github.com/nats-io/natscli/nats@${want_cli}"
fi
"$bin/nats-server" --version
echo "nats $("$bin/nats" --version)"
