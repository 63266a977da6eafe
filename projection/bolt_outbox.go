package projection

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
)

// An outbox entry in the bbolt store is one value: outboxBinary, then the
// subject, the message id and the headers, each length-prefixed
// (uvarint), the headers as a count of keys, each key with its count of
// values; then the payload as is, to the end. Stores written before
// hold the JSON of outboxRecord, which always begins with '{', so the
// first byte tells the two apart and both read.
//
// The binary form spares the projector's commit a JSON encoding, and the
// base64 of every payload it held, per entry: two per event.
const outboxBinary = 0x01

func encodeOutboxEntry(e *OutboxEntry) []byte {
	n := 1 + 3*binary.MaxVarintLen64 + len(e.Subject) + len(e.MsgID) + len(e.Data)
	for k, vs := range e.Header {
		n += 2*binary.MaxVarintLen64 + len(k)
		for _, v := range vs {
			n += binary.MaxVarintLen64 + len(v)
		}
	}
	return appendOutboxEntry(make([]byte, 0, n), e)
}

// appendOutboxEntry appends the record encodeOutboxEntry returns to b.
func appendOutboxEntry(b []byte, e *OutboxEntry) []byte {
	b = append(b, outboxBinary)
	b = appendString(b, e.Subject)
	b = appendString(b, e.MsgID)
	b = binary.AppendUvarint(b, uint64(len(e.Header)))
	for k, vs := range e.Header {
		b = appendString(b, k)
		b = binary.AppendUvarint(b, uint64(len(vs)))
		for _, v := range vs {
			b = appendString(b, v)
		}
	}
	return append(b, e.Data...)
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

var errOutboxRecord = errors.New("malformed outbox record")

// decodeOutboxEntry reads a value encodeOutboxEntry wrote, or the JSON of
// an outboxRecord from a store written before. Key is left to the caller.
func decodeOutboxEntry(v []byte) (OutboxEntry, error) {
	if len(v) > 0 && v[0] == '{' {
		var r outboxRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return OutboxEntry{}, err
		}
		return OutboxEntry{Subject: r.Subject, MsgID: r.MsgID, Header: r.Header, Data: r.Data}, nil
	}
	if len(v) == 0 || v[0] != outboxBinary {
		return OutboxEntry{}, fmt.Errorf("%w: unknown format", errOutboxRecord)
	}
	r := outboxReader{b: v[1:]}
	e := OutboxEntry{Subject: r.string(), MsgID: r.string()}
	if n := r.uvarint(); n > 0 && r.err == nil {
		if n > uint64(len(r.b)) {
			return OutboxEntry{}, fmt.Errorf("%w: %d headers in %d bytes", errOutboxRecord, n, len(r.b))
		}
		e.Header = make(map[string][]string, n)
		for range n {
			k := r.string()
			m := r.uvarint()
			if r.err != nil || m > uint64(len(r.b)) {
				return OutboxEntry{}, fmt.Errorf("%w: header %q", errOutboxRecord, k)
			}
			vs := make([]string, 0, m)
			for range m {
				vs = append(vs, r.string())
			}
			e.Header[k] = vs
		}
	}
	if r.err != nil {
		return OutboxEntry{}, r.err
	}
	e.Data = append([]byte(nil), r.b...) // v lives only as long as its transaction
	return e, nil
}

// outboxReader reads the length-prefixed parts of a binary outbox record;
// the first error sticks.
type outboxReader struct {
	b   []byte
	err error
}

func (r *outboxReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	n, w := binary.Uvarint(r.b)
	if w <= 0 {
		r.err = fmt.Errorf("%w: bad length", errOutboxRecord)
		return 0
	}
	r.b = r.b[w:]
	return n
}

func (r *outboxReader) string() string {
	n := r.uvarint()
	if r.err != nil {
		return ""
	}
	if n > uint64(len(r.b)) {
		r.err = fmt.Errorf("%w: %d bytes wanted, %d left", errOutboxRecord, n, len(r.b))
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}
