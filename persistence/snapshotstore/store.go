package snapshotstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshflow/meshflow/persistence"
)

// DefaultBucket is the Object Store bucket of checkpoint snapshots.
const DefaultBucket = "meshflow_snapshots"

// Store keeps snapshot objects in a JetStream Object Store bucket. It is
// safe for concurrent use.
type Store struct {
	obs    jetstream.ObjectStore
	bucket string
}

// Handle names an uploaded snapshot object.
type Handle struct {
	Object string // object name in the bucket: <job>/<id>/<task>
	Size   int64  // bytes
}

// Open creates the bucket (file storage) if it does not exist, or updates
// its configuration, and returns a Store over it. An empty bucket selects
// DefaultBucket.
func Open(ctx context.Context, js jetstream.JetStream, bucket string) (*Store, error) {
	if bucket == "" {
		bucket = DefaultBucket
	}
	obs, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      bucket,
		Description: "Meshflow checkpoint snapshots: <job>/<checkpoint id>/<operator>/<index>",
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("snapshotstore: open bucket %s: %w", bucket, err)
	}
	return &Store{obs: obs, bucket: bucket}, nil
}

// Bucket is the name of the Object Store bucket.
func (s *Store) Bucket() string { return s.bucket }

// ObjectName is the name of the object of task (`<operator>/<index>`) in
// checkpoint id of job: `<job>/<id>/<task>`.
func ObjectName(job string, id uint64, task string) string {
	return checkpointPrefix(job, id) + task
}

func checkpointPrefix(job string, id uint64) string {
	return job + "/" + strconv.FormatUint(id, 10) + "/"
}

func checkName(job, task string) error {
	switch {
	case job == "" || strings.Contains(job, "/"):
		return fmt.Errorf("snapshotstore: job name %q: must be non-empty, without '/'", job)
	case task == "" || strings.HasPrefix(task, "/") || strings.HasSuffix(task, "/") || strings.Contains(task, "//"):
		return fmt.Errorf("snapshotstore: task name %q: must be <operator>/<index>", task)
	}
	return nil
}

// Put encodes meta and snap (see Encode) into the object
// `<job>/<id>/<task>`, streaming: the encoding goes through a pipe into the
// upload, and is never held whole in memory. An existing object
// of that name is replaced. On an error nothing of the object is left in the
// bucket (the Object Store drops the chunks of a failed upload). Put does
// not close snap.
func (s *Store) Put(ctx context.Context, job string, id uint64, task string, meta []byte, snap persistence.Snapshot) (Handle, error) {
	if err := checkName(job, task); err != nil {
		return Handle{}, err
	}
	name := ObjectName(job, id, task)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	pr, pw := io.Pipe()
	var (
		wg     sync.WaitGroup
		n      int64
		encErr error
	)
	wg.Go(func() {
		n, encErr = Encode(ctx, pw, meta, snap)
		pw.CloseWithError(encErr) // nil: the reader sees io.EOF
	})
	info, err := s.obs.Put(ctx, jetstream.ObjectMeta{Name: name}, pr)
	// Unblock the encoder if the upload stopped reading, and stop its scan.
	pr.CloseWithError(errUploadEnded)
	cancel()
	wg.Wait()
	// When the encoder fails first, the upload fails with its error; when
	// the upload fails first, the encoder's error is only a consequence.
	switch {
	case err != nil:
		return Handle{}, fmt.Errorf("snapshotstore: put %s: %w", name, err)
	case encErr != nil:
		return Handle{}, fmt.Errorf("snapshotstore: put %s: %w", name, encErr)
	case info.Size != uint64(n):
		return Handle{}, fmt.Errorf("snapshotstore: put %s: stored %d bytes, encoded %d", name, info.Size, n)
	}
	return Handle{Object: name, Size: n}, nil
}

var errUploadEnded = errors.New("snapshotstore: upload ended")

// Restore reads the object, verifies it whole (see Decode), and only then
// replaces the key range of into (a namespace, with every namespace below
// it) with its entries: keys of into that are not in the snapshot are
// deleted. It returns the meta blob. A missing object is an error wrapping
// jetstream.ErrObjectNotFound; a corrupt one wraps ErrCorrupt (or
// ErrVersion); in both cases into is not touched. The replacement itself
// is not atomic (see persistence.ReplaceNamespace): if it fails, call
// Restore again.
func (s *Store) Restore(ctx context.Context, object string, into persistence.Store) ([]byte, error) {
	r, err := s.get(ctx, object)
	if err != nil {
		return nil, err
	}
	if err := persistence.ReplaceNamespace(ctx, into, r.Entries); err != nil {
		return nil, fmt.Errorf("snapshotstore: restore %s: %w", object, err)
	}
	return bytes.Clone(r.Meta()), nil
}

// Read reads and verifies an object without restoring it.
func (s *Store) Read(ctx context.Context, object string) (*Reader, error) {
	return s.get(ctx, object)
}

func (s *Store) get(ctx context.Context, object string) (*Reader, error) {
	res, err := s.obs.Get(ctx, object)
	if err != nil {
		return nil, fmt.Errorf("snapshotstore: get %s: %w", object, err)
	}
	defer res.Close()
	info, err := res.Info()
	if err != nil {
		return nil, fmt.Errorf("snapshotstore: get %s: %w", object, err)
	}
	// The size comes from the object's metadata; it only sizes the buffer
	// (up to 1 GiB at once), the data read decides.
	buf := bytes.NewBuffer(make([]byte, 0, min(info.Size, 1<<30)+bytes.MinRead))
	if _, err := buf.ReadFrom(res); err != nil {
		return nil, fmt.Errorf("snapshotstore: read %s: %w", object, err)
	}
	r, err := decode(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("snapshotstore: object %s: %w", object, err)
	}
	return r, nil
}

// Delete deletes an object. Deleting a missing object is not an error.
func (s *Store) Delete(ctx context.Context, object string) error {
	err := s.obs.Delete(ctx, object)
	if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("snapshotstore: delete %s: %w", object, err)
	}
	return nil
}

// DeleteCheckpoint deletes every object of checkpoint id of job. Deleting
// none is not an error. It lists the bucket, so its cost grows with the
// number of objects in it (a few per task and retained checkpoint).
func (s *Store) DeleteCheckpoint(ctx context.Context, job string, id uint64) error {
	if err := checkName(job, "x"); err != nil {
		return err
	}
	objs, err := s.obs.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("snapshotstore: delete checkpoint %d of %s: list: %w", id, job, err)
	}
	prefix := checkpointPrefix(job, id)
	for _, o := range objs {
		if !strings.HasPrefix(o.Name, prefix) {
			continue
		}
		if err := s.Delete(ctx, o.Name); err != nil {
			return fmt.Errorf("snapshotstore: delete checkpoint %d of %s: %w", id, job, err)
		}
	}
	return nil
}
