package cli

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/meshflow/meshflow/cluster/checkpoint"
	"github.com/meshflow/meshflow/messages/pb"
)

// defaultTriggerTimeout is the default --timeout of savepoint and
// checkpoints trigger: how long to wait for the checkpoint to complete.
const defaultTriggerTimeout = 2 * time.Minute

// setupTimeout bounds what savepoint and checkpoints trigger do before
// they ask for the checkpoint (connecting, reading the job's records), and
// the reading of records after a failure; their --timeout is the
// checkpoint's alone.
const setupTimeout = 5 * time.Second

// jobPartRE is what one part of a job name may be (actors.JobGraph.Validate).
var jobPartRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// jobHelp ends the help of the commands that take a JOB.
const jobHelp = `

JOB is a pipeline's name, or <domain>.pipeline for a domain's job in a mesh;
a bare domain name stands for <domain>.pipeline when no job of that name has
checkpoint records or a running coordinator.`

// pipelineJob is the name of a domain's job in a mesh: <domain>.pipeline.
const pipelineJob = "pipeline"

// newSavepointCmd builds `meshflow savepoint JOB`.
func newSavepointCmd(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "savepoint JOB",
		Short: "Take a savepoint of a running job: a checkpoint that is never deleted",
		Long: `Ask the coordinator of a running job for a savepoint and wait until it is
complete. A savepoint is a checkpoint that retention never deletes.` + jobHelp,
		Example: `  meshflow savepoint orders.pipeline
  meshflow savepoint orders -o json --timeout 10m`,
		Args: exactArgs(1, "one JOB"),
	}
	addTriggerFlags(cmd, env, true)
	return cmd
}

// newCheckpointsCmd builds `meshflow checkpoints list|trigger`.
func newCheckpointsCmd(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "checkpoints",
		Short: "List a job's checkpoints and savepoints, or take a checkpoint now",
		Args:  noArgs,
		// Runnable, so that an unknown subcommand is an error, not help.
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	list := &cobra.Command{
		Use:   "list JOB",
		Short: "List the retained checkpoints and savepoints of a job, marking the one a restart restores",
		Long: `List every retained checkpoint and savepoint of JOB, sorted by id, from the
checkpoint metadata on the NATS server (KV bucket ` + checkpoint.Bucket + `). The job
need not be running. LATEST marks the checkpoint a restart restores.` + jobHelp,
		Example: `  meshflow checkpoints list orders.pipeline
  meshflow checkpoints list orders -o json`,
		Args: exactArgs(1, "one JOB"),
	}
	output := addOutputFlag(list)
	nf := addNATSFlags(list, env)
	list.RunE = func(cmd *cobra.Command, args []string) error {
		return runList(cmd.Context(), env.Stdout, nf, *output, args[0])
	}
	trigger := &cobra.Command{
		Use:   "trigger JOB",
		Short: "Take a checkpoint of a running job now and wait until it is complete",
		Long: `Ask the coordinator of a running job for a checkpoint now (not a savepoint:
retention deletes it like any other) and wait until it is complete.` + jobHelp,
		Example: `  meshflow checkpoints trigger orders.pipeline`,
		Args:    exactArgs(1, "one JOB"),
	}
	addTriggerFlags(trigger, env, false)
	cmd.AddCommand(list, trigger)
	return cmd
}

// addTriggerFlags gives cmd the flags and action of a command that asks
// for a checkpoint (a savepoint if savepoint).
func addTriggerFlags(cmd *cobra.Command, env *Env, savepoint bool) {
	output := addOutputFlag(cmd)
	nf := addNATSFlags(cmd, env)
	// --timeout is the time the checkpoint may take.
	nf.timeout = defaultTriggerTimeout
	to := cmd.Flags().Lookup("timeout")
	to.DefValue = defaultTriggerTimeout.String()
	to.Usage = "time to wait for the checkpoint to complete (connecting to the server and reading the job's records wait up to " + setupTimeout.String() + " more)"
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		return runTrigger(cmd.Context(), env.Stdout, nf, *output, args[0], savepoint)
	}
}

// checkJobName rejects what cannot be a job name: <job> or <domain>.<job>.
func checkJobName(name string) error {
	parts := strings.Split(name, ".")
	ok := len(parts) <= 2
	for _, p := range parts {
		ok = ok && jobPartRE.MatchString(p)
	}
	if !ok {
		return usageErrorf("invalid job name %q: want a pipeline's name or <domain>.pipeline (letters, digits, '_' or '-')", name)
	}
	return nil
}

