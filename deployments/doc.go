// Package deployments holds tether's Kubernetes manifests, kustomize bases
// and overlays that an operator applies with kubectl (see README.md), and the
// test that keeps them honest: it renders every kustomization with the
// kustomize API, decodes every object strictly into the Kubernetes API types,
// and checks the objects against each other and against the Dockerfile.
//
// The package has no Go API: its code is the test. The init step that
// prepares a node's socket directory is ../cmd/tether-socket-dir.
package deployments
