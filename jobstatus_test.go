package meshflow_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/meshflow/meshflow"
	"github.com/meshflow/meshflow/cluster/checkpoint"
	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/internal/testutil"
	"github.com/meshflow/meshflow/messages/pb"
)

// TestJobStatusRecorded: a job's state is kept in the checkpoint store, so
// a client that looks after the fact still reads it: running with the
// checkpoint it was restored from, stopped after a clean end, and failed,
// with the error, once its recoveries are used up.
func TestJobStatusRecorded(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	js := natstest.JetStream(t, nc)
	ctx := testutil.Context(t, time.Minute)
	store, err := checkpoint.OpenStore(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	recs := seqBatches(mem, 4, 10)
	defer release(recs)

	ok := meshflow.NewPipeline("status-ok")
	c := &collector{mu: &sync.Mutex{}, seen: map[int64]int{}}
	ok.Source("in", meshflow.FromBatches(recs...)).To("out", meshflow.ToOperator(func() meshflow.Operator { return c }))
	if err := meshflow.Run(ctx, ok, meshflow.WithNATS(nc), meshflow.WithAllocator(mem)); err != nil {
		t.Fatal(err)
	}
	st, err := store.Status(ctx, "status-ok")
	if err != nil {
		t.Fatal(err)
	}
	if st.State != pb.JobState_JOB_STATE_STOPPED || st.Error != "" || st.Node != "local" {
		t.Errorf("after a clean end: %v", st)
	}

	bad := meshflow.NewPipeline("status-bad")
	bad.Source("in", meshflow.FromBatches(recs...)).
		Process("explode", func() meshflow.Operator { return panicky{} }).
		To("out", meshflow.ToOperator(func() meshflow.Operator { return c }))
	err = meshflow.Run(ctx, bad, meshflow.WithNATS(nc), meshflow.WithAllocator(mem),
		meshflow.WithRestartPolicy(meshflow.RestartPolicy{MaxFailures: 1, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond}),
		meshflow.WithCheckpoints(meshflow.CheckpointConfig{Recovery: meshflow.RecoveryPolicy{MaxRecoveries: 2, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond}}))
	if err == nil || !strings.Contains(err.Error(), "gave up after 2 recoveries") {
		t.Fatalf("Run: %v, want it to give up after 2 recoveries", err)
	}
	st, err = store.Status(ctx, "status-bad")
	if err != nil {
		t.Fatal(err)
	}
	if st.State != pb.JobState_JOB_STATE_FAILED || !strings.Contains(st.Error, "this domain is broken") {
		t.Errorf("after giving up: %v", st)
	}
	// By default a job recovers 3 times within 5 minutes, then fails.
	def := meshflow.NewPipeline("status-default")
	def.Source("in", meshflow.FromBatches(recs...)).
		Process("explode", func() meshflow.Operator { return panicky{} }).
		To("out", meshflow.ToOperator(func() meshflow.Operator { return c }))
	err = meshflow.Run(ctx, def, meshflow.WithNATS(nc), meshflow.WithAllocator(mem),
		meshflow.WithRestartPolicy(meshflow.RestartPolicy{MaxFailures: 1, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond}))
	if err == nil || !strings.Contains(err.Error(), "gave up after 3 recoveries within 5m0s") {
		t.Fatalf("Run with the default recovery policy: %v", err)
	}
	if _, err := store.Status(ctx, "never-ran"); !errors.Is(err, checkpoint.ErrUnknownJob) {
		t.Errorf("a job that never ran: %v", err)
	}
}

// TestJobStatusRunning: while a job runs, its recorded state is running,
// with the checkpoint it was restored from.
func TestJobStatusRunning(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	srv := natstest.RunJetStream(t)
	nc := natstest.Connect(t, srv)
	js := natstest.JetStream(t, nc)
	ctx := testutil.Context(t, time.Minute)
	store, err := checkpoint.OpenStore(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	recs := seqBatches(mem, 2, 10)
	defer release(recs)
	release := make(chan struct{})
	p := meshflow.NewPipeline("status-running")
	p.Source("in", meshflow.FromBatches(recs...)).
		To("out", meshflow.ToOperator(func() meshflow.Operator { return blocking{release: release} }))
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- meshflow.Run(runCtx, p, meshflow.WithNATS(nc), meshflow.WithAllocator(mem)) }()
	testutil.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		st, err := store.Status(ctx, "status-running")
		if err != nil {
			return err
		}
		if st.State != pb.JobState_JOB_STATE_RUNNING || st.RestoredFrom != 0 {
			return errors.New(st.String())
		}
		return nil
	})
	close(release)
	stop()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}
