package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/meshflow/meshflow"
)

// newDomainsCmd builds `meshflow domains`: the catalog of a running mesh.
func newDomainsCmd(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "domains",
		Short: "Show the domains of a running mesh: owners, ports, contracts and live counts",
		Args:  noArgs,
	}
	var output *outputFormat
	var nf *natsFlags
	list := &cobra.Command{
		Use:   "list",
		Short: "List the domains with their state and row counts",
		Example: `  meshflow domains list
  meshflow domains list -o json -s nats://host:4222`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := fetchCatalog(cmd.Context(), nf)
			if err != nil {
				return err
			}
			if *output == "json" {
				return writeJSON(env.Stdout, st)
			}
			return listDomains(env.Stdout, st)
		},
	}
	describe := &cobra.Command{
		Use:     "describe NAME",
		Short:   "Show one domain: its ports, their contracts and live counts",
		Example: `  meshflow domains describe orders`,
		Args:    exactArgs(1, "one domain NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := fetchCatalog(cmd.Context(), nf)
			if err != nil {
				return err
			}
			for _, d := range st {
				if d.Name == args[0] {
					if *output == "json" {
						return writeJSON(env.Stdout, d)
					}
					return describeDomain(env.Stdout, d)
				}
			}
			names := make([]string, len(st))
			for i, d := range st {
				names[i] = d.Name
			}
			return fmt.Errorf("domains: no domain %q (the mesh has: %s)", args[0], strings.Join(names, ", "))
		},
	}
	output = addOutputFlag(cmd)
	nf = addNATSFlags(cmd, env)
	// The flags belong to the parent so that both subcommands take them.
	cmd.PersistentFlags().AddFlagSet(cmd.Flags())
	cmd.AddCommand(list, describe)
	return cmd
}

func fetchCatalog(ctx context.Context, nf *natsFlags) ([]meshflow.DomainStatus, error) {
	nc, err := connect(ctx, nf)
	if err != nil {
		return nil, fmt.Errorf("domains: %w", err)
	}
	defer nc.Close()
	rctx, cancel := context.WithTimeout(ctx, nf.timeout)
	defer cancel()
	msg, err := nc.RequestWithContext(rctx, meshflow.CatalogSubject, nil)
	if errors.Is(err, nats.ErrNoResponders) {
		return nil, errors.New("domains: no mesh is running on this NATS server (nothing answers on " + meshflow.CatalogSubject + ")")
	}
	if err != nil {
		return nil, fmt.Errorf("domains: %w", err)
	}
	var st []meshflow.DomainStatus
	if err := json.Unmarshal(msg.Data, &st); err != nil {
		return nil, fmt.Errorf("domains: bad catalog answer: %w", err)
	}
	return st, nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func listDomains(w io.Writer, st []meshflow.DomainStatus) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DOMAIN\tOWNER\tSTATE\tINPUTS\tOUTPUTS\tROWS IN\tROWS OUT\tDEAD-LETTERED")
	for _, d := range st {
		var ins, outs []string
		var in, out, dead int64
		for _, p := range d.Ports {
			if p.Kind == "input" {
				ins = append(ins, p.Name)
				in += p.RowsIn
			} else {
				outs = append(outs, p.Name)
				out += p.RowsOut
			}
			dead += p.DeadLettered
		}
		state := string(d.State)
		if d.Error != "" {
			state += ": " + d.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\n", d.Name, d.Owner, state,
			strings.Join(ins, ","), strings.Join(outs, ","), in, out, dead)
	}
	return tw.Flush()
}

func describeDomain(w io.Writer, d meshflow.DomainStatus) error {
	fmt.Fprintf(w, "Domain:  %s\nOwner:   %s\nState:   %s\n", d.Name, d.Owner, d.State)
	if d.Description != "" {
		fmt.Fprintf(w, "About:   %s\n", d.Description)
	}
	if d.Error != "" {
		fmt.Fprintf(w, "Error:   %s\n", d.Error)
	}
	if d.DeadLetters != nil {
		fmt.Fprintf(w, "Dead letters: %s\n", describeStream(*d.DeadLetters))
	}
	for _, p := range d.Ports {
		fmt.Fprintf(w, "\n%s port %s (contract v%d) on %s\n", p.Kind, p.Name, p.Version, p.Subject)
		if p.From != "" {
			fmt.Fprintf(w, "  reads:   %s\n", p.From)
		}
		if p.Description != "" {
			fmt.Fprintf(w, "  about:   %s\n", p.Description)
		}
		if p.Stream != nil {
			fmt.Fprintf(w, "  stream:  %s\n", describeStream(*p.Stream))
		}
		fmt.Fprintf(w, "  rows in %d, out %d, dead-lettered %d%s\n", p.RowsIn, p.RowsOut, p.DeadLettered, byClass(p.DeadLetteredBy))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  COLUMN\tTYPE\tNULLABLE")
		for _, f := range p.Schema {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", f.Name, f.Type, strconv.FormatBool(f.Nullable))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, r := range p.Rules {
			fmt.Fprintf(w, "  rule: %s\n", r)
		}
	}
	return nil
}

// byClass formats dead-letter counts by class: " (contract 3, decode 1)".
func byClass(m map[string]int64) string {
	if len(m) == 0 {
		return ""
	}
	classes := slices.Sorted(maps.Keys(m))
	parts := make([]string, len(classes))
	for i, c := range classes {
		parts[i] = fmt.Sprintf("%s %d", c, m[c])
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// describeStream shows a stream and its retention, e.g. "MESH_ORDERS_PLACED
// (max age 1h0m0s, max bytes 64 MiB, max messages unlimited, discard old)".
func describeStream(st meshflow.StreamStatus) string {
	owner := ""
	if !st.Managed {
		owner = "; made outside Meshflow, which leaves its limits alone"
	}
	return fmt.Sprintf("%s (%s, discard %s%s)", st.Name, st.Retention(), st.Discard, owner)
}
