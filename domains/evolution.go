package domains

import (
	"errors"
	"fmt"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
)

// ErrIncompatible is wrapped by CheckEvolution's refusals.
var ErrIncompatible = errors.New("domains: incompatible contract change")

// CheckEvolution checks that next may replace running as the contract of
// output port port of domain while consumers (the "<domain>.<port>" input
// ports reading it) keep working: every column they may read stays, with
// the same type, and a column that was never null stays never null. Adding
// a nullable column is accepted, and so is making a column stricter. The
// version must grow when the schema changes. All problems are reported,
// each naming the column and the consumers that would break.
func CheckEvolution(domain, port string, running, next Contract, consumers []string) error {
	var errs []error
	who := "no consumers"
	if len(consumers) > 0 {
		who = "consumers " + strings.Join(consumers, ", ")
	}
	refuse := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s.%s v%d -> v%d: %s (would break %s)",
			ErrIncompatible, domain, port, running.Version, next.Version, fmt.Sprintf(format, args...), who))
	}
	for _, old := range running.Schema.Fields() {
		idx := next.Schema.FieldIndices(old.Name)
		if len(idx) == 0 {
			refuse("column %q removed", old.Name)
			continue
		}
		nf := next.Schema.Field(idx[0])
		if !arrow.TypeEqual(old.Type, nf.Type) {
			refuse("column %q retyped from %s to %s", old.Name, old.Type, nf.Type)
		}
		if !old.Nullable && nf.Nullable {
			refuse("column %q made nullable", old.Name)
		}
	}
	for _, nf := range next.Schema.Fields() {
		if !running.Schema.HasField(nf.Name) && !nf.Nullable {
			// Rows already published lack the column; it can only be
			// added as nullable.
			refuse("column %q added as not nullable", nf.Name)
		}
	}
	if !running.Schema.Equal(next.Schema) && next.Version <= running.Version {
		errs = append(errs, fmt.Errorf("%w: %s.%s: schema changed but version %d is not above the running %d",
			ErrIncompatible, domain, port, next.Version, running.Version))
	}
	return errors.Join(errs...)
}
