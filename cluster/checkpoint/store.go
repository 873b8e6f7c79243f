package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/meshflow/meshflow/messages/pb"
)

// Bucket is the JetStream KV bucket holding checkpoint metadata.
const Bucket = "meshflow_checkpoints"

// Keys of a job's records in Bucket; job is the job's subject name.
func metaKey(job string, id uint64) string { return job + ".meta." + strconv.FormatUint(id, 10) }
func latestKey(job string) string          { return job + ".latest" }
func attemptKey(job string) string         { return job + ".attempt" }
func statusKey(job string) string          { return job + ".status" }

// Store keeps the checkpoint metadata of jobs in the KV bucket
// meshflow_checkpoints:
//
//	<job>.meta.<id>  CheckpointMeta of a complete checkpoint (written once)
//	<job>.latest     CheckpointPointer to the newest complete checkpoint
//	<job>.attempt    CheckpointPointer to the highest id ever attempted
//	<job>.status     JobStatus
//
// A checkpoint is complete iff meta.<id> exists and latest points at it or
// past it. Commit writes meta.<id> first, then moves latest with a CAS, so
// a crash between the two leaves an incomplete checkpoint, never a latest
// pointing at nothing. A Store is safe for concurrent use.
type Store struct {
	kv jetstream.KeyValue
}

// OpenStore opens the bucket, creating it (file storage, history 1) if it
// does not exist.
func OpenStore(ctx context.Context, js jetstream.JetStream) (*Store, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "Meshflow checkpoint metadata",
		History:     1,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("checkpoint: open bucket %s: %w", Bucket, err)
	}
	return &Store{kv: kv}, nil
}

func (s *Store) get(ctx context.Context, key string, m proto.Message) (uint64, error) {
	e, err := s.kv.Get(ctx, key)
	if err != nil {
		return 0, err
	}
	if err := proto.Unmarshal(e.Value(), m); err != nil {
		return 0, fmt.Errorf("checkpoint: decode %s: %w", key, err)
	}
	return e.Revision(), nil
}

func notFound(err error) bool {
	return errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted)
}

// known reports whether the store holds anything for job.
func (s *Store) known(ctx context.Context, job string) (bool, error) {
	for _, k := range []string{attemptKey(job), statusKey(job), latestKey(job)} {
		_, err := s.kv.Get(ctx, k)
		if err == nil {
			return true, nil
		}
		if !notFound(err) {
			return false, fmt.Errorf("checkpoint: read %s: %w", k, err)
		}
	}
	return false, nil
}

func (s *Store) unknownJob(ctx context.Context, job string) error {
	ok, err := s.known(ctx, job)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownJob, job)
	}
	return nil
}

// Commit records meta as a complete checkpoint of meta.Job: it writes
// meta.<id> (once: a second commit of the same id with other content fails
// with ErrConflict, the same commit again succeeds), then moves latest to
// it with a CAS. If latest already points past meta.Id, the commit fails
// with ErrSuperseded. A
// failed commit removes the meta.<id> it wrote, so that the checkpoint does
// not become complete when latest later moves past it.
func (s *Store) Commit(ctx context.Context, meta *pb.CheckpointMeta) error {
	if meta.GetJob() == "" || meta.GetId() == 0 {
		return fmt.Errorf("checkpoint: commit: meta needs a job and an id (got %q, %d)", meta.GetJob(), meta.GetId())
	}
	job, id := meta.Job, meta.Id
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(meta)
	if err != nil {
		return fmt.Errorf("checkpoint %d: encode meta: %w", id, err)
	}
	key := metaKey(job, id)
	wrote := true
	if _, err := s.kv.Create(ctx, key, data); err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("checkpoint %d: write %s: %w", id, key, err)
		}
		// A retried commit of the same checkpoint is fine; another one is not.
		e, gerr := s.kv.Get(ctx, key)
		if gerr != nil {
			return fmt.Errorf("checkpoint %d: read %s: %w", id, key, gerr)
		}
		var old pb.CheckpointMeta
		if uerr := proto.Unmarshal(e.Value(), &old); uerr != nil || !proto.Equal(&old, meta) {
			return fmt.Errorf("checkpoint %d: %w: %s holds another checkpoint", id, ErrConflict, key)
		}
		wrote = false
	}
	if err := s.moveLatest(ctx, job, id); err != nil {
		if wrote {
			if derr := s.kv.Delete(context.WithoutCancel(ctx), key); derr != nil {
				err = errors.Join(err, fmt.Errorf("checkpoint %d: remove %s: %w", id, key, derr))
			}
		}
		return err
	}
	return nil
}

