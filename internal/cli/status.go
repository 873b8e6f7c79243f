package cli

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/meshflow/meshflow/actors"
	"github.com/meshflow/meshflow/messages"
	"github.com/meshflow/meshflow/messages/pb"
)

// newStatusCmd builds `meshflow status JOB`.
func newStatusCmd(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status JOB",
		Short: "Show what each operator instance of a running job has processed, and its watermark",
		Long: `Ask every node running JOB for the status of its operator instances and print
one row per instance: rows and batches in and out, failures, the event-time
watermark and whether the instance is idle.

WATERMARK is the instance's event-time watermark in RFC 3339 (UTC, to the
millisecond): "-" before any, "end" once its input has ended. IDLE is "yes"
when the instance told its outputs it is idle (no data for its source's
idle timeout) and has sent nothing since.

Each node answers for the instances it runs; the command waits until the
answers cover every instance of the job, at most --timeout. Instances that
did not answer by then are left out and the command exits 1.` + jobHelp,
		Example: `  meshflow status orders.pipeline
  meshflow status bids -o json`,
		Args: exactArgs(1, "one JOB"),
	}
	output := addOutputFlag(cmd)
	nf := addNATSFlags(cmd, env)
	cmd.Flags().Lookup("timeout").Usage = "time to wait for the server and for every node's answer"
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		return runStatus(cmd.Context(), env.Stdout, nf, *output, args[0])
	}
	return cmd
}

// instanceStatusJSON is one instance in --output json. Watermark is RFC 3339
// (UTC, milliseconds), null before any and "end" at the end of the input;
// WatermarkUs is the same in microseconds since the Unix epoch, null unless
// Watermark is a time.
type instanceStatusJSON struct {
	Job         string  `json:"job"`
	Operator    string  `json:"operator"`
	Instance    int32   `json:"instance"`
	Node        string  `json:"node"`
	RowsIn      int64   `json:"rows_in"`
	RowsOut     int64   `json:"rows_out"`
	BatchesIn   int64   `json:"batches_in"`
	BatchesOut  int64   `json:"batches_out"`
	Failures    int64   `json:"failures"`
	Watermark   *string `json:"watermark"`
	WatermarkUs *int64  `json:"watermark_us"`
	Idle        bool    `json:"idle"`
}

// nodeInstance is an instance's status and the node that reported it.
type nodeInstance struct {
	node string
	*pb.InstanceStatus
}

func runStatus(ctx context.Context, w io.Writer, nf *natsFlags, format outputFormat, name string) error {
	if err := checkJobName(name); err != nil {
		return err
	}
	if nf.timeout <= 0 {
		return usageErrorf("invalid --timeout %v: must be positive", nf.timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, nf.timeout)
	defer cancel()
	nc, err := connect(ctx, nf)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	defer nc.Close()
	// A refused request gets no answer: fail at once rather than at the
	// timeout.
	ctx, deny := context.WithCancelCause(ctx)
	defer deny(nil)
	logErr := nc.ErrorHandler()
	nc.SetErrorHandler(func(conn *nats.Conn, sub *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			// The command's error says it: no log line besides.
			deny(fmt.Errorf("%w what the status command needs (%v): connect as a user that may request %s",
				errDenied, err, actors.StatusSubject("<job>")))
			return
		}
		if logErr != nil {
			logErr(conn, sub, err)
		}
	})

	r := resolvedJob{arg: name, job: name}
	replies, err := actors.RequestStatus(ctx, nc, name)
	also := ""
	if sh := shorthand(name); errors.Is(err, actors.ErrJobNotRunning) && ctx.Err() == nil && sh != "" {
		r.job, also = sh, " nor "+sh
		replies, err = actors.RequestStatus(ctx, nc, sh)
		if errors.Is(context.Cause(ctx), errDenied) {
			// Not running, and the job it may stand for is not this
			// user's to ask for.
			return fmt.Errorf("status: unknown job %q: no node runs it (this user may not ask for %s)", name, sh)
		}
	}
	if cause := context.Cause(ctx); errors.Is(cause, errDenied) {
		return fmt.Errorf("status: %w", cause)
	}
	switch {
	case errors.Is(err, actors.ErrJobNotRunning):
		return fmt.Errorf("status: unknown job %q: no node runs it%s (within --timeout %v)", name, also, nf.timeout)
	case err != nil && !errors.Is(err, actors.ErrStatusIncomplete):
		return fmt.Errorf("status: job %s: %w", r.describe(), err)
	}
	incomplete := err
	var rows []nodeInstance
	for _, rep := range replies {
		for _, is := range rep.Instances {
			rows = append(rows, nodeInstance{rep.Node, is})
		}
	}
	slices.SortFunc(rows, func(a, b nodeInstance) int {
		return cmp.Or(cmp.Compare(a.Vertex, b.Vertex), cmp.Compare(a.Operator, b.Operator), cmp.Compare(a.Instance, b.Instance))
	})
	if format == outputJSON {
		enc := json.NewEncoder(w)
		for _, row := range rows {
			if err := enc.Encode(statusJSON(r.job, row)); err != nil {
				return err
			}
		}
	} else {
		fmt.Fprintf(w, "Job %s\n", r.describe())
		if err := printStatus(w, rows); err != nil {
			return err
		}
	}
	if incomplete != nil {
		want := 0
		if len(replies) > 0 {
			want = int(replies[0].JobInstances)
		}
		return fmt.Errorf("status: job %s: %d of %d instances answered within --timeout %v", r.describe(), len(rows), want, nf.timeout)
	}
	return nil
}

func statusJSON(job string, r nodeInstance) instanceStatusJSON {
	j := instanceStatusJSON{
		Job: job, Operator: r.Operator, Instance: r.Instance, Node: r.node,
		RowsIn: r.RowsIn, RowsOut: r.RowsOut, BatchesIn: r.BatchesIn, BatchesOut: r.BatchesOut,
		Failures: r.Failures, Idle: r.Idle,
	}
	switch wm := messages.Watermark(r.WatermarkUs); wm {
	case messages.MinWatermark:
	case messages.MaxWatermark:
		end := "end"
		j.Watermark = &end
	default:
		s, us := formatWatermark(wm), r.WatermarkUs
		j.Watermark, j.WatermarkUs = &s, &us
	}
	return j
}

// formatWatermark formats a watermark for a table: RFC 3339 to the
// millisecond (UTC), "-" before any, "end" at the end of the input.
func formatWatermark(wm messages.Watermark) string {
	switch wm {
	case messages.MinWatermark:
		return "-"
	case messages.MaxWatermark:
		return "end"
	}
	return time.UnixMicro(int64(wm)).UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

func printStatus(w io.Writer, rows []nodeInstance) error {
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "OPERATOR\tINSTANCE\tNODE\tROWS IN\tROWS OUT\tBATCHES IN\tBATCHES OUT\tFAILURES\tWATERMARK\tIDLE")
	for _, r := range rows {
		idle := "no"
		if r.Idle {
			idle = "yes"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", r.Operator, r.Instance, r.node,
			strconv.FormatInt(r.RowsIn, 10), strconv.FormatInt(r.RowsOut, 10),
			strconv.FormatInt(r.BatchesIn, 10), strconv.FormatInt(r.BatchesOut, 10),
			r.Failures, formatWatermark(messages.Watermark(r.WatermarkUs)), idle)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := w.Write(buf.Bytes())
	return err
}