// shorthand returns the job a bare domain name stands for, or "" when
// name is not a bare name.
func shorthand(name string) string {
	if strings.Contains(name, ".") {
		return ""
	}
	return name + "." + pipelineJob
}

// ckptConn is a connection to the server with read access to the
// checkpoint records of jobs (KV bucket checkpoint.Bucket), if the server
// has them.
//
// It reads the bucket itself rather than through checkpoint.Store:
// checkpoint.OpenStore creates or updates the bucket's configuration,
// which a command that only reads must not do (it needs rights to change
// the stream, and would set the bucket back to this binary's configuration).
// The records and the rule for a complete checkpoint are those of
// checkpoint.Store: <job>.meta.<id> exists and <job>.latest points at <id>
// or past it.
type ckptConn struct {
	nc *nats.Conn
	kv jetstream.KeyValue // nil: the bucket does not exist
	// ctx is the command's, cancelled with an errDenied cause when the
	// server refuses this user something: a refused request gets no
	// answer, so without it the command would wait for its timeout.
	ctx    context.Context
	cancel context.CancelCauseFunc
}

// errDenied is the cause of a ckptConn's ctx when the server refused the
// user something.
var errDenied = errors.New("the server denies this user")

// explain returns why err happened: the server's refusal if there was one.
func (c *ckptConn) explain(err error) error {
	if cause := context.Cause(c.ctx); errors.Is(cause, errDenied) {
		return cause
	}
	return err
}

// openCheckpoints connects and opens the checkpoint bucket without
// creating it: a server where no job ever ran has no bucket, and this
// command leaves it so. Each step waits at most timeout; ctx is the
// command's (the connection dials with it, also when it reconnects).
func openCheckpoints(ctx context.Context, nf *natsFlags, timeout time.Duration) (*ckptConn, error) {
	cf := *nf
	cf.timeout = timeout
	nc, err := connect(ctx, &cf)
	if err != nil {
		return nil, err
	}
	cctx, deny := context.WithCancelCause(ctx)
	c := &ckptConn{nc: nc, ctx: cctx, cancel: deny}
	logErr := nc.ErrorHandler()
	nc.SetErrorHandler(func(conn *nats.Conn, sub *nats.Subscription, err error) {
		switch {
		case inboxDenied(conn, err):
			deny(fmt.Errorf("%w the inbox prefix %s: set --inbox-prefix to the user's own (meshflow dev's producers: --inbox-prefix _INBOX_producer)",
				errDenied, inboxPrefix(nf)))
		case errors.Is(err, nats.ErrPermissionViolation):
			deny(fmt.Errorf("%w what the checkpoint commands need (%v): connect as a user that may read the KV bucket %s and request mf.<job>.ctl.ckpt.trigger (--user/--password or --creds)",
				errDenied, err, checkpoint.Bucket))
		}
		if logErr != nil {
			logErr(conn, sub, err)
		}
	})
	js, err := jetstream.New(nc)
	if err != nil {
		c.Close()
		return nil, err
	}
	kctx, cancel := context.WithTimeout(cctx, timeout)
	defer cancel()
	c.kv, err = js.KeyValue(kctx, checkpoint.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		c.kv = nil
		return c, nil
	}
	if err != nil {
		err = c.explain(err)
		c.Close()
		return nil, fmt.Errorf("open the checkpoint bucket %s: %w", checkpoint.Bucket, err)
	}
	return c, nil
}

func (c *ckptConn) Close() {
	c.nc.Close()
	c.cancel(nil)
}

// get reads key into m; found is false when there is no such key.
func (c *ckptConn) get(ctx context.Context, key string, m proto.Message) (found bool, err error) {
	e, err := c.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", key, err)
	}
	if err := proto.Unmarshal(e.Value(), m); err != nil {
		return false, fmt.Errorf("decode %s: %w", key, err)
	}
	return true, nil
}

