package messages

// Regenerates messages/pb from proto/meshflow/v1. Needs protoc (3.21 or
// later) and protoc-gen-go v1.36.12 on PATH:
//
//	go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
//go:generate protoc --proto_path=../proto --go_out=.. --go_opt=module=github.com/meshflow/meshflow meshflow/v1/dataplane.proto meshflow/v1/checkpoint.proto meshflow/v1/status.proto
