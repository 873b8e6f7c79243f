package natsio

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

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

func streamName(subject string) string {
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
// the stream covering it, creating stream name for subjects when none does.
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
		Duplicates: 2 * time.Minute,
	})
	if err != nil {
		return "", fmt.Errorf("natsio: create stream %s for %v: %w", name, subjects, err)
	}
	return name, nil
}