// list returns the complete checkpoints and savepoints of job, sorted by
// id; the last one is the latest, the one a restart restores. ok is false
// when there is no record of job.
func (c *ckptConn) list(ctx context.Context, job string) (metas []*pb.CheckpointMeta, ok bool, err error) {
	if c.kv == nil {
		return nil, false, nil
	}
	var latest, attempt pb.CheckpointPointer
	var status pb.JobStatus
	for _, r := range []struct {
		key string
		m   proto.Message
	}{{job + ".latest", &latest}, {job + ".attempt", &attempt}, {job + ".status", &status}} {
		found, err := c.get(ctx, r.key, r.m)
		if err != nil {
			return nil, false, err
		}
		ok = ok || found
	}
	if !ok || latest.Id == 0 {
		return nil, ok, nil
	}
	prefix := job + ".meta."
	w, err := c.kv.Watch(ctx, prefix+"*", jetstream.IgnoreDeletes())
	if err != nil {
		return nil, false, fmt.Errorf("read %s*: %w", prefix, err)
	}
	defer func() { _ = w.Stop() }()
	for {
		var e jetstream.KeyValueEntry
		select {
		case e = <-w.Updates():
		case <-ctx.Done():
			return nil, false, fmt.Errorf("read %s*: %w", prefix, ctx.Err())
		}
		if e == nil {
			break // all current values seen
		}
		// Only numeric ids: <job>.meta.* also matches the records of a
		// job named <job>.meta.
		id, err := strconv.ParseUint(strings.TrimPrefix(e.Key(), prefix), 10, 64)
		if err != nil || id > latest.Id {
			continue // not a checkpoint, or not complete
		}
		var m pb.CheckpointMeta
		if err := proto.Unmarshal(e.Value(), &m); err != nil {
			return nil, false, fmt.Errorf("decode %s: %w", e.Key(), err)
		}
		metas = append(metas, &m)
	}
	slices.SortFunc(metas, func(a, b *pb.CheckpointMeta) int { return cmp.Compare(a.Id, b.Id) })
	return metas, true, nil
}

// status returns the recorded status of job, or nil.
func (c *ckptConn) status(ctx context.Context, job string) (*pb.JobStatus, error) {
	if c.kv == nil {
		return nil, nil
	}
	var st pb.JobStatus
	found, err := c.get(ctx, job+".status", &st)
	if !found || err != nil {
		return nil, err
	}
	return &st, nil
}

// knownJobs returns the jobs the store has records of, sorted.
func (c *ckptConn) knownJobs(ctx context.Context) ([]string, error) {
	if c.kv == nil {
		return nil, nil
	}
	kl, err := c.kv.ListKeys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list the jobs in %s: %w", checkpoint.Bucket, err)
	}
	defer func() { _ = kl.Stop() }()
	seen := map[string]bool{}
	for k := range kl.Keys() {
		for _, suffix := range []string{".latest", ".attempt", ".status"} {
			if job, ok := strings.CutSuffix(k, suffix); ok && job != "" {
				seen[job] = true
			}
		}
	}
	jobs := make([]string, 0, len(seen))
	for j := range seen {
		jobs = append(jobs, j)
	}
	slices.Sort(jobs)
	return jobs, nil
}

// knownJobsText says which jobs the store has records of, for an error
// about an unknown job.
func (c *ckptConn) knownJobsText(ctx context.Context) (string, error) {
	jobs, err := c.knownJobs(ctx)
	if err != nil {
		return "", err
	}
	if len(jobs) == 0 {
		return "no job has checkpoint records on this server", nil
	}
	return "jobs with checkpoint records: " + strings.Join(jobs, ", "), nil
}

// unknownJobError says that neither name nor the job it is shorthand for
// is known, and which jobs are.
func (c *ckptConn) unknownJobError(ctx context.Context, what, name string) error {
	known, err := c.knownJobsText(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", what, c.explain(err))
	}
	also := ""
	if sh := shorthand(name); sh != "" {
		also = " nor " + sh
	}
	return fmt.Errorf("%s: unknown job %q: no coordinator runs it%s and it has no checkpoint records (%s)", what, name, also, known)
}

// resolvedJob is the job a JOB argument names.
type resolvedJob struct {
	arg, job string
}

func (r resolvedJob) shorthand() bool { return r.arg != r.job }

// describe names the job, saying when it came from a domain name.
func (r resolvedJob) describe() string {
	if r.shorthand() {
		return fmt.Sprintf("%s (the pipeline of domain %s)", r.job, r.arg)
	}
	return r.job
}

