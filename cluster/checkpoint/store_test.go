package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/meshflow/meshflow/internal/natstest"
	"github.com/meshflow/meshflow/messages/pb"
)

func openTestStore(t *testing.T) (*Store, context.Context) {
	t.Helper()
	srv := natstest.RunJetStream(t)
	js := natstest.JetStream(t, natstest.Connect(t, srv))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	s, err := OpenStore(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	return s, ctx
}

func testMeta(job string, id uint64, savepoint bool) *pb.CheckpointMeta {
	return &pb.CheckpointMeta{
		Job: job, Id: id, Savepoint: savepoint, TriggerTimeUs: int64(id) * 1000,
		Tasks: []*pb.TaskSnapshot{{Operator: "src", Instance: 0, Object: fmt.Sprintf("%s/%d/src/0", job, id), Size: 10}},
		Size:  10,
	}
}

func ids(ms []*pb.CheckpointMeta) []uint64 {
	out := make([]uint64, len(ms))
	for i, m := range ms {
		out[i] = m.Id
	}
	return out
}

func TestStoreCommitAndRead(t *testing.T) {
	s, ctx := openTestStore(t)
	const job = "shop.orders"

	// Nothing yet: Latest is nil, the zero Restored, the job is unknown.
	if m, err := s.Latest(ctx, job); m != nil || err != nil {
		t.Fatalf("Latest of a new job = %v, %v; want nil, nil", m, err)
	}
	if r, err := s.Restored(ctx, job); err != nil || r.Attempt != 0 || r.Latest != 0 {
		t.Fatalf("Restored of a new job = %+v, %v", r, err)
	}
	for name, f := range map[string]func() error{
		"List":   func() error { _, err := s.List(ctx, job); return err },
		"Get":    func() error { _, err := s.Get(ctx, job, 1); return err },
		"Status": func() error { _, err := s.Status(ctx, job); return err },
	} {
		if err := f(); !errors.Is(err, ErrUnknownJob) {
			t.Errorf("%s of an unknown job: %v, want ErrUnknownJob", name, err)
		}
	}

	for id := uint64(1); id <= 4; id++ {
		if err := s.SetAttempt(ctx, job, id); err != nil {
			t.Fatal(err)
		}
		if id == 3 {
			continue // checkpoint 3 failed
		}
		if err := s.Commit(ctx, testMeta(job, id, id == 2)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetAttempt(ctx, job, 5); err != nil {
		t.Fatal(err)
	}

	got, err := s.Latest(ctx, job)
	if err != nil || !proto.Equal(got, testMeta(job, 4, false)) {
		t.Fatalf("Latest = %v, %v; want checkpoint 4", got, err)
	}
	list, err := s.List(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(ids(list)) != "[1 2 4]" {
		t.Fatalf("List = %v, want [1 2 4]", ids(list))
	}
	if m, err := s.Get(ctx, job, 2); err != nil || !m.Savepoint {
		t.Fatalf("Get 2 = %v, %v", m, err)
	}
	if _, err := s.Get(ctx, job, 3); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get 3 = %v, want ErrNotFound", err)
	}
	if a, err := s.Attempt(ctx, job); err != nil || a != 5 {
		t.Fatalf("Attempt = %d, %v; want 5", a, err)
	}
	r, err := s.Restored(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	if want := "{Attempt:5 Latest:4 Retained:[1 4] Savepoints:[2]}"; fmt.Sprintf("%+v", r) != want {
		t.Fatalf("Restored = %+v, want %s", r, want)
	}

	// Attempt only moves up.
	if err := s.SetAttempt(ctx, job, 5); !errors.Is(err, ErrSuperseded) {
		t.Fatalf("SetAttempt to the same id: %v, want ErrSuperseded", err)
	}
	// A commit below latest fails and leaves no metadata behind.
	if err := s.Commit(ctx, testMeta(job, 3, false)); !errors.Is(err, ErrSuperseded) {
		t.Fatalf("Commit 3 after 4: %v, want ErrSuperseded", err)
	}
	if all, _ := s.list(ctx, job); fmt.Sprint(ids(all)) != "[1 2 4]" {
		t.Fatalf("after a superseded commit the records are %v", ids(all))
	}
	// Committing the same checkpoint again is harmless, another one under
	// the same id is refused.
	if err := s.Commit(ctx, testMeta(job, 4, false)); err != nil {
		t.Fatalf("recommit of 4: %v", err)
	}
	other := testMeta(job, 4, false)
	other.Size = 99
	if err := s.Commit(ctx, other); !errors.Is(err, ErrConflict) {
		t.Fatalf("other commit of 4: %v, want ErrConflict", err)
	}

	// Deleting the latest's metadata: Latest falls back to the newest below.
	if err := s.Delete(ctx, job, 4); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, job, 4); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	if m, err := s.Latest(ctx, job); err != nil || m.GetId() != 2 {
		t.Fatalf("Latest after deleting 4 = %v, %v; want 2", m, err)
	}

	// Status.
	st := &pb.JobStatus{State: pb.JobState_JOB_STATE_FAILED, Error: "boom", Node: "n1", TimeUs: 7, RestoredFrom: 2}
	if err := s.SetStatus(ctx, job, st); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Status(ctx, job); err != nil || !proto.Equal(got, st) {
		t.Fatalf("Status = %v, %v", got, err)
	}

	// Another job's records are apart, even one whose name extends this one's.
	if m, err := s.Latest(ctx, job+".meta"); m != nil || err != nil {
		t.Fatalf("Latest of another job = %v, %v", m, err)
	}
	if err := s.Commit(ctx, testMeta(job+".meta", 1, false)); err != nil {
		t.Fatal(err)
	}
	if list, err := s.List(ctx, job); err != nil || fmt.Sprint(ids(list)) != "[1 2]" {
		t.Fatalf("List = %v, %v; want [1 2]", ids(list), err)
	}
}

// TestStoreIncompleteMeta: metadata written above latest (a coordinator
// stopped between the two writes) is not complete.
func TestStoreIncompleteMeta(t *testing.T) {
	s, ctx := openTestStore(t)
	const job = "orders"
	if err := s.Commit(ctx, testMeta(job, 1, false)); err != nil {
		t.Fatal(err)
	}
	data, err := proto.Marshal(testMeta(job, 2, false))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.kv.Put(ctx, metaKey(job, 2), data); err != nil {
		t.Fatal(err)
	}
	if list, err := s.List(ctx, job); err != nil || fmt.Sprint(ids(list)) != "[1]" {
		t.Fatalf("List = %v, %v; want [1]", ids(list), err)
	}
	if _, err := s.Get(ctx, job, 2); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get 2 = %v, want ErrNotFound", err)
	}
	r, err := s.Restored(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	if want := "{Attempt:2 Latest:1 Retained:[1] Savepoints:[]}"; fmt.Sprintf("%+v", r) != want {
		t.Fatalf("Restored = %+v, want %s", r, want)
	}
	// The coordinator built from it deletes checkpoint 2 and goes on at 3.
	c := New(DefaultConfig(job, []string{"src/0"}), r)
	acts := c.Step(Trigger{Now: t0, Token: 1})
	if fmt.Sprint(acts) != "[{2} {3}]" {
		t.Fatalf("first actions %v, want delete 2 then attempt 3", acts)
	}
	if _, ok := acts[0].(DeleteCheckpoint); !ok {
		t.Fatalf("first action %T, want DeleteCheckpoint", acts[0])
	}
}

// TestStoreConcurrentCommits races commits on latest: the CAS lets exactly
// one writer move it at a time, and latest never goes back.
func TestStoreConcurrentCommits(t *testing.T) {
	s, ctx := openTestStore(t)
	const job = "orders"
	superseded := 0
	for round := range 20 {
		lo, hi := uint64(2*round+1), uint64(2*round+2)
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, id := range []uint64{lo, hi} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = s.Commit(ctx, testMeta(job, id, false))
			}()
		}
		wg.Wait()
		if errs[1] != nil {
			t.Fatalf("round %d: commit %d: %v", round, hi, errs[1])
		}
		if errs[0] != nil && !errors.Is(errs[0], ErrSuperseded) {
			t.Fatalf("round %d: commit %d: %v", round, lo, errs[0])
		}
		if errs[0] != nil {
			superseded++
		}
		m, err := s.Latest(ctx, job)
		if err != nil || m.GetId() != hi {
			t.Fatalf("round %d: latest = %v, %v; want %d", round, m, err, hi)
		}
		// The loser left nothing that could pass for complete.
		if _, err := s.Get(ctx, job, lo); (err == nil) != (errs[0] == nil) {
			t.Fatalf("round %d: commit %d returned %v, Get says %v", round, lo, errs[0], err)
		}
	}

	t.Logf("the lower commit was superseded in %d of 20 rounds", superseded)

	// Two writers with the same id and different content: one wins.
	a, b := testMeta(job, 100, false), testMeta(job, 100, true)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, m := range []*pb.CheckpointMeta{a, b} {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = s.Commit(ctx, m) }()
	}
	wg.Wait()
	if (errs[0] == nil) == (errs[1] == nil) {
		t.Fatalf("same id twice: errors %v, %v; want exactly one to fail", errs[0], errs[1])
	}
	winner := a
	if errs[0] != nil {
		winner = b
	}
	if m, err := s.Latest(ctx, job); err != nil || !proto.Equal(m, winner) {
		t.Fatalf("latest = %v, %v; want the winner %v", m, err, winner)
	}
}
