// Package membershippb holds the protocol buffers of the membership service
// (membership.proto) and the Go code generated from them. Regenerate with
// go generate after changing the .proto file; CI checks that the committed
// code is current. The file is compiled from the module root, so that it is
// registered as "pkg/view/membershippb/membership.proto": a bare
// "membership.proto" collides with etcd's file of that name.
package membershippb

//go:generate protoc --proto_path=../../.. --go_out=../../.. --go_opt=paths=source_relative --go-grpc_out=../../.. --go-grpc_opt=paths=source_relative pkg/view/membershippb/membership.proto
