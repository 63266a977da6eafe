// Package check holds the tests that validate ebb's deploy artefacts
// without a container engine or a cluster: the Kubernetes manifests
// (deploy/k8s) decoded strictly into the Kubernetes API types, the compose
// file (deploy/compose) and its NATS cluster config (parsed by
// nats-server's own config loader), the Dockerfile (deploy/docker), and
// the ebb serve flags every artefact passes, checked against the flags
// the binary built from this tree accepts.
//
// It is its own Go module so that the Kubernetes API types stay out of
// ebb's module. Run it from this directory: go test ./... (.ci/run does).
// The systemd unit is checked by systemd-analyze (deploy/systemd/verify.sh)
// and the static build by deploy/docker/check-static.sh.
package check
