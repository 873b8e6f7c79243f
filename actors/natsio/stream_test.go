package natsio_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow/actors/natsio"
	"github.com/meshflow/meshflow/internal/natstest"
)

func streamConfig(t *testing.T, ctx context.Context, js jetstream.JetStream, name string) jetstream.StreamConfig {
	t.Helper()
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().Config
}

// TestEnsureOwnedStream: a stream Meshflow creates has the limits asked
// for, read back from the server; asking again with other limits updates
// them; a stream made outside Meshflow keeps its configuration.
func TestEnsureOwnedStream(t *testing.T) {
	type want struct {
		owned                     bool
		maxAge, duplicates        time.Duration
		maxBytes, maxMsgs         int64
		discard                   jetstream.DiscardPolicy
		subjects                  []string
		name                      string
		configMaxBytes, configMsg int64
	}
	tests := []struct {
		name string
		// setup runs before EnsureOwnedStream, on a fresh server.
		setup  func(t *testing.T, ctx context.Context, js jetstream.JetStream)
		limits []natsio.Limits // applied in turn; want is checked after the last
		want   want
	}{{
		name:   "created with limits",
		limits: []natsio.Limits{{MaxAge: time.Hour, MaxBytes: 64 << 20, MaxMsgs: 1000}},
		want: want{owned: true, name: "MESH_D_P", subjects: []string{"mesh.d.p"}, maxAge: time.Hour, maxBytes: 64 << 20, maxMsgs: 1000,
			duplicates: natsio.DuplicateWindow, discard: jetstream.DiscardOld, configMaxBytes: 64 << 20, configMsg: 1000},
	}, {
		name:   "created without limits",
		limits: []natsio.Limits{{}},
		want: want{owned: true, name: "MESH_D_P", subjects: []string{"mesh.d.p"}, duplicates: natsio.DuplicateWindow,
			discard: jetstream.DiscardOld, configMaxBytes: -1, configMsg: -1},
	}, {
		name:   "redeployed with new limits",
		limits: []natsio.Limits{{MaxAge: time.Hour, MaxBytes: 64 << 20}, {MaxAge: 2 * time.Hour, MaxMsgs: 500}},
		want: want{owned: true, name: "MESH_D_P", subjects: []string{"mesh.d.p"}, maxAge: 2 * time.Hour, maxMsgs: 500,
			duplicates: natsio.DuplicateWindow, discard: jetstream.DiscardOld, configMaxBytes: -1, configMsg: 500},
	}, {
		name:   "a max age below the duplicate window shortens the window",
		limits: []natsio.Limits{{MaxAge: 10 * time.Second}},
		want: want{owned: true, name: "MESH_D_P", subjects: []string{"mesh.d.p"}, maxAge: 10 * time.Second,
			duplicates: 10 * time.Second, discard: jetstream.DiscardOld, configMaxBytes: -1, configMsg: -1},
	}, {
		name: "adopts the unlimited stream EnsureStream made",
		setup: func(t *testing.T, ctx context.Context, js jetstream.JetStream) {
			if _, err := natsio.EnsureStream(ctx, js, "MESH_D_P", []string{"mesh.d.p"}); err != nil {
				t.Fatal(err)
			}
		},
		limits: []natsio.Limits{{MaxBytes: 32 << 20}},
		want: want{owned: true, name: "MESH_D_P", subjects: []string{"mesh.d.p"}, maxBytes: 32 << 20,
			duplicates: natsio.DuplicateWindow, discard: jetstream.DiscardOld, configMaxBytes: 32 << 20, configMsg: -1},
	}, {
		name: "leaves a stream made outside Meshflow alone",
		setup: func(t *testing.T, ctx context.Context, js jetstream.JetStream) {
			if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVERYTHING_D", Subjects: []string{"mesh.d.>"},
				MaxMsgs: 7, Discard: jetstream.DiscardNew, Duplicates: 5 * time.Minute}); err != nil {
				t.Fatal(err)
			}
		},
		limits: []natsio.Limits{{MaxAge: time.Hour, MaxBytes: 64 << 20}},
		want: want{owned: false, name: "EVERYTHING_D", subjects: []string{"mesh.d.>"}, maxMsgs: 7,
			duplicates: 5 * time.Minute, discard: jetstream.DiscardNew, configMaxBytes: -1, configMsg: 7},
	}, {
		name: "leaves a stream of Meshflow's name with other subjects alone",
		setup: func(t *testing.T, ctx context.Context, js jetstream.JetStream) {
			if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "MESH_D_P", Subjects: []string{"mesh.d.p", "other"}}); err != nil {
				t.Fatal(err)
			}
		},
		limits: []natsio.Limits{{MaxAge: time.Hour}},
		want: want{owned: false, name: "MESH_D_P", subjects: []string{"mesh.d.p", "other"},
			duplicates: 2 * time.Minute, discard: jetstream.DiscardOld, configMaxBytes: -1, configMsg: -1},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := natstest.RunJetStream(t)
			js := natstest.JetStream(t, natstest.Connect(t, srv))
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			if tt.setup != nil {
				tt.setup(t, ctx, js)
			}
			var st natsio.StreamState
			for _, l := range tt.limits {
				var err error
				if st, err = natsio.EnsureOwnedStream(ctx, js, "MESH_D_P", "mesh.d.p", l); err != nil {
					t.Fatal(err)
				}
			}
			w := tt.want
			if st.Name != w.name || st.Owned != w.owned {
				t.Errorf("stream %s owned %v, want %s owned %v", st.Name, st.Owned, w.name, w.owned)
			}
			if got, want := st.Limits(), (natsio.Limits{MaxAge: w.maxAge, MaxBytes: w.maxBytes, MaxMsgs: w.maxMsgs}); got != want {
				t.Errorf("returned limits %+v, want %+v", got, want)
			}
			// Read back from the server, not from what was returned.
			cfg := streamConfig(t, ctx, js, w.name)
			if cfg.MaxAge != w.maxAge || cfg.MaxBytes != w.configMaxBytes || cfg.MaxMsgs != w.configMsg ||
				cfg.Discard != w.discard || cfg.Duplicates != w.duplicates {
				t.Errorf("server config: max age %v, max bytes %d, max msgs %d, discard %v, duplicates %v; want %v, %d, %d, %v, %v",
					cfg.MaxAge, cfg.MaxBytes, cfg.MaxMsgs, cfg.Discard, cfg.Duplicates,
					w.maxAge, w.configMaxBytes, w.configMsg, w.discard, w.duplicates)
			}
			if len(cfg.Subjects) != len(w.subjects) {
				t.Errorf("subjects %v, want %v", cfg.Subjects, w.subjects)
			}
			for i := range w.subjects {
				if i < len(cfg.Subjects) && cfg.Subjects[i] != w.subjects[i] {
					t.Errorf("subjects %v, want %v", cfg.Subjects, w.subjects)
				}
			}
		})
	}
}

