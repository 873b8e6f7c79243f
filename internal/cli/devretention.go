package cli

import (
	"time"

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
