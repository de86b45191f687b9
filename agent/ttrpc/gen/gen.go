// Package gen holds Go code generated from guest-components' ttrpc protos
// (copied unchanged into protos/; README.md names the commit): package cdh
// (Confidential Data Hub, proto package "api") and package aa (Attestation
// Agent, proto package "attestation_agent"); and package kata, a subset of
// kata-containers' agent API (proto package "grpc", grpc.AgentService) that
// coffer's VM guest serves. Do not edit cdh/ or aa/ by
// hand; run go generate here (needs protoc from Debian protobuf-compiler).
package gen

//go:generate ./generate.sh
