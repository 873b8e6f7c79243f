// Command benchratio reads the output of `go test -bench` on stdin and
// prints, for every benchmark group with a "reference" sub-benchmark, each
// other sub-benchmark's throughput and its ratio to the reference's: the
// median of the metric over the runs of each (-count), the ratio of the
// medians.
//
//	go test -run '^$' -bench Nexmark -cpu 1 -count 3 ./examples/nexmark/queries/ | go run ./scripts/benchratio
//
// Sub-benchmarks are paired by name: BenchmarkX/q1/engine with
// BenchmarkX/q1/reference. -metric names the metric (default events/s).
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

func main() {
	metric := flag.String("metric", "events/s", "the benchmark metric to compare (higher is better)")
	flag.Parse()
	if err := run(os.Stdin, os.Stdout, *metric); err != nil {
		fmt.Fprintln(os.Stderr, "benchratio:", err)
		os.Exit(1)
	}
}

// result is one sub-benchmark's values of the metric, one per run.
type result struct {
	group, variant string
	vals           []float64
}

func run(in io.Reader, out io.Writer, metric string) error {
	var order []string
	res := map[string]*result{}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		name := trimProcs(f[0])
		i := strings.LastIndexByte(name, '/')
		if i < 0 {
			continue
		}
		for j := 2; j+1 < len(f); j++ {
			if f[j+1] != metric {
				continue
			}
			v, err := strconv.ParseFloat(f[j], 64)
			if err != nil {
				return fmt.Errorf("%s: %s: %w", f[0], metric, err)
			}
			r := res[name]
			if r == nil {
				r = &result{group: name[:i], variant: name[i+1:]}
				res[name] = r
				order = append(order, name)
			}
			r.vals = append(r.vals, v)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "benchmark\tvariant\t%s\treference %s\tratio\truns\t\n", metric, metric)
	rows := 0
	for _, name := range order {
		r := res[name]
		ref := res[r.group+"/reference"]
		if r.variant == "reference" || ref == nil {
			continue
		}
		m, rm := median(r.vals), median(ref.vals)
		fmt.Fprintf(tw, "%s\t%s\t%.3g\t%.3g\t%.2f\t%d\t\n", r.group, r.variant, m, rm, m/rm, len(r.vals))
		rows++
	}
	if rows == 0 {
		return fmt.Errorf("no pair of a sub-benchmark and its reference reporting %s", metric)
	}
	return tw.Flush()
}

// trimProcs removes the -GOMAXPROCS suffix go test adds to names when it
// is not 1.
func trimProcs(name string) string {
	i := strings.LastIndexByte(name, '-')
	if i < 0 || strings.LastIndexByte(name, '/') > i {
		return name
	}
	if _, err := strconv.Atoi(name[i+1:]); err != nil {
		return name
	}
	return name[:i]
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
