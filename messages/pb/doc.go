// Package pb holds the Go code generated from proto/meshflow/v1: the
// protobuf control messages of the data plane (frame headers, credits, job
// failures). Regenerate it with `go generate ./messages`.
package pb