// TestEnsureOwnedStreamDiscardsOld: publishing three times a stream's max
// bytes keeps it at or below the limit, holding the newest messages.
func TestEnsureOwnedStreamDiscardsOld(t *testing.T) {
	const limit = 8 << 20
	srv := natstest.RunJetStream(t)
	js := natstest.JetStream(t, natstest.Connect(t, srv))
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if _, err := natsio.EnsureOwnedStream(ctx, js, "MESH_D_P", "mesh.d.p", natsio.Limits{MaxBytes: limit}); err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte("x"), 64<<10)
	const n = 3 * limit / (64 << 10)
	for i := range n {
		if _, err := js.Publish(ctx, "mesh.d.p", payload); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	s, err := js.Stream(ctx, "MESH_D_P")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Bytes > limit {
		t.Errorf("stream holds %d bytes, over its limit of %d", info.State.Bytes, limit)
	}
	if info.State.LastSeq != n || info.State.FirstSeq <= 1 || info.State.Msgs == 0 {
		t.Errorf("state %+v: want the newest of %d messages kept, the oldest discarded", info.State, n)
	}
	if info.State.Msgs < n/3-1 {
		t.Errorf("kept %d messages; a limit of %d bytes holds about %d", info.State.Msgs, limit, n/3)
	}
}
