package domains

import (
	"errors"
	"fmt"
	"time"
)

// Unlimited, as a field of a [Retention], lifts that limit.
const Unlimited = -1

// MinRetentionAge is the smallest MaxAge a port may keep its messages.
const MinRetentionAge = time.Second

// Retention bounds what JetStream keeps of a port's stream. When a limit
// is reached the oldest messages are discarded, so publishers are never
// refused; a consumer that falls further behind than the limits loses the
// messages discarded before it read them.
//
// A zero field takes the mesh's default for that field (see
// meshflow.WithRetention); Unlimited lifts the limit.
type Retention struct {
	// MaxAge is how long a message is kept.
	MaxAge time.Duration
	// MaxBytes bounds the size of the stream (message data, subjects and
	// headers), in bytes.
	MaxBytes int64
	// MaxMsgs bounds the number of messages in the stream.
	MaxMsgs int64
	// DuplicateWindow is how long the stream remembers message ids
	// (Nats-Msg-Id): a message published again within it is stored once.
	// Default natsio.DuplicateWindow (45 s). Exactly-once delivery does
	// not depend on it (see docs/checkpoints.md); a shorter window keeps
	// less in the server's memory.
	DuplicateWindow time.Duration
}

// IsZero reports whether r sets no field.
func (r Retention) IsZero() bool { return r == Retention{} }

// Or returns r with each zero field taken from def.
func (r Retention) Or(def Retention) Retention {
	if r.MaxAge == 0 {
		r.MaxAge = def.MaxAge
	}
	if r.MaxBytes == 0 {
		r.MaxBytes = def.MaxBytes
	}
	if r.MaxMsgs == 0 {
		r.MaxMsgs = def.MaxMsgs
	}
	if r.DuplicateWindow == 0 {
		r.DuplicateWindow = def.DuplicateWindow
	}
	return r
}

// Validate reports every field out of range: a limit is zero, Unlimited,
// or positive (MaxAge at least MinRetentionAge).
func (r Retention) Validate() error {
	var errs []error
	switch {
	case r.MaxAge == 0 || r.MaxAge == Unlimited:
	case r.MaxAge < 0:
		errs = append(errs, fmt.Errorf("max age %v is negative (use domains.Unlimited for no limit)", r.MaxAge))
	case r.MaxAge < MinRetentionAge:
		errs = append(errs, fmt.Errorf("max age %v is below the minimum of %v", r.MaxAge, MinRetentionAge))
	}
	if r.MaxBytes < 0 && r.MaxBytes != Unlimited {
		errs = append(errs, fmt.Errorf("max bytes %d is negative (use domains.Unlimited for no limit)", r.MaxBytes))
	}
	if r.MaxMsgs < 0 && r.MaxMsgs != Unlimited {
		errs = append(errs, fmt.Errorf("max messages %d is negative (use domains.Unlimited for no limit)", r.MaxMsgs))
	}
	if r.DuplicateWindow < 0 || (r.DuplicateWindow > 0 && r.DuplicateWindow < 100*time.Millisecond) {
		errs = append(errs, fmt.Errorf("duplicate window %v: want 0 (the default) or at least 100ms", r.DuplicateWindow))
	}
	return errors.Join(errs...)
}

// String describes r for people, e.g. "max age 1h0m0s, max bytes 64 MiB,
// max messages unlimited".
func (r Retention) String() string {
	age := "unlimited"
	if r.MaxAge > 0 {
		age = r.MaxAge.String()
	}
	bytes := "unlimited"
	if r.MaxBytes > 0 {
		bytes = formatBytes(r.MaxBytes)
	}
	msgs := "unlimited"
	if r.MaxMsgs > 0 {
		msgs = fmt.Sprint(r.MaxMsgs)
	}
	return "max age " + age + ", max bytes " + bytes + ", max messages " + msgs
}

func formatBytes(n int64) string {
	for _, u := range []struct {
		unit string
		size int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size && n%u.size == 0 {
			return fmt.Sprintf("%d %s", n/u.size, u.unit)
		}
	}
	return fmt.Sprintf("%d B", n)
}
