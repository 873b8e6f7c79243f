package natsio

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func newDeadLetters(t *testing.T, f *fixture, cfg DeadLettersConfig) *DeadLetters {
	t.Helper()
	if _, err := EnsureStream(f.ctx, f.js, "DLQ", []string{"dlq"}); err != nil {
		t.Fatal(err)
	}
	cfg.Subject = "dlq"
	d, err := NewDeadLetters(f.nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestDeadLettersTruncated: dead letters too large for the server's max
// payload (payload plus headers) are stored truncated, with the original
// size and SHA-256; those that fit are stored whole.
func TestDeadLettersTruncated(t *testing.T) {
	f := newFixture(t)
	d := newDeadLetters(t, f, DeadLettersConfig{Job: "job", Operator: "op"})
	max := int(f.nc.MaxPayload())
	long := strings.Repeat("r", 10_000)
	cases := []struct {
		name      string
		size      int
		reason    string
		header    nats.Header
		truncated bool
	}{
		{"small", 100, "bad", nil, false},
		{"exactly max payload", max, "bad", nil, true},
		{"fits alone, not with headers", max - 100, "bad", nil, true},
		{"twice max payload", 2 * max, "bad", nil, true},
		{"long reason and headers", 1000, long, nats.Header{"X-Extra": {long}}, false},
	}
	for i, c := range cases {
		payload := bytes.Repeat([]byte{byte('a' + i)}, c.size)
		err := d.Add(f.ctx, DeadLetter{ID: fmt.Sprint("dl-", i), Payload: payload, Reason: c.reason,
			Class: ClassDecode, SourceSubject: "in", SourceSeq: uint64(i + 1), Header: c.header})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
	}
	if err := d.Wait(f.ctx); err != nil {
		t.Fatal(err)
	}
	got := f.deadLetters("dlq")
	if len(got) != len(cases) {
		t.Fatalf("%d dead letters stored, want %d", len(got), len(cases))
	}
	for i, c := range cases {
		m := got[i]
		payload := bytes.Repeat([]byte{byte('a' + i)}, c.size)
		h := m.Header
		if h.Get(HeaderSourceSeq) != strconv.Itoa(i+1) || h.Get(HeaderSourceSubject) != "in" || h.Get(HeaderJob) != "job" ||
			h.Get(HeaderOperator) != "op" || h.Get(HeaderErrorClass) != ClassDecode || h.Get(HeaderError) == "" {
			t.Errorf("%s: headers %v", c.name, h)
		}
		if len(h.Get(HeaderError)) > maxHeaderValue || len(h.Get("X-Extra")) > maxHeaderValue {
			t.Errorf("%s: header values of %d and %d bytes", c.name, len(h.Get(HeaderError)), len(h.Get("X-Extra")))
		}
		if size := len(m.Data) + headerSize(h); size > max {
			t.Errorf("%s: stored %d bytes, more than max payload %d", c.name, size, max)
		}
		if !c.truncated {
			if !bytes.Equal(m.Data, payload) || h.Get(HeaderTruncated) != "" {
				t.Errorf("%s: stored %d bytes, truncated %q; want it whole", c.name, len(m.Data), h.Get(HeaderTruncated))
			}
			continue
		}
		sum := sha256.Sum256(payload)
		if h.Get(HeaderTruncated) != "true" || h.Get(HeaderOriginalSize) != strconv.Itoa(c.size) ||
			h.Get(HeaderOriginalSHA256) != hex.EncodeToString(sum[:]) || !bytes.HasPrefix(payload, m.Data) || len(m.Data) < max/2 {
			t.Errorf("%s: truncated to %d bytes, headers %v", c.name, len(m.Data), h)
		}
	}
}

// TestDeadLettersIdempotent: a dead letter added again with the same id
// (an event read again after a restart) is stored once; counts go by
// class.
func TestDeadLettersIdempotent(t *testing.T) {
	f := newFixture(t)
	d := newDeadLetters(t, f, DeadLettersConfig{MaxPending: 2})
	for range 2 {
		for i := range 5 {
			class := ClassDecode
			if i%2 == 1 {
				class = ClassSchema
			}
			err := d.Add(f.ctx, DeadLetter{ID: DeadLetterID("j", "o", Position(uint64(i+1), 0)),
				Payload: []byte("x"), Reason: "bad", Class: class})
			if err != nil {
				t.Fatal(err)
			}
			if d.Pending() > 2 {
				t.Fatalf("%d dead letters pending, more than MaxPending 2", d.Pending())
			}
		}
	}
	if err := d.Wait(f.ctx); err != nil {
		t.Fatal(err)
	}
	if d.Pending() != 0 {
		t.Fatalf("%d pending after Wait", d.Pending())
	}
	if got := f.deadLetters("dlq"); len(got) != 5 {
		t.Fatalf("%d dead letters stored, want 5", len(got))
	}
	if c := d.Counts(); c[ClassDecode] != 6 || c[ClassSchema] != 4 {
		t.Errorf("counts %v, want 6 decode and 4 schema added", c)
	}
	d.Close()
	d.Close()
	if d.Pending() != 0 {
		t.Fatalf("%d pending after Close", d.Pending())
	}
}

// TestDeadLettersWaitFails: Wait reports a dead letter the server refused,
// so the owner does not acknowledge its input; Wait and Add keep failing.
func TestDeadLettersWaitFails(t *testing.T) {
	f := newFixture(t)
	if _, err := f.js.CreateOrUpdateStream(f.ctx, jetstream.StreamConfig{Name: "FULL", Subjects: []string{"full"},
		MaxMsgs: 1, Discard: jetstream.DiscardNew}); err != nil {
		t.Fatal(err)
	}
	d, err := NewDeadLetters(f.nc, DeadLettersConfig{Subject: "full"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := d.Add(f.ctx, DeadLetter{ID: fmt.Sprint(i), Payload: []byte("x"), Reason: "bad"}); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if err := d.Wait(f.ctx); err == nil || !strings.Contains(err.Error(), "maximum messages exceeded") {
			t.Fatalf("Wait = %v, want the refusal", err)
		}
	}
	if err := d.Add(f.ctx, DeadLetter{Payload: []byte("x"), Reason: "bad"}); err == nil {
		t.Fatal("Add after a refusal succeeded")
	}
}