// moveLatest sets latest to id with a CAS, retrying while other writers
// move it, unless it reaches id or beyond.
func (s *Store) moveLatest(ctx context.Context, job string, id uint64) error {
	key := latestKey(job)
	data, err := proto.Marshal(&pb.CheckpointPointer{Id: id})
	if err != nil {
		return err
	}
	for {
		var cur pb.CheckpointPointer
		rev, err := s.get(ctx, key, &cur)
		switch {
		case notFound(err):
			_, err = s.kv.Create(ctx, key, data)
		case err != nil:
			return fmt.Errorf("checkpoint %d: read %s: %w", id, key, err)
		case cur.Id == id:
			return nil // a retried commit whose first try landed
		case cur.Id > id:
			return fmt.Errorf("checkpoint %d: %w: latest is %d", id, ErrSuperseded, cur.Id)
		default:
			_, err = s.kv.Update(ctx, key, data, rev)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return fmt.Errorf("checkpoint %d: write %s: %w", id, key, err)
		}
		// Another writer moved latest: look again.
	}
}

// Latest returns the newest complete checkpoint of job, or nil, nil when
// there is none (also for a job the store does not know).
func (s *Store) Latest(ctx context.Context, job string) (*pb.CheckpointMeta, error) {
	var p pb.CheckpointPointer
	if _, err := s.get(ctx, latestKey(job), &p); err != nil {
		if notFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("checkpoint: read %s: %w", latestKey(job), err)
	}
	m, err := s.getMeta(ctx, job, p.Id)
	if err == nil || !errors.Is(err, ErrNotFound) {
		return m, err
	}
	// The checkpoint latest names was deleted: the newest below it is the
	// latest complete one.
	all, err := s.list(ctx, job)
	if err != nil {
		return nil, err
	}
	for i := len(all) - 1; i >= 0; i-- {
		if all[i].Id <= p.Id {
			return all[i], nil
		}
	}
	return nil, nil
}

func (s *Store) getMeta(ctx context.Context, job string, id uint64) (*pb.CheckpointMeta, error) {
	var m pb.CheckpointMeta
	if _, err := s.get(ctx, metaKey(job, id), &m); err != nil {
		if notFound(err) {
			return nil, fmt.Errorf("checkpoint %d of job %q: %w", id, job, ErrNotFound)
		}
		return nil, fmt.Errorf("checkpoint: read %s: %w", metaKey(job, id), err)
	}
	return &m, nil
}

// Get returns complete checkpoint id of job. It fails with ErrNotFound if
// there is no such complete checkpoint, ErrUnknownJob if the store knows
// nothing of job.
func (s *Store) Get(ctx context.Context, job string, id uint64) (*pb.CheckpointMeta, error) {
	m, err := s.getMeta(ctx, job, id)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			if uerr := s.unknownJob(ctx, job); uerr != nil {
				return nil, uerr
			}
		}
		return nil, err
	}
	var p pb.CheckpointPointer
	if _, err := s.get(ctx, latestKey(job), &p); err != nil && !notFound(err) {
		return nil, fmt.Errorf("checkpoint: read %s: %w", latestKey(job), err)
	}
	if p.Id < id {
		return nil, fmt.Errorf("checkpoint %d of job %q: %w (not committed)", id, job, ErrNotFound)
	}
	return m, nil
}

// List returns the complete checkpoints and savepoints of job, sorted by
// id. It fails with ErrUnknownJob if the store knows nothing of job.
func (s *Store) List(ctx context.Context, job string) ([]*pb.CheckpointMeta, error) {
	if err := s.unknownJob(ctx, job); err != nil {
		return nil, err
	}
	all, err := s.list(ctx, job)
	if err != nil {
		return nil, err
	}
	var p pb.CheckpointPointer
	if _, err := s.get(ctx, latestKey(job), &p); err != nil && !notFound(err) {
		return nil, fmt.Errorf("checkpoint: read %s: %w", latestKey(job), err)
	}
	n := 0
	for _, m := range all {
		if m.Id <= p.Id {
			all[n] = m
			n++
		}
	}
	return all[:n], nil
}

// list returns every meta.<id> record of job, complete or not, by id.
func (s *Store) list(ctx context.Context, job string) ([]*pb.CheckpointMeta, error) {
	prefix := job + ".meta."
	w, err := s.kv.Watch(ctx, prefix+"*", jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("checkpoint: list %s*: %w", prefix, err)
	}
	defer func() { _ = w.Stop() }()
	byID := map[uint64]*pb.CheckpointMeta{}
	for {
		var e jetstream.KeyValueEntry
		select {
		case e = <-w.Updates():
		case <-ctx.Done():
			return nil, fmt.Errorf("checkpoint: list %s*: %w", prefix, ctx.Err())
		}
		if e == nil {
			break
		}
		// <job>.meta.* also matches the latest/attempt/status keys of a
		// job named "<job>.meta": only numeric ids are ours.
		id, err := strconv.ParseUint(strings.TrimPrefix(e.Key(), prefix), 10, 64)
		if err != nil {
			continue
		}
		var m pb.CheckpointMeta
		if err := proto.Unmarshal(e.Value(), &m); err != nil {
			return nil, fmt.Errorf("checkpoint: decode %s: %w", e.Key(), err)
		}
		byID[id] = &m
	}
	out := make([]*pb.CheckpointMeta, 0, len(byID))
	for _, m := range byID {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b *pb.CheckpointMeta) int {
		switch {
		case a.Id < b.Id:
			return -1
		case a.Id > b.Id:
			return 1
		}
		return 0
	})
	return out, nil
}

