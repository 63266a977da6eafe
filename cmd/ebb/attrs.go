package main

import "go.opentelemetry.io/otel/attribute"

// Attribute keys the binary's metrics use.
const attrStream = "stream"

func streamAttr(name string) attribute.KeyValue { return attribute.String(attrStream, name) }
