package actors

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/meshflow/meshflow/internal/natstest"
)

// TestActorSystemReuse: a node closed with no job running leaves its actor
// system to the next node, whose logger then gets the system's logs; a
// node whose job's actors did not stop shuts its system down.
func TestActorSystemReuse(t *testing.T) {
	nc := natstest.Connect(t, natstest.RunJetStream(t))
	for _, tc := range []struct {
		name  string
		stuck bool
	}{
		{"idle node", false},
		{"node with actors left", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var log1, log2 bytes.Buffer
			n1, err := NewNode(NodeConfig{ID: "a", NATS: nc, Logger: slog.New(slog.NewTextHandler(&log1, nil))})
			if err != nil {
				t.Fatal(err)
			}
			sys1 := n1.system
			n1.stuck.Store(tc.stuck)
			n1.Close()
			n2, err := NewNode(NodeConfig{ID: "b", NATS: nc, Logger: slog.New(slog.NewTextHandler(&log2, nil))})
			if err != nil {
				t.Fatal(err)
			}
			defer n2.Close()
			if reused := n2.system == sys1; reused == tc.stuck {
				t.Fatalf("system reused: %v", reused)
			}
			if tc.stuck && !sys1.IsStopped() {
				t.Errorf("the system left with actors was not shut down")
			}
			n2.system.Logger().Warn("from the system")
			if !strings.Contains(log2.String(), "from the system") || !strings.Contains(log2.String(), "node=b") {
				t.Errorf("node b's log: %q", log2.String())
			}
			if strings.Contains(log1.String(), "from the system") {
				t.Errorf("node a's log got node b's system's record: %q", log1.String())
			}
		})
	}
}