// Delete removes the metadata of checkpoint id of job; deleting what does
// not exist is not an error. It does not touch latest: Latest then finds
// the newest checkpoint below.
func (s *Store) Delete(ctx context.Context, job string, id uint64) error {
	if err := s.kv.Delete(ctx, metaKey(job, id)); err != nil {
		return fmt.Errorf("checkpoint: delete %s: %w", metaKey(job, id), err)
	}
	return nil
}

// Attempt returns the highest checkpoint id ever attempted for job (0:
// none).
func (s *Store) Attempt(ctx context.Context, job string) (uint64, error) {
	var p pb.CheckpointPointer
	if _, err := s.get(ctx, attemptKey(job), &p); err != nil {
		if notFound(err) {
			return 0, nil
		}
		return 0, fmt.Errorf("checkpoint: read %s: %w", attemptKey(job), err)
	}
	return p.Id, nil
}

// SetAttempt records id as the highest checkpoint id attempted for job. It
// only moves up: if the record is already id or above (another coordinator
// of the job went further), it fails with ErrSuperseded.
func (s *Store) SetAttempt(ctx context.Context, job string, id uint64) error {
	key := attemptKey(job)
	data, err := proto.Marshal(&pb.CheckpointPointer{Id: id})
	if err != nil {
		return err
	}
	for {
		var cur pb.CheckpointPointer
		rev, err := s.get(ctx, key, &cur)
		switch {
		case notFound(err):
			_, err = s.kv.Create(ctx, key, data)
		case err != nil:
			return fmt.Errorf("checkpoint %d: read %s: %w", id, key, err)
		case cur.Id >= id:
			return fmt.Errorf("checkpoint %d: %w: attempt is %d", id, ErrSuperseded, cur.Id)
		default:
			_, err = s.kv.Update(ctx, key, data, rev)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return fmt.Errorf("checkpoint %d: write %s: %w", id, key, err)
		}
	}
}

// SetStatus records the status of job.
func (s *Store) SetStatus(ctx context.Context, job string, st *pb.JobStatus) error {
	data, err := proto.Marshal(st)
	if err != nil {
		return fmt.Errorf("checkpoint: encode status: %w", err)
	}
	if _, err := s.kv.Put(ctx, statusKey(job), data); err != nil {
		return fmt.Errorf("checkpoint: write %s: %w", statusKey(job), err)
	}
	return nil
}

// Status returns the status of job, or ErrUnknownJob if none was recorded.
func (s *Store) Status(ctx context.Context, job string) (*pb.JobStatus, error) {
	var st pb.JobStatus
	if _, err := s.get(ctx, statusKey(job), &st); err != nil {
		if notFound(err) {
			return nil, fmt.Errorf("%w %q: no status", ErrUnknownJob, job)
		}
		return nil, fmt.Errorf("checkpoint: read %s: %w", statusKey(job), err)
	}
	return &st, nil
}

// Restored reads what a coordinator of job continues from. A job the store
// does not know gives the zero Restored (its first start). Metadata above
// latest (written by a coordinator that stopped before moving latest) is
// not complete and is left out: the coordinator deletes it as an orphan.
func (s *Store) Restored(ctx context.Context, job string) (Restored, error) {
	var r Restored
	attempt, err := s.Attempt(ctx, job)
	if err != nil {
		return r, err
	}
	var p pb.CheckpointPointer
	if _, err := s.get(ctx, latestKey(job), &p); err != nil && !notFound(err) {
		return r, fmt.Errorf("checkpoint: read %s: %w", latestKey(job), err)
	}
	all, err := s.list(ctx, job)
	if err != nil {
		return r, err
	}
	r.Attempt = attempt
	for _, m := range all {
		r.Attempt = max(r.Attempt, m.Id)
		if m.Id > p.Id {
			continue
		}
		r.Latest = m.Id
		if m.Savepoint {
			r.Savepoints = append(r.Savepoints, m.Id)
		} else {
			r.Retained = append(r.Retained, m.Id)
		}
	}
	r.Attempt = max(r.Attempt, p.Id)
	return r, nil
}
