package cli

import (
	"time"

	"github.com/meshflow/meshflow/domains"
)

// devRetention bounds every stream of the example mesh `meshflow dev`
// runs, so that its data directory stops growing: at the generator's
// default rate the busiest stream (an input port of JSON events) takes
// about 0.5 MB/s, so 64 MiB keeps its last two minutes or more, and
// trickling streams keep their last hour. The nine streams of the example
// then hold at most 9 × 64 MiB on disk, plus one file-store block
// (8 MiB) each.
var devRetention = domains.Retention{MaxAge: time.Hour, MaxBytes: 64 << 20}
