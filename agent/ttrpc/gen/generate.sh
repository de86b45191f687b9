#!/bin/sh
# Regenerates the Go code from guest-components' protos (see README.md).
# Dev-time only: needs protoc (Debian protobuf-compiler); the plugins are
# built at the versions go.mod pins.
set -eu
cd "$(dirname "$0")"
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
GOBIN=$bin go install google.golang.org/protobuf/cmd/protoc-gen-go github.com/containerd/ttrpc/cmd/protoc-gen-go-ttrpc
mod=github.com/coffer-dev/coffer/agent/ttrpc/gen
cdh=Mconfidential-data-hub/api.proto=$mod/cdh
aa=Mattestation-agent/attestation-agent.proto=$mod/aa
kata=Mkata/agent.proto=$mod/kata
protoc -I protos \
	--plugin=protoc-gen-go="$bin/protoc-gen-go" --plugin=protoc-gen-go-ttrpc="$bin/protoc-gen-go-ttrpc" \
	--go_out=. --go_opt=module=$mod --go_opt="$cdh" --go_opt="$aa" --go_opt="$kata" \
	--go-ttrpc_out=. --go-ttrpc_opt=module=$mod --go-ttrpc_opt="$cdh" --go-ttrpc_opt="$aa" --go-ttrpc_opt="$kata" \
	confidential-data-hub/api.proto attestation-agent/attestation-agent.proto kata/agent.proto