func runList(ctx context.Context, w io.Writer, nf *natsFlags, format outputFormat, name string) error {
	if err := checkJobName(name); err != nil {
		return err
	}
	if nf.timeout <= 0 {
		return usageErrorf("invalid --timeout %v: must be positive", nf.timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, nf.timeout)
	defer cancel()
	c, err := openCheckpoints(ctx, nf, nf.timeout)
	if err != nil {
		return fmt.Errorf("checkpoints: %w", err)
	}
	defer c.Close()
	ctx = c.ctx
	r := resolvedJob{arg: name, job: name}
	metas, ok, err := c.list(ctx, name)
	if err == nil && !ok && shorthand(name) != "" {
		r.job = shorthand(name)
		metas, ok, err = c.list(ctx, r.job)
	}
	if err != nil {
		return fmt.Errorf("checkpoints: %w", c.explain(err))
	}
	if !ok {
		known, err := c.knownJobsText(ctx)
		if err != nil {
			return fmt.Errorf("checkpoints: %w", c.explain(err))
		}
		also := ""
		if sh := shorthand(name); sh != "" {
			also = " nor for " + sh
		}
		return fmt.Errorf("checkpoints: unknown job %q: no checkpoint records for it%s (%s)", name, also, known)
	}
	var latest *pb.CheckpointMeta
	if len(metas) > 0 {
		latest = metas[len(metas)-1]
	}
	if format == outputJSON {
		enc := json.NewEncoder(w)
		for _, m := range metas {
			if err := enc.Encode(listedCheckpoint(m, latest)); err != nil {
				return err
			}
		}
		return nil
	}
	fmt.Fprintf(w, "Job %s\n", r.describe())
	if len(metas) == 0 {
		_, err := fmt.Fprintln(w, "No complete checkpoint or savepoint.")
		return err
	}
	return printCheckpoints(w, metas, latest, true)
}

func runTrigger(ctx context.Context, w io.Writer, nf *natsFlags, format outputFormat, name string, savepoint bool) error {
	what := "checkpoints trigger"
	if savepoint {
		what = "savepoint"
	}
	if err := checkJobName(name); err != nil {
		return err
	}
	if nf.timeout <= 0 {
		return usageErrorf("invalid --timeout %v: must be positive", nf.timeout)
	}
	c, err := openCheckpoints(ctx, nf, setupTimeout)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer c.Close()
	ctx = c.ctx
	setup, cancelSetup := context.WithTimeout(ctx, setupTimeout)
	defer cancelSetup()

	// The job: the name itself when it has records or a coordinator, else
	// the job it is shorthand for. A job without records yet (it started
	// less than an interval ago) is found by its coordinator.
	_, known, err := c.list(setup, name)
	if err != nil {
		return fmt.Errorf("%s: %w", what, c.explain(err))
	}
	cancelSetup()
	candidates := []string{name}
	if sh := shorthand(name); sh != "" && !known {
		candidates = append(candidates, sh)
	}
	r := resolvedJob{arg: name}
	var meta *pb.CheckpointMeta
	reqCtx, cancelReq := context.WithTimeout(ctx, nf.timeout)
	defer cancelReq()
	for _, job := range candidates {
		r.job = job
		if meta, err = checkpoint.RequestCheckpoint(reqCtx, c.nc, job, savepoint); !errors.Is(err, checkpoint.ErrNoCoordinator) {
			break
		}
	}
	// What follows reads records only.
	ctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	if errors.Is(err, checkpoint.ErrNoCoordinator) && !known {
		// Nobody coordinates any candidate: name a known one as not running.
		r.job = name
		if sh := shorthand(name); len(candidates) > 1 && sh != "" {
			_, known, err = c.list(ctx, sh)
			if err != nil {
				return fmt.Errorf("%s: %w", what, c.explain(err))
			}
			r.job = sh
		}
		if !known {
			return c.unknownJobError(ctx, what, name)
		}
		err = checkpoint.ErrNoCoordinator
	}
	switch {
	case err != nil && errors.Is(context.Cause(c.ctx), errDenied):
		return fmt.Errorf("%s: %w", what, c.explain(err))
	case errors.Is(err, checkpoint.ErrNoCoordinator):
		return fmt.Errorf("%s: job %s is not running: no coordinator answers%s; its retained checkpoints: meshflow checkpoints list %s",
			what, r.describe(), c.lastStatus(ctx, r.job), r.job)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: job %s: not complete within --timeout %v; it may still complete: meshflow checkpoints list %s",
			what, r.describe(), nf.timeout, r.job)
	case err != nil:
		return fmt.Errorf("%s: job %s: %w", what, r.describe(), err)
	}
	if format == outputJSON {
		return json.NewEncoder(w).Encode(describeCheckpoint(meta))
	}
	k := kind(meta)
	fmt.Fprintf(w, "%s%s %d of job %s complete\n", strings.ToUpper(k[:1]), k[1:], meta.Id, r.describe())
	return printCheckpoints(w, []*pb.CheckpointMeta{meta}, nil, false)
}

