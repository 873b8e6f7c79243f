package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow/actors/natsio"
	"github.com/meshflow/meshflow/domains"
)

// devRetention bounds every stream of the example mesh `meshflow dev`
// runs, so that its data directory stops growing: its nine streams hold at
// most 9 × 30 MiB (plus one partly deleted 4 MiB file-store block each).
// At the generator's default rate the busiest stream grows by about
// 0.4 MB/s, so it keeps its last minute or more; streams that trickle keep
// their last hour.
//
// The size also bounds memory: nats-server stores a stream limited to
// under 32 MiB in 4 MiB blocks instead of 8 MiB ones, and keeps about two
// blocks of each busy stream in memory (the one written, and the oldest
// one while the limit deletes from it).
var devRetention = domains.Retention{MaxAge: time.Hour, MaxBytes: 30 << 20}

// boundDevStreams makes the streams of subjects (a pipeline's input, its
// dead letters and its output) with devRetention, or bounds them to it,
// before a pipeline `meshflow dev` runs outside a mesh starts: its
// sources and sinks then find them. The streams are named as a mesh
// names its own (MESH_ORDERS_PLACED for mesh.orders.placed).
func boundDevStreams(ctx context.Context, nc *nats.Conn, r domains.Retention, subjects ...string) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	limits := natsio.Limits{MaxAge: r.MaxAge, MaxBytes: r.MaxBytes, MaxMsgs: r.MaxMsgs, Duplicates: r.DuplicateWindow}
	for _, s := range subjects {
		if _, err := natsio.EnsureOwnedStream(ctx, js, domains.StreamName(s), s, limits); err != nil {
			return fmt.Errorf("dev: %w", err)
		}
	}
	return nil
}
