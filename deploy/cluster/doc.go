// Package cluster holds no code: deploy/cluster is the 3-node NATS
// JetStream cluster ebb runs on beyond one machine (nats-N.conf, their TLS
// variants nats-N-tls.conf, and compose.yaml with two ebb servers). Its
// tests parse every config with nats-server's own parser, and measure
// durability (raw publish and ebb's push, fsync always and at nats-server's
// default interval, R1 and R3) on the cluster run in process by
// package clustertest, which also runs it for ebb's other cluster tests.
package cluster