// lastStatus describes the job's recorded status: "; last status: stopped
// at <time>", or "" when none is recorded.
func (c *ckptConn) lastStatus(ctx context.Context, job string) string {
	st, err := c.status(ctx, job)
	if err != nil || st == nil {
		return ""
	}
	s := "; last status: " + jobState(st.State)
	if st.Error != "" {
		s += " (" + st.Error + ")"
	}
	if st.TimeUs != 0 {
		s += " at " + formatTime(st.TimeUs)
	}
	return s
}

func jobState(s pb.JobState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "JOB_STATE_"))
}

func kind(m *pb.CheckpointMeta) string {
	if m.Savepoint {
		return "savepoint"
	}
	return "checkpoint"
}

// checkpointJSON is a checkpoint in --output json; durations in
// microseconds, times in RFC 3339 (UTC).
type checkpointJSON struct {
	Job            string `json:"job"`
	ID             uint64 `json:"id"`
	Kind           string `json:"kind"`
	TriggerTime    string `json:"trigger_time"`
	CompleteTime   string `json:"complete_time"`
	SizeBytes      uint64 `json:"size_bytes"`
	DurationUs     int64  `json:"duration_us"`
	MaxAlignmentUs int64  `json:"max_alignment_us"`
	Tasks          int    `json:"tasks"`
}

// listedCheckpointJSON is a checkpoint in the JSON of checkpoints list.
type listedCheckpointJSON struct {
	checkpointJSON
	// Latest: a restart restores this one.
	Latest bool `json:"latest"`
}

func describeCheckpoint(m *pb.CheckpointMeta) checkpointJSON {
	return checkpointJSON{
		Job: m.Job, ID: m.Id, Kind: kind(m),
		TriggerTime: formatTime(m.TriggerTimeUs), CompleteTime: formatTime(m.CompleteTimeUs),
		SizeBytes: m.Size, DurationUs: m.DurationUs, MaxAlignmentUs: m.MaxAlignmentUs, Tasks: len(m.Tasks),
	}
}

func listedCheckpoint(m, latest *pb.CheckpointMeta) listedCheckpointJSON {
	return listedCheckpointJSON{describeCheckpoint(m), latest != nil && latest.Id == m.Id}
}

// printCheckpoints prints metas as a table; with latestCol, a LATEST
// column marks latest.
func printCheckpoints(w io.Writer, metas []*pb.CheckpointMeta, latest *pb.CheckpointMeta, latestCol bool) error {
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', 0)
	header := "ID\tKIND\tTIME\tSIZE\tDURATION\tALIGNMENT\tTASKS"
	if latestCol {
		header += "\tLATEST"
	}
	fmt.Fprintln(tw, header)
	for _, m := range metas {
		row := fmt.Sprintf("%d\t%s\t%s\t%s\t%s\t%s\t%d", m.Id, kind(m), formatTime(m.CompleteTimeUs),
			formatBytes(m.Size), formatMicros(m.DurationUs), formatMicros(m.MaxAlignmentUs), len(m.Tasks))
		if latestCol {
			mark := ""
			if latest != nil && latest.Id == m.Id {
				mark = "yes (a restart restores it)"
			}
			row += "\t" + mark
		}
		fmt.Fprintln(tw, row)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// An empty LATEST cell leaves its padding behind: trim it.
	var out []byte
	for line := range bytes.Lines(buf.Bytes()) {
		out = append(append(out, bytes.TrimRight(line, " \n")...), '\n')
	}
	_, err := w.Write(out)
	return err
}

// formatTime formats microseconds since the Unix epoch in RFC 3339, UTC,
// to the millisecond.
func formatTime(us int64) string {
	return time.UnixMicro(us).UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// formatMicros formats a duration in microseconds for a table: 950µs,
// 12.35ms, 1.234s.
func formatMicros(us int64) string {
	d := time.Duration(us) * time.Microsecond
	switch {
	case d >= time.Second:
		d = d.Round(time.Millisecond)
	case d >= time.Millisecond:
		d = d.Round(10 * time.Microsecond)
	}
	return d.String()
}

// formatBytes formats a size in bytes: 512 B, 1.5 KiB, 20.0 MiB.
func formatBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
