package natsio

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// DuplicateWindow is how long the streams Meshflow creates remember message
// ids (JetStream's Duplicates) to drop a message published again. A row is
// published again when its input is read again: after a crash, the input a
// source had not acknowledged comes back once the consumer's AckWait
// (30 s by default) has passed, and is processed again within seconds; the
// window leaves 15 s for that, and for a restart slower than AckWait.
//
// The window costs memory in the NATS server: it keeps every id published
// within it (about 200 bytes each with ids of some 40 characters), so at
// 4,700 messages a second a 45-second window holds 210,000 ids, some 40 MB.
const DuplicateWindow = 45 * time.Second

// literalPrefix is the subject up to its first wildcard token.
func literalPrefix(subject string) string {
	toks := strings.Split(subject, ".")
	for i, t := range toks {
		if t == "*" || t == ">" {
			if i == 0 {
				return "events"
			}
			return strings.Join(toks[:i], ".")
		}
	}
	return subject
}

// StreamName is the name of the stream the package creates for subject
// when none captures it: the subject's literal prefix, upper case, with
// every character a stream name cannot hold replaced by '_'.
func StreamName(subject string) string {
	var b strings.Builder
	for _, r := range strings.ToUpper(literalPrefix(subject)) {
		if r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// EnsureStream makes sure a stream captures subject: it returns the name of
// the stream covering it, creating stream name for subjects, without
// limits, when none does. It never changes an existing stream.
func EnsureStream(ctx context.Context, js jetstream.JetStream, name string, subjects []string) (string, error) {
	existing, err := js.StreamNameBySubject(ctx, subjects[0])
	if err == nil {
		return existing, nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return "", fmt.Errorf("natsio: look up stream for %s: %w", subjects[0], err)
	}
	_, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:       name,
		Subjects:   subjects,
		Storage:    jetstream.FileStorage,
		Retention:  jetstream.LimitsPolicy,
		Duplicates: DuplicateWindow,
	})
	if err != nil {
		return "", fmt.Errorf("natsio: create stream %s for %v: %w", name, subjects, err)
	}
	return name, nil
}

// Limits bound a stream; a field zero or negative sets no limit. The
// oldest messages are discarded when a limit is reached.
type Limits struct {
	MaxAge   time.Duration
	MaxBytes int64
	MaxMsgs  int64
	// Duplicates is how long the stream remembers message ids;
	// DuplicateWindow when 0.
	Duplicates time.Duration
}

// StreamState is the stream holding a subject, as EnsureOwnedStream left
// it.
type StreamState struct {
	// Name of the stream.
	Name string
	// Owned is true when the stream is Meshflow's: created by it, or
	// carrying the name and the single subject Meshflow gives it. Only
	// then are its limits set by EnsureOwnedStream.
	Owned bool
	// Config as the server reports it.
	Config jetstream.StreamConfig
}

// Limits returns the stream's limits, zero where it has none.
func (s StreamState) Limits() Limits {
	return Limits{
		MaxAge:   max(s.Config.MaxAge, 0),
		MaxBytes: max(s.Config.MaxBytes, 0),
		MaxMsgs:  max(s.Config.MaxMsgs, 0),
	}
}

// EnsureOwnedStream makes sure a stream captures subject and, when that
// stream is Meshflow's, that it has limits l: it creates stream name for
// subject alone when no stream covers subject, and updates the limits of
// an existing stream Meshflow owns (see StreamState.Owned) when they
// differ. A stream someone else made to capture subject (another name,
// or other subjects too) is used as it is: its configuration stays its
// owner's.
//
// A stream Meshflow owns discards its oldest messages at a limit and
// remembers message ids for l.Duplicates (default DuplicateWindow), or
// MaxAge when shorter.
func EnsureOwnedStream(ctx context.Context, js jetstream.JetStream, name, subject string, l Limits) (StreamState, error) {
	for attempt := 0; ; attempt++ {
		existing, err := js.StreamNameBySubject(ctx, subject)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			st, err := js.CreateStream(ctx, ownedConfig(jetstream.StreamConfig{
				Name:      name,
				Subjects:  []string{subject},
				Storage:   jetstream.FileStorage,
				Retention: jetstream.LimitsPolicy,
			}, l))
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) && attempt == 0 {
				continue // created meanwhile: look again
			}
			if err != nil {
				return StreamState{}, fmt.Errorf("natsio: create stream %s for %s: %w", name, subject, err)
			}
			return StreamState{Name: name, Owned: true, Config: st.CachedInfo().Config}, nil
		case err != nil:
			return StreamState{}, fmt.Errorf("natsio: look up stream for %s: %w", subject, err)
		}
		st, err := js.Stream(ctx, existing)
		if err != nil {
			return StreamState{}, fmt.Errorf("natsio: stream %s: %w", existing, err)
		}
		cfg := st.CachedInfo().Config
		if existing != name || !slices.Equal(cfg.Subjects, []string{subject}) {
			return StreamState{Name: existing, Config: cfg}, nil
		}
		want := ownedConfig(cfg, l)
		if sameLimits(cfg, want) {
			return StreamState{Name: name, Owned: true, Config: cfg}, nil
		}
		info, err := js.UpdateStream(ctx, want)
		if err != nil {
			return StreamState{}, fmt.Errorf("natsio: update the limits of stream %s: %w", name, err)
		}
		return StreamState{Name: name, Owned: true, Config: info.CachedInfo().Config}, nil
	}
}

// ownedConfig is cfg with limits l, discarding old messages.
func ownedConfig(cfg jetstream.StreamConfig, l Limits) jetstream.StreamConfig {
	cfg.MaxAge, cfg.MaxBytes, cfg.MaxMsgs = 0, -1, -1
	if l.MaxAge > 0 {
		cfg.MaxAge = l.MaxAge
	}
	if l.MaxBytes > 0 {
		cfg.MaxBytes = l.MaxBytes
	}
	if l.MaxMsgs > 0 {
		cfg.MaxMsgs = l.MaxMsgs
	}
	cfg.Discard = jetstream.DiscardOld
	cfg.Duplicates = DuplicateWindow
	if l.Duplicates > 0 {
		cfg.Duplicates = l.Duplicates
	}
	if cfg.MaxAge > 0 && cfg.MaxAge < cfg.Duplicates {
		cfg.Duplicates = cfg.MaxAge
	}
	return cfg
}

func sameLimits(a, b jetstream.StreamConfig) bool {
	return a.MaxAge == b.MaxAge && a.MaxBytes == b.MaxBytes && a.MaxMsgs == b.MaxMsgs &&
		a.Discard == b.Discard && a.Duplicates == b.Duplicates
}
